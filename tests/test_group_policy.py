"""Role policy: weight decay per role is on, off, or a multiplier of the optimizer's decay."""
from __future__ import annotations

import pytest
from torch import nn

from optbench.errors import ConfigError
from optbench.optim import build_optimizer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 8)       # matrix weight + scalar bias
        self.head = nn.Linear(8, 2)       # head weight + scalar bias


def decay_by_role(opt) -> dict:
    return {g["role"]: g["weight_decay"] for g in opt.param_groups if "role" in g}


def test_multiplier_scales_the_optimizers_decay():
    opt = build_optimizer("adamw", Net(), weight_decay=0.1,
                          groups={"scalar": {"lr_mult": 1.0, "weight_decay": 0.25},
                                  "head": {"lr_mult": 1.0, "weight_decay": False}})
    assert decay_by_role(opt) == pytest.approx({"matrix": 0.1, "head": 0.0, "scalar": 0.025})


def test_muon_fallback_uses_the_same_multiplier():
    opt = build_optimizer("muon", Net(), groups={"scalar": {"lr_mult": 1.0, "weight_decay": 0.5}})
    fallback_decay = 0.01  # conf/optimizer/muon.yaml fallback.weight_decay
    assert decay_by_role(opt)["scalar"] == pytest.approx(0.5 * fallback_decay)


def test_negative_multiplier_is_refused():
    with pytest.raises(ConfigError, match="groups.scalar.weight_decay=-1"):
        build_optimizer("adamw", Net(), groups={"scalar": {"lr_mult": 1.0, "weight_decay": -1}})


def test_absolute_role_lr_and_decay_override_the_multipliers():
    """Recipes such as modded-nanogpt give each role its own lr (embedding 0.7, head 0.004)."""
    import torch
    from optbench.optim import build_optimizer

    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
    opt = build_optimizer("adamw", model, lr=0.01, weight_decay=0.1,
                          groups={"embedding": {"lr": 0.7, "weight_decay_value": 0.001},
                                  "head": {"lr_mult": 2.0}})
    by_role = {g["role"]: g for g in opt.param_groups}
    assert by_role["embedding"]["lr"] == 0.7 and by_role["embedding"]["weight_decay"] == 0.001
    assert by_role["head"]["lr"] == 0.02 and by_role["head"]["weight_decay"] == 0.1
    assert by_role["matrix"]["lr"] == 0.01


def test_absolute_role_lr_in_a_muon_fallback_is_used_as_is():
    import torch
    from optbench.optim import build_optimizer

    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
    opt = build_optimizer("muon", model, lr=0.025, fallback={"name": "adamw", "lr": 0.015, "weight_decay": 0.001},
                          groups={"embedding": {"lr": 0.7}, "head": {"lr": 0.004}, "scalar": {"lr_mult": 1.0}})
    by_role = {g["role"]: g for g in opt.param_groups}
    assert (by_role["embedding"]["lr"], by_role["head"]["lr"], by_role["scalar"]["lr"]) == (0.7, 0.004, 0.015)
    assert by_role["matrix"]["lr"] == 0.025


def test_bad_role_rule_key_is_one_line():
    import pytest
    import torch
    from optbench.errors import ConfigError
    from optbench.optim import build_optimizer

    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\] in optimizer.groups.head"):
        build_optimizer("adamw", torch.nn.Linear(3, 3), groups={"head": {"lrr": 1.0}})
