"""The optimizers that are code: the factories a yaml names with `factory:`.

Every library optimizer is data (conf/optimizer/<name>.yaml with `target:`, `source:`, `state:`,
`description:` and the authors' defaults; docs/design.md's order of preference for a source:
torch.optim, the authors' package, pytorch-optimizer, our own code). What stays here is ours:
Muon's hybrid with its fallback, L-BFGS's single group, Schedule-Free around any base optimizer.
"""

from __future__ import annotations

from optbench.errors import ConfigError
from optbench.optim.muon import Muon
from optbench.optim.registry import CODE_DEFAULTS, ROLE_HOOKS, fast_kernels, hyperparameters, register_factory

__all__ = ["fast_kernels"]


def _lbfgs(cls, groups, hp):
    """L-BFGS keeps one flat history, so it takes exactly one parameter group."""
    mults = {g["lr"] for g in groups}  # lr_mult or an absolute lr: one value for all roles
    if len(mults) > 1:
        raise ConfigError(
            f"optimizer=lbfgs takes one parameter group; optimizer.groups lr_mult (or lr) must "
            f"give one lr for all roles, got {sorted(mults)}"
        )
    params = [p for g in groups for p in g["params"]]
    return cls([{"params": params, "role": "all", "lr": groups[0]["lr"]}], **hp)


register_factory("one_group", _lbfgs)


def _sf_wrap(cls, groups, hp):
    """Schedule-Free around any base optimizer (schedulefree.ScheduleFreeWrapper): `base` names the
    base optimizer, whose own yaml gives its defaults (`base_args` changes them); the groups carry
    this yaml's lr and weight decay (applied by the base at z) under the role policy."""
    from schedulefree import ScheduleFreeWrapper

    from optbench.optim.registry import sf_base_config, spec_of

    hp = dict(hp)
    base_name, base_args = hp.pop("base"), hp.pop("base_args", None)
    base_cfg = sf_base_config(base_name, base_args)
    base_spec = spec_of(base_cfg, key="optimizer.base_args")
    base_hp = {k: v for k, v in hyperparameters(base_cfg).items() if k not in ("lr", "weight_decay")}
    base = base_spec.factory(groups, {**base_hp, "lr": hp.pop("lr"), "weight_decay": hp.pop("weight_decay", 0.0)})
    if cls is ScheduleFreeWrapper:  # z apart from the base's state (see optbench/optim/schedule_free.py)
        from optbench.optim.schedule_free import ScheduleFreeWrapped

        cls = ScheduleFreeWrapped
    return cls(base, **hp)


register_factory("sf_wrap", _sf_wrap)


def _muon_family(cls, groups, hp):
    """pytorch-optimizer's Muon kin (NorMuon, AdaMuon) carry their own AdamW for what is not a
    hidden matrix and tell the two apart by a `use_muon` flag per group: the `matrix` role gets
    the Muon update; the other roles the AdamW one, at `adamw_lr` / `adamw_wd` under the role policy."""
    import inspect

    from optbench.optim.groups import group_lr, group_weight_decay

    own = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
    adamw_lr, adamw_wd = hp.get("adamw_lr", own.get("adamw_lr")), hp.get("adamw_wd", own.get("adamw_wd", 0.0))
    for g in groups:
        g["use_muon"] = g["role"] == "matrix"
        if not g["use_muon"]:
            g["lr"] = group_lr(g, adamw_lr)
            g["weight_decay"] = group_weight_decay(g, adamw_wd)
    return cls(groups, **hp)


register_factory("muon_family", _muon_family)


def _muon(groups, hp):
    """Muon on `matrix` groups; the fallback optimizer, with its own lr and weight decay scaled
    by the same role policy, on the others."""
    from optbench.optim.groups import group_lr, group_weight_decay
    from optbench.optim.registry import fallback_config, spec_of

    hp = dict(hp)
    fb_cfg = fallback_config(hp.pop("fallback", None))
    fb_spec = spec_of(fb_cfg, key="optimizer.fallback")  # a custom fallback brings its own target
    fb_hp = hyperparameters(fb_cfg)
    for g in groups:
        if g["role"] != "matrix":
            g["lr"] = group_lr(g, fb_hp["lr"])
            g["weight_decay"] = group_weight_decay(g, fb_hp.get("weight_decay", 0.0))
    fb_hp = {k: v for k, v in fb_hp.items() if k not in ("lr", "weight_decay")}
    return Muon(groups, **hp, fallback=lambda gs: fb_spec.factory(gs, fb_hp))


def _muon_roles(model, cfg: dict) -> dict:
    """`first_conv: fallback` (default): the first trainable 4-D parameter in model order, the
    input conv, leaves Muon for the fallback with the `embedding` role's rule: it is the input
    layer, like an embedding (Muon's authors: every conv filter except the first). `muon`: every
    trainable filter on Muon (airbench94_muon, whose first conv, the whitening layer, is frozen)."""
    from optbench.optim.groups import param_roles

    roles = param_roles(model)
    if cfg.get("first_conv", "fallback") == "fallback":
        first = next((n for n, p in model.named_parameters() if p.requires_grad and p.ndim == 4), None)
        if first is not None and roles.get(first) == "matrix":
            roles[first] = "embedding"
    return roles


register_factory("muon", lambda cls, groups, hp: _muon(groups, hp))
ROLE_HOOKS["muon"] = _muon_roles
# what muon.yaml does not say itself (a yaml's own keys win)
CODE_DEFAULTS["muon"] = {
    "target": "optbench.optim.muon.Muon",
    "factory": "muon",
    "source": "optbench",
    "state": "1x+fb",
    "description": "Muon (Jordan et al. 2024): Newton-Schulz orthogonalised momentum on matrices; "
    "1x for matrices, the fallback's state for the rest",
}
