"""Parameter groups by role (DESIGN.md): matrix, embedding, head, scalar.

A model may say what each parameter is with `param_roles() -> {name: role}`; otherwise roles
are inferred: nn.Embedding weights are `embedding`, the output layer (a module called
head/lm_head/fc/classifier, else the last nn.Linear) is `head`, other 2D+ weights are `matrix`,
and 0/1-D tensors (biases, norm gains) are `scalar`.
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
        decay_mult = weight_decay_multiplier(rule["weight_decay"], role)
        groups.append({
            "params": [p for _, p in named],
            "param_names": [n for n, _ in named],
            "role": role,
            "lr": lr * float(rule["lr_mult"]),
            "weight_decay": weight_decay * decay_mult,
            # the policy itself, so a hybrid optimizer (Muon) can re-derive lr and decay for
            # the groups it hands to its fallback, which has its own lr and weight decay
            "lr_mult": float(rule["lr_mult"]),
            "decay_mult": decay_mult,
        })
    return groups
