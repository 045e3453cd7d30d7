"""Parameter groups by role (docs/design.md): matrix, embedding, head, scalar.

A model may say what each parameter is with `param_roles() -> {name: role}`; otherwise roles
are inferred: nn.Embedding weights are `embedding`, the output layer (a module called
head/lm_head/fc/classifier, else the last nn.Linear) is `head`, other 2D+ weights are `matrix`,
and 0/1-D tensors (biases, norm gains) are `scalar`.

A role's rule (`optimizer.groups.<role>`): `lr_mult` (x the optimizer's lr) or `lr` (an absolute
lr, for recipes that give each role its own number, e.g. modded-nanogpt's embedding lr 0.7), and
`weight_decay` (true / false / a multiplier of the optimizer's decay) or `weight_decay_value` (an
absolute decay). For a hybrid (Muon) the non-matrix roles' multipliers apply to the fallback's lr
and decay; absolute values are used as they are.

Two more rule keys give a group its own course over the run (airbench's whitening bias):
`lr_schedule` (a scheduler block as in conf/scheduler/, plus `steps`: its length, default the
run's; it replaces the run's schedule for this group) and `freeze_after_steps` (from that step on
the group's gradients are dropped before the optimizer step: no update, no decay, no momentum,
as a tensor with requires_grad off or detached in the forward). The loop applies both
(GroupCourse below).

Sub-roles: a model may name some parameters with `param_subroles() -> {name: subrole}`
(AirbenchNet: `whiten.bias` -> `whiten_bias`). When `optimizer.groups.<subrole>` is given, those
parameters leave their role's group for one of their own whose rule is the role's rule updated
by the sub-role's keys; the group keeps its role (so Muon still hands it to its fallback) and
carries `subrole`. Without such a rule they stay in their role's group.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from optbench.errors import ConfigError, choices

ROLES = ("matrix", "embedding", "head", "scalar")
HEAD_NAMES = ("head", "lm_head", "fc", "classifier")
DEFAULT_POLICY = {
    "matrix": {"lr_mult": 1.0, "weight_decay": True},
    "embedding": {"lr_mult": 1.0, "weight_decay": True},
    "head": {"lr_mult": 1.0, "weight_decay": True},
    "scalar": {"lr_mult": 1.0, "weight_decay": False},
}


def param_roles(model: nn.Module) -> dict[str, str]:
    if hasattr(model, "param_roles"):
        roles = dict(model.param_roles())
    else:
        roles = _inferred_roles(model)
    bad = {r for r in roles.values() if r not in ROLES}
    if bad:
        raise ConfigError(f"unknown parameter role(s) {sorted(bad)}; valid roles: {choices(ROLES)}")
    return roles


def _inferred_roles(model: nn.Module) -> dict[str, str]:
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = next((getattr(model, n) for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)), None)
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    roles = {}
    for name, p in model.named_parameters():
        if id(p) in embedding_ids:
            roles[name] = "embedding"
        elif id(p) in head_ids and p.ndim >= 2:
            roles[name] = "head"
        elif p.ndim >= 2:
            roles[name] = "matrix"
        else:
            roles[name] = "scalar"
    return roles


def weight_decay_multiplier(value, role: str) -> float:
    """A role's `weight_decay`: true (the optimizer's decay), false (none), or a multiplier of it
    (recipes such as airbench decay norm biases at a different strength than weights)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    raise ConfigError(
        f"optimizer.groups.{role}.weight_decay={value!r} is invalid: must be true, false or a multiplier >= 0"
    )


def _absolute(rule: Mapping, key: str, role: str) -> float | None:
    value = rule.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(
            f"optimizer.groups.{role}.{key}={value!r} is invalid: must be a number >= 0 (or null to use the multiplier)"
        )
    return float(value)


RULE_KEYS = ("lr_mult", "lr", "weight_decay", "weight_decay_value", "lr_schedule", "freeze_after_steps")


def check_rule(rule, role: str) -> None:
    """One line for a bad role rule: unknown key, or a bad value."""
    if not isinstance(rule, Mapping):
        raise ConfigError(f"optimizer.groups.{role}={rule!r} is invalid: must be a mapping of {', '.join(RULE_KEYS)}")
    unknown = sorted(set(rule) - set(RULE_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in optimizer.groups.{role}; valid keys: {', '.join(RULE_KEYS)}")
    weight_decay_multiplier(rule.get("weight_decay", True), role)
    _absolute(rule, "lr", role)
    _absolute(rule, "weight_decay_value", role)
    freeze = rule.get("freeze_after_steps")
    if freeze is not None and (isinstance(freeze, bool) or not isinstance(freeze, int) or freeze < 0):
        raise ConfigError(
            f"optimizer.groups.{role}.freeze_after_steps={freeze!r} is invalid: must be a "
            "whole number of steps >= 0 (or null: never frozen)"
        )
    if rule.get("lr_schedule") is not None:
        _schedule_of(rule["lr_schedule"], role, total_steps=None)


def _schedule_of(node, role: str, total_steps: int | None):
    """A rule's `lr_schedule` -> (schedule, its length); checked the way scheduler blocks are."""
    from optbench.confdir import as_dict
    from optbench.schedules import build_schedule_from_config, validate_schedule_config

    if not isinstance(node, Mapping) or "name" not in node:
        raise ConfigError(
            f"optimizer.groups.{role}.lr_schedule={node!r} is invalid: must be a scheduler "
            "block with a name, e.g. {name: poly, power: 1.0, min_ratio: 0.0, steps: 75}"
        )
    cfg = as_dict(node)
    steps = cfg.pop("steps", None)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(
            f"optimizer.groups.{role}.lr_schedule.steps={steps!r} is invalid: must be a whole "
            "number >= 1 (or absent: the run's length)"
        )
    length = steps or total_steps or 1000  # 1000: a stand-in length for checking keys before the run
    try:
        validate_schedule_config(cfg, length, metric=None if cfg["name"] != "plateau" else "")
    except ConfigError as e:
        raise ConfigError(f"optimizer.groups.{role}.lr_schedule: {e}") from None
    if cfg["name"] == "plateau":
        raise ConfigError(
            f"optimizer.groups.{role}.lr_schedule.name='plateau' is invalid: a group schedule "
            "must be a function of the step"
        )
    return build_schedule_from_config(cfg, length), length


def group_lr(group: dict, base_lr: float) -> float:
    """A group's lr from a base lr (the optimizer's, or a hybrid's fallback's): absolute or multiplied."""
    return group["lr_abs"] if group.get("lr_abs") is not None else base_lr * group["lr_mult"]


def group_weight_decay(group: dict, base_decay: float) -> float:
    return group["decay_abs"] if group.get("decay_abs") is not None else base_decay * group["decay_mult"]


def param_subroles(model: nn.Module) -> dict[str, str]:
    return dict(model.param_subroles()) if hasattr(model, "param_subroles") else {}


def build_param_groups(
    model: nn.Module, lr: float, weight_decay: float, policy: Mapping | None = None, roles: dict[str, str] | None = None
) -> list[dict]:
    """One group per role that has parameters (and one per addressed sub-role); each carries its
    role, lr and weight decay."""
    given = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (policy or {}).items()}
    subroles = param_subroles(model)
    unknown = set(given) - set(ROLES) - set(subroles.values())
    if unknown:
        valid = list(ROLES) + sorted(set(subroles.values()))
        raise ConfigError(f"unknown role(s) {sorted(unknown)} in optimizer.groups; valid roles: {choices(valid)}")
    policy = {r: {**DEFAULT_POLICY[r], **given.get(r, {})} for r in ROLES}
    roles = roles or param_roles(model)
    groups = []
    for role in ROLES:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and roles.get(n) == role]
        own = sorted({subroles[n] for n, _ in named if subroles.get(n) in given})
        parts = [(None, policy[role], [(n, p) for n, p in named if subroles.get(n) not in own])]
        for sub in own:
            check_rule(given[sub], sub)
            parts.append((sub, {**policy[role], **given[sub]}, [(n, p) for n, p in named if subroles.get(n) == sub]))
        for sub, rule, members in parts:
            if not members:
                continue
            check_rule(rule, sub or role)
            group = {
                "params": [p for _, p in members],
                "param_names": [n for n, _ in members],
                "role": role,
                # the policy itself, so a hybrid optimizer (Muon) can re-derive lr and decay for
                # the groups it hands to its fallback, which has its own lr and weight decay
                "lr_mult": float(rule["lr_mult"]),
                "decay_mult": weight_decay_multiplier(rule["weight_decay"], sub or role),
                "lr_abs": _absolute(rule, "lr", sub or role),
                "decay_abs": _absolute(rule, "weight_decay_value", sub or role),
            }
            if sub:
                group["subrole"] = sub
            for key in ("lr_schedule", "freeze_after_steps"):
                if rule.get(key) is not None:
                    group[key] = rule[key]
            group["lr"] = group_lr(group, lr)
            group["weight_decay"] = group_weight_decay(group, weight_decay)
            groups.append(group)
    return groups


def group_name(group: dict, index: int) -> str:
    """How logs and summaries name a group: its sub-role, else its role."""
    return group.get("subrole") or group.get("role", str(index))


class GroupCourse:
    """The per-group `lr_schedule` and `freeze_after_steps` of an optimizer's groups, applied by
    the loop: `multiplier(index, step, run_multiplier)` for each group before the step,
    `drop_frozen_grads(step)` between backward and the optimizer step. Groups are found by index
    (a resumed optimizer's load_state_dict replaces the group dicts). `of` gives None when no
    group has either key (the usual case)."""

    def __init__(self, optimizer, total_steps: int):
        self.optimizer = optimizer
        self.schedules = {}
        self.frozen = []
        for i, g in enumerate(optimizer.param_groups):
            if g.get("lr_schedule") is not None:
                self.schedules[i] = _schedule_of(g["lr_schedule"], group_name(g, i), total_steps)[0]
            if g.get("freeze_after_steps") is not None:
                self.frozen.append((i, int(g["freeze_after_steps"])))

    @classmethod
    def of(cls, optimizer, total_steps: int) -> GroupCourse | None:
        course = cls(optimizer, total_steps)
        return course if course.schedules or course.frozen else None

    def multiplier(self, index: int, step: int, run_multiplier: float) -> float:
        own = self.schedules.get(index)
        return run_multiplier if own is None else own(step)

    def drop_frozen_grads(self, step: int) -> None:
        for i, after in self.frozen:
            if step >= after:
                for p in self.optimizer.param_groups[i]["params"]:
                    p.grad = None
