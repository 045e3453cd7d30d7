"""Where each optimizer comes from, and how a yaml becomes a ready optimizer.

An entry is a name, its source (torch.optim / schedulefree / pytorch-optimizer / optbench),
a factory taking role-tagged param groups plus the yaml's hyperparameters, and what its state
costs per parameter. Adding an optimizer = one entry here + one yaml; the loop never changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from optbench.confdir import group_options, load_option
from optbench.errors import ConfigError, choices
from optbench.optim.groups import build_param_groups

# yaml keys that configure optbench, not the optimizer's constructor
META_KEYS = {"name", "groups", "lr_grid", "lr_scaling", "reference_batch_size", "search_space",
             "momentum_schedule"}


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    source: str
    factory: Callable[[list[dict], dict], torch.optim.Optimizer]
    state: str                      # optimizer-state memory per parameter, e.g. "2x"
    description: str = ""
    needs_closure: bool = False     # step(closure) re-evaluates the loss (L-BFGS)
    extra: dict = field(default_factory=dict)


OPTIMIZERS: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    OPTIMIZERS[spec.name] = spec
    return spec


def _torch(cls, **fixed):
    def factory(groups, hp):
        return cls(groups, **{**hp, **fixed})
    return factory


register(OptimizerSpec("sgd", "torch.optim", _torch(torch.optim.SGD), "0x",
                       "stochastic gradient descent, no momentum"))
register(OptimizerSpec("nesterov", "torch.optim", _torch(torch.optim.SGD, nesterov=True), "1x",
                       "SGD with Nesterov momentum"))
register(OptimizerSpec("adamw", "torch.optim", _torch(torch.optim.AdamW), "2x",
                       "Adam with decoupled weight decay (Loshchilov & Hutter)"))


def optimizer_defaults(name: str) -> dict:
    if name not in group_options("optimizer"):
        raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(group_options('optimizer'))}")
    return load_option("optimizer", name)


def _as_dict(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def hyperparameters(cfg: dict) -> dict:
    hp = {k: v for k, v in cfg.items() if k not in META_KEYS}
    if isinstance(hp.get("betas"), list):
        hp["betas"] = tuple(hp["betas"])
    return hp


def build_optimizer_from_config(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The trainer's path: an `optimizer:` config node -> a ready optimizer."""
    cfg = _as_dict(cfg)
    name = cfg["name"]
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(OPTIMIZERS)}")
    spec = OPTIMIZERS[name]
    hp = hyperparameters(cfg)
    groups = build_param_groups(model, lr=hp["lr"], weight_decay=hp.get("weight_decay", 0.0),
                                policy=cfg.get("groups"))
    opt = spec.factory(groups, hp)
    opt.optbench_spec = spec
    return opt


def build_optimizer(name: str, model: torch.nn.Module, **overrides) -> torch.optim.Optimizer:
    """The Python entry point: the yaml's defaults, changed by `overrides`, same as the CLI."""
    cfg = optimizer_defaults(name)
    unknown = set(overrides) - set(cfg)
    if unknown:
        valid = sorted(set(cfg) - {"name"})
        raise ConfigError(f"unknown hyperparameter(s) {sorted(unknown)} for optimizer '{name}'; "
                          f"valid: {', '.join(valid)}")
    cfg.update(overrides)
    validate_optimizer_config(cfg)
    return build_optimizer_from_config(cfg, model)


def validate_optimizer_config(cfg) -> None:
    cfg = _as_dict(cfg)
    name = cfg.get("name")
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(OPTIMIZERS)}")
    lr = cfg.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ConfigError(f"optimizer.lr={lr!r} is invalid: must be a number > 0")
    wd = cfg.get("weight_decay", 0.0)
    if not isinstance(wd, (int, float)) or wd < 0:
        raise ConfigError(f"optimizer.weight_decay={wd!r} is invalid: must be a number >= 0")
    for key in ("betas", "betas3"):
        for i, beta in enumerate(cfg.get(key) or []):
            if not isinstance(beta, (int, float)) or not 0 <= beta < 1:
                raise ConfigError(f"optimizer.{key}[{i}]={beta!r} is invalid: must be in [0, 1)")
    momentum = cfg.get("momentum")
    if momentum is not None and (not isinstance(momentum, (int, float)) or not 0 <= momentum < 1):
        raise ConfigError(f"optimizer.momentum={momentum!r} is invalid: must be in [0, 1)")
