"""Parameter groups by role (DESIGN.md): matrix, embedding, head, scalar.

A model may say what each parameter is with `param_roles() -> {name: role}`; otherwise roles
are inferred: nn.Embedding weights are `embedding`, the output layer (a module called
head/lm_head/fc/classifier, else the last nn.Linear) is `head`, other 2D+ weights are `matrix`,
and 0/1-D tensors (biases, norm gains) are `scalar`.

A role's rule (`optimizer.groups.<role>`): `lr_mult` (x the optimizer's lr) or `lr` (an absolute
lr, for recipes that give each role its own number, e.g. modded-nanogpt's embedding lr 0.7), and
`weight_decay` (true / false / a multiplier of the optimizer's decay) or `weight_decay_value` (an
absolute decay). For a hybrid (Muon) the non-matrix roles' multipliers apply to the fallback's lr
and decay; absolute values are used as they are.
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
    raise ConfigError(f"optimizer.groups.{role}.weight_decay={value!r} is invalid: "
                      "must be true, false or a multiplier >= 0")


def _absolute(rule: Mapping, key: str, role: str) -> float | None:
    value = rule.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"optimizer.groups.{role}.{key}={value!r} is invalid: must be a number >= 0 "
                          "(or null to use the multiplier)")
    return float(value)


RULE_KEYS = ("lr_mult", "lr", "weight_decay", "weight_decay_value")


def check_rule(rule, role: str) -> None:
    """One line for a bad role rule: unknown key, or a bad value."""
    if not isinstance(rule, Mapping):
        raise ConfigError(f"optimizer.groups.{role}={rule!r} is invalid: must be a mapping of "
                          f"{', '.join(RULE_KEYS)}")
    unknown = sorted(set(rule) - set(RULE_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in optimizer.groups.{role}; valid keys: {', '.join(RULE_KEYS)}")
    weight_decay_multiplier(rule.get("weight_decay", True), role)
    _absolute(rule, "lr", role)
    _absolute(rule, "weight_decay_value", role)


def group_lr(group: dict, base_lr: float) -> float:
    """A group's lr from a base lr (the optimizer's, or a hybrid's fallback's): absolute or multiplied."""
    return group["lr_abs"] if group.get("lr_abs") is not None else base_lr * group["lr_mult"]


def group_weight_decay(group: dict, base_decay: float) -> float:
    return group["decay_abs"] if group.get("decay_abs") is not None else base_decay * group["decay_mult"]


def build_param_groups(model: nn.Module, lr: float, weight_decay: float,
                       policy: Mapping | None = None, roles: dict[str, str] | None = None) -> list[dict]:
    """One group per role that has parameters; each carries its role, lr and weight decay."""
    policy = {**DEFAULT_POLICY, **{k: {**DEFAULT_POLICY.get(k, {}), **v} for k, v in (policy or {}).items()}}
    unknown = set(policy) - set(ROLES)
    if unknown:
        raise ConfigError(f"unknown role(s) {sorted(unknown)} in optimizer.groups; valid roles: {choices(ROLES)}")
    roles = roles or param_roles(model)
    groups = []
    for role in ROLES:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and roles.get(n) == role]
        if not named:
            continue
        rule = policy[role]
        check_rule(rule, role)
        group = {
            "params": [p for _, p in named],
            "param_names": [n for n, _ in named],
            "role": role,
            # the policy itself, so a hybrid optimizer (Muon) can re-derive lr and decay for
            # the groups it hands to its fallback, which has its own lr and weight decay
            "lr_mult": float(rule["lr_mult"]),
            "decay_mult": weight_decay_multiplier(rule["weight_decay"], role),
            "lr_abs": _absolute(rule, "lr", role),
            "decay_abs": _absolute(rule, "weight_decay_value", role),
        }
        group["lr"] = group_lr(group, lr)
        group["weight_decay"] = group_weight_decay(group, weight_decay)
        groups.append(group)
    return groups
