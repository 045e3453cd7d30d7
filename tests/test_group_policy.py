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
