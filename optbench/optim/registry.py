"""Where each optimizer comes from, and how a yaml becomes a ready optimizer.

An entry is a name, its source (torch.optim / schedulefree / pytorch-optimizer / optbench),
a factory taking role-tagged param groups plus the yaml's hyperparameters, and what its state
costs per parameter. Adding an optimizer = one entry here + one yaml; the loop never changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from optbench.confdir import as_dict, group_options, load_option
from optbench.errors import ConfigError, choices
from optbench.optim.groups import build_param_groups, check_rule

# yaml keys that configure optbench, not the optimizer's constructor
META_KEYS = {"name", "groups", "lr_grid", "lr_scaling", "reference_batch_size", "search_space",
             "momentum_schedule", "first_conv"}
# of those, the ones only one optimizer reads (Muon's first_conv: which optimizer the input conv gets)
OWN_META_KEYS = {"first_conv": "muon"}


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    source: str
    factory: Callable[[list[dict], dict], torch.optim.Optimizer]
    state: str                      # optimizer-state memory per parameter, e.g. "2x"
    description: str = ""
    needs_closure: bool = False     # step(closure) re-evaluates the loss (L-BFGS)
    cls: type | str | None = None   # the class the factory builds, or "module:Class" imported on use
    fixed: dict = field(default_factory=dict)  # constructor arguments the entry pins (nesterov=True)
    extra: dict = field(default_factory=dict)

    @property
    def constructor(self) -> type:
        return resolve_class(self.cls)

    @property
    def accepts(self) -> frozenset:
        """The constructor's named hyperparameters, less those the entry pins."""
        return constructor_args(self.constructor) - set(self.fixed) if self.cls else frozenset()


def resolve_class(cls: type | str) -> type:
    """Libraries are imported when an optimizer is used, so `optbench list` and --help stay quick."""
    if isinstance(cls, str):
        import importlib

        module, _, name = cls.partition(":")
        return getattr(importlib.import_module(module), name)
    return cls


def constructor_args(cls) -> frozenset:
    """The named hyperparameters a constructor takes (not **kwargs, which some libraries swallow)."""
    import inspect

    sig = inspect.signature(cls.__init__)
    return frozenset(n for n, p in sig.parameters.items()
                     if n not in ("self", "params") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))


OPTIMIZERS: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    OPTIMIZERS[spec.name] = spec
    return spec


def optimizer_defaults(name: str) -> dict:
    if name not in group_options("optimizer"):
        raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(group_options('optimizer'))}")
    return load_option("optimizer", name)


def hyperparameters(cfg: dict) -> dict:
    # yaml lists are tuples to constructors (betas, Adafactor's eps pair, NS coefficients)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k not in META_KEYS}


def fallback_config(fallback) -> dict:
    """A hybrid optimizer's `fallback:` block, completed by the fallback optimizer's own yaml."""
    fallback = as_dict(fallback or {"name": "adamw"})
    name = fallback.get("name")
    if name in NOT_A_FALLBACK or name not in OPTIMIZERS:
        valid = sorted(set(OPTIMIZERS) - NOT_A_FALLBACK)
        raise ConfigError(f"optimizer.fallback.name={name!r} is invalid; valid choices: {', '.join(valid)}")
    # `optimizer.fallback.name=lion` keeps the rest of the yaml's block: drop the values the user
    # did not change that the new fallback does not take (AdamW's eps for Lion, its two betas for Adan)
    yaml_block = as_dict(load_option("optimizer", "muon").get("fallback") or {})
    accepts = OPTIMIZERS[name].accepts
    own = optimizer_defaults(name)

    def fits(k, v) -> bool:  # AdamW's two betas do not fit Adan's three
        return k in accepts and not (isinstance(v, (list, tuple)) and isinstance(own.get(k), (list, tuple))
                                     and len(v) != len(own[k]))

    fallback = {k: v for k, v in fallback.items()
                if k == "name" or fits(k, v) or not (k in yaml_block and yaml_block[k] == v)}
    cfg = {k: v for k, v in own.items() if k not in META_KEYS}
    cfg.update(fallback)
    return cfg


# a fallback lives inside the hybrid optimizer: no closure, no train/eval switching, no nesting
NOT_A_FALLBACK = {"muon", "lbfgs", "sf_adamw", "sf_sgd"}


def build_optimizer_from_config(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The trainer's path: an `optimizer:` config node -> a ready optimizer."""
    cfg = as_dict(cfg)
    name = cfg["name"]
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(OPTIMIZERS)}")
    spec = OPTIMIZERS[name]
    hp = hyperparameters(cfg)
    # an entry may re-assign roles from the model and its config (Muon: the input conv, first_conv)
    roles = spec.extra["roles"](model, cfg) if "roles" in spec.extra else None
    groups = build_param_groups(model, lr=hp["lr"], weight_decay=hp.get("weight_decay", 0.0),
                                policy=cfg.get("groups"), roles=roles)
    opt = spec.factory(groups, hp)
    opt.optbench_spec = spec
    return opt


def build_optimizer(name: str, model: torch.nn.Module, **overrides) -> torch.optim.Optimizer:
    """The Python entry point: the yaml's defaults, changed by `overrides`, same as the CLI."""
    cfg = optimizer_defaults(name)
    unknown = set(overrides) - set(cfg) - set(OPTIMIZERS[name].accepts)
    if unknown:
        valid = sorted((set(cfg) | set(OPTIMIZERS[name].accepts)) - {"name"})
        raise ConfigError(f"unknown hyperparameter(s) {sorted(unknown)} for optimizer '{name}'; "
                          f"valid: {', '.join(valid)}")
    cfg.update(overrides)
    validate_optimizer_config(cfg)
    return build_optimizer_from_config(cfg, model)


def validate_optimizer_config(cfg, key: str = "optimizer") -> None:
    """Refuse, in one line, what would fail or silently misbehave once training has started."""
    cfg = as_dict(cfg)
    name = cfg.get("name")
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(OPTIMIZERS)}")
    spec = OPTIMIZERS[name]
    unknown = sorted(set(hyperparameters(cfg)) - {"name"} - set(spec.accepts))
    unknown += sorted(k for k, owner in OWN_META_KEYS.items() if k in cfg and owner != name)
    if unknown:
        raise ConfigError(f"unknown hyperparameter(s) {unknown} for optimizer '{name}'; "
                          f"valid: {', '.join(sorted(spec.accepts))}")
    for role, rule in (cfg.get("groups") or {}).items():
        check_rule(rule, role)
        mult = rule.get("lr_mult", 1.0) if isinstance(rule, dict) else 1.0
        if not _number(mult) or mult < 0:
            raise ConfigError(f"{key}.groups.{role}.lr_mult={mult!r} is invalid: must be a number >= 0")
    lr = cfg.get("lr")
    if not _number(lr) or not lr > 0:
        raise ConfigError(f"{key}.lr={lr!r} is invalid: must be a number > 0")
    for k in ("weight_decay", "eps"):
        v = cfg.get(k)
        if v is not None and not isinstance(v, (list, tuple)) and (not _number(v) or v < 0):
            raise ConfigError(f"{key}.{k}={v!r} is invalid: must be a number >= 0")
    for k in ("betas", "betas3"):
        betas = cfg.get(k)
        if betas is None:
            continue
        # as many betas as the optimizer's own yaml has (Adan and AdEMAMix take three)
        default = optimizer_defaults(name).get(k) if name in group_options("optimizer") else None
        n = len(default) if isinstance(default, (list, tuple)) else None
        if not isinstance(betas, (list, tuple)) or (n and len(betas) != n):
            example = "[" + ",".join(str(b) for b in default) + "]" if n else "[0.9,0.999]"
            raise ConfigError(f"{key}.{k}={betas!r} is invalid: must be a list of "
                              f"{n or 'several'} numbers in [0, 1), e.g. {key}.{k}={example}")
        for i, beta in enumerate(betas):
            if not _number(beta) or not 0 <= beta < 1:
                raise ConfigError(f"{key}.{k}[{i}]={beta!r} is invalid: must be in [0, 1)")
    for k in ("momentum", "alpha" if name == "rmsprop" else None):
        v = cfg.get(k) if k else None
        if v is not None and (not _number(v) or not 0 <= v < 1):
            raise ConfigError(f"{key}.{k}={v!r} is invalid: must be in [0, 1)")
    if name == "muon":
        _validate_muon(cfg, key)
        validate_optimizer_config(fallback_config(cfg.get("fallback")), key=f"{key}.fallback")


def _validate_muon(cfg: dict, key: str) -> None:
    """Muon's own options (C2 in the design notes), each with its valid choices."""
    from optbench.optim import muon

    steps = cfg.get("ns_steps", 5)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        # ns_steps=0 would skip the orthogonalisation: Muon would silently be SGD-Nesterov
        raise ConfigError(f"{key}.ns_steps={steps!r} is invalid: must be a whole number >= 1")
    coeffs = cfg.get("ns_coefficients", muon.NS_COEFFICIENTS)
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) != 3 or not all(_number(c) for c in coeffs):
        raise ConfigError(f"{key}.ns_coefficients={coeffs!r} is invalid: must be three numbers [a, b, c], "
                          f"e.g. {key}.ns_coefficients=[3.4445,-4.7750,2.0315]")
    for k, valid in (("momentum_form", muon.MOMENTUM_FORMS), ("ns_norm", muon.NS_NORMS),
                     ("ns_dtype", tuple(muon.NS_DTYPES)), ("scale_rule", muon.SCALE_RULES),
                     ("first_conv", muon.FIRST_CONV)):
        if k in cfg:
            muon.check_choice(k, cfg[k], valid, prefix=key)
    renorm = cfg.get("weight_renorm", False)
    if not isinstance(renorm, bool):
        raise ConfigError(f"{key}.weight_renorm={renorm!r} is invalid; valid choices: true, false")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
