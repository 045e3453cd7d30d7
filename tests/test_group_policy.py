"""Role policy: weight decay per role is on, off, or a multiplier of the optimizer's decay."""

from __future__ import annotations

import pytest
from torch import nn

from optbench.errors import ConfigError
from optbench.optim import build_optimizer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 8)  # matrix weight + scalar bias
        self.head = nn.Linear(8, 2)  # head weight + scalar bias


def decay_by_role(opt) -> dict:
    return {g["role"]: g["weight_decay"] for g in opt.param_groups if "role" in g}


def test_multiplier_scales_the_optimizers_decay():
    opt = build_optimizer(
        "adamw",
        Net(),
        weight_decay=0.1,
        groups={"scalar": {"lr_mult": 1.0, "weight_decay": 0.25}, "head": {"lr_mult": 1.0, "weight_decay": False}},
    )
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
    opt = build_optimizer(
        "adamw",
        model,
        lr=0.01,
        weight_decay=0.1,
        groups={"embedding": {"lr": 0.7, "weight_decay_value": 0.001}, "head": {"lr_mult": 2.0}},
    )
    by_role = {g["role"]: g for g in opt.param_groups}
    assert by_role["embedding"]["lr"] == 0.7 and by_role["embedding"]["weight_decay"] == 0.001
    assert by_role["head"]["lr"] == 0.02 and by_role["head"]["weight_decay"] == 0.1
    assert by_role["matrix"]["lr"] == 0.01


def test_absolute_role_lr_in_a_muon_fallback_is_used_as_is():
    import torch

    from optbench.optim import build_optimizer

    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
    opt = build_optimizer(
        "muon",
        model,
        lr=0.025,
        fallback={"name": "adamw", "lr": 0.015, "weight_decay": 0.001},
        groups={"embedding": {"lr": 0.7}, "head": {"lr": 0.004}, "scalar": {"lr_mult": 1.0}},
    )
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


# --------------------------------------------------------------------------- sub-roles, group courses
def _airbench():
    from optbench.models.cnn import AirbenchNet

    return AirbenchNet(widths=(8, 8, 8))


WHITEN_RULE = {
    "lr": 0.5,
    "weight_decay_value": 0.25,
    "freeze_after_steps": 3,
    "lr_schedule": {"name": "poly", "power": 1.0, "min_ratio": 0.0, "steps": 4},
}


def test_a_subrole_rule_gives_the_whitening_bias_its_own_group():
    opt = build_optimizer("nesterov", _airbench(), lr=0.1, weight_decay=0.01, groups={"whiten_bias": WHITEN_RULE})
    (own,) = [g for g in opt.param_groups if g.get("subrole") == "whiten_bias"]
    assert own["param_names"] == ["whiten.bias"] and own["role"] == "scalar"
    assert (own["lr"], own["weight_decay"], own["freeze_after_steps"]) == (0.5, 0.25, 3)
    scalar = next(g for g in opt.param_groups if g["role"] == "scalar" and "subrole" not in g)
    assert "whiten.bias" not in scalar["param_names"] and scalar["lr"] == 0.1
    # without a rule of its own the bias stays with the other scalars
    plain = build_optimizer("nesterov", _airbench())
    assert not any("subrole" in g for g in plain.param_groups)
    assert any("whiten.bias" in g["param_names"] for g in plain.param_groups if g["role"] == "scalar")


def test_a_subrole_inherits_its_roles_rule_and_goes_to_the_muon_fallback():
    opt = build_optimizer(
        "muon",
        _airbench(),
        fallback={"name": "nesterov", "lr": 0.05, "momentum": 0.85},
        groups={"scalar": {"lr_mult": 2.0, "weight_decay": False}, "whiten_bias": {"freeze_after_steps": 7}},
    )
    own = next(g for g in opt.param_groups if g.get("subrole") == "whiten_bias")
    assert own["lr"] == pytest.approx(0.1) and not own["use_muon"]  # the scalar rule, on the fallback's lr
    assert any(own is g for g in opt.fallback.param_groups)


def test_unknown_subrole_and_bad_course_keys_are_one_line():
    with pytest.raises(ConfigError, match=r"unknown role\(s\) \['whiten_bais'\].*whiten_bias"):
        build_optimizer("nesterov", _airbench(), groups={"whiten_bais": {"lr": 1.0}})
    with pytest.raises(ConfigError, match=r"groups.whiten_bias.freeze_after_steps=-1 is invalid"):
        build_optimizer("nesterov", _airbench(), groups={"whiten_bias": {"freeze_after_steps": -1}})
    with pytest.raises(ConfigError, match=r"groups.whiten_bias.lr_schedule: unknown scheduler 'lin'"):
        build_optimizer("nesterov", _airbench(), groups={"whiten_bias": {"lr_schedule": {"name": "lin"}}})
    with pytest.raises(ConfigError, match=r"lr_schedule.steps=0 is invalid"):
        build_optimizer("nesterov", _airbench(), groups={"whiten_bias": {"lr_schedule": {"name": "poly", "steps": 0}}})


def test_group_course_follows_its_own_schedule_and_drops_frozen_gradients():
    import torch

    from optbench.optim.groups import GroupCourse

    model = _airbench()
    opt = build_optimizer("nesterov", model, lr=0.1, groups={"whiten_bias": WHITEN_RULE})
    course = GroupCourse.of(opt, total_steps=10)
    own = next(i for i, g in enumerate(opt.param_groups) if g.get("subrole") == "whiten_bias")
    other = next(i for i, g in enumerate(opt.param_groups) if i != own)
    for t in range(8):  # its own poly over 4 steps: 1 - t/4, then 0; the others: the run's multiplier
        assert course.multiplier(own, t, 0.9) == pytest.approx(max(0.0, 1 - t / 4))
        assert course.multiplier(other, t, 0.9) == 0.9
    for step, kept in ((2, True), (3, False)):
        for p in model.parameters():
            p.grad = torch.ones_like(p) if p.requires_grad else None
        course.drop_frozen_grads(step)
        assert (model.whiten.bias.grad is not None) == kept
        assert model.head.weight.grad is not None
    assert GroupCourse.of(build_optimizer("nesterov", model), 10) is None
