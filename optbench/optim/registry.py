"""Where each optimizer comes from, and how a yaml becomes a ready optimizer.

An optimizer is data: conf/optimizer/<name>.yaml (or the same file in a user's config folder)
names its class by import path (`target: torch.optim.AdamW`), states where it comes from
(`source:`), what its state costs per parameter (`state:`) and a one-line `description:`, and
holds the authors' defaults. The class receives the role-tagged parameter groups and the yaml's
other keys as constructor arguments. Code is only what is ours: a `factory:` a yaml names
(catalog.py: Muon's hybrid, L-BFGS's single group, Schedule-Free around any base optimizer).
`optimizer=custom optimizer.target=my_pkg.MyOptimizer` takes any class without a yaml of its own.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch

from optbench.confdir import as_dict, group_options, load_option, option_path
from optbench.errors import ConfigError, choices
from optbench.optim.groups import build_param_groups, check_rule

# yaml keys that configure optbench, not the optimizer's constructor
META_KEYS = {
    "name",
    "groups",
    "lr_grid",
    "lr_scaling",
    "reference_batch_size",
    "search_space",
    "momentum_schedule",
    "target",
    "factory",
    "source",
    "state",
    "description",
    "needs_closure",
    "first_conv",
}
# of those, the ones only one optimizer reads (Muon's first_conv: which optimizer the input conv gets)
OWN_META_KEYS = {"first_conv": "muon"}

# factory name -> build(cls, groups, hp); "class" calls the target class with the groups and hp
FACTORIES: dict[str, Callable] = {}
# what the code says about an optimizer of ours whose yaml does not (yet) say it itself
CODE_DEFAULTS: dict[str, dict] = {}


# factory name -> roles(model, cfg): an entry that re-assigns roles (Muon's first_conv)
ROLE_HOOKS: dict[str, Callable] = {}


def register_factory(name: str, build: Callable) -> Callable:
    FACTORIES[name] = build
    return build


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    source: str
    state: str  # optimizer-state memory per parameter, e.g. "2x"
    description: str = ""
    needs_closure: bool = False  # step(closure) re-evaluates the loss (L-BFGS)
    target: type | str | None = None  # the class, or its import path ("torch.optim.AdamW")
    factory_name: str = "class"
    yaml_keys: frozenset = frozenset()  # the keys its yaml sets (a **kwargs constructor accepts these)
    key: str = "optimizer"  # where it sits in the config, for messages

    @property
    def constructor(self) -> type:
        return resolve_class(self.target, f"{self.key}.target")

    @property
    def factory(self) -> Callable[[list[dict], dict], torch.optim.Optimizer]:
        if self.factory_name not in FACTORIES:
            raise ConfigError(
                f"{self.key}.factory={self.factory_name!r} is invalid; valid choices: {choices(FACTORIES)}"
            )
        return functools.partial(FACTORIES[self.factory_name], self.constructor)

    @property
    def accepts(self) -> frozenset:
        """The constructor's named hyperparameters; with **kwargs (or a factory of ours that takes
        keys of its own, e.g. sf_wrap's `base`) also the keys its yaml sets."""
        if self.target is None:
            return frozenset()
        named, var_kw = constructor_args(self.constructor)
        if var_kw or self.factory_name != "class":
            named |= self.yaml_keys - META_KEYS
        return frozenset(named)


def resolve_class(target, key: str = "optimizer.target"):
    """A class from its import path (`pkg.module.Class`, or `pkg.module:Class`), imported on use so
    `optbench list` and --help stay quick; a failure is one line naming the module."""
    if not isinstance(target, str):
        return target
    import importlib

    module, name = target.partition(":")[::2] if ":" in target else target.rpartition(".")[::2]
    if not module or not name:
        raise ConfigError(
            f"{key}={target!r} is invalid: give the class by import path, e.g. {key}=my_pkg.my_module.MyOptimizer"
        )
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"{key}={target!r}: cannot import module '{module}' ({e}); is it on PYTHONPATH?") from None
    if not hasattr(mod, name):
        raise ConfigError(f"{key}={target!r}: module '{module}' has no attribute '{name}'")
    return getattr(mod, name)


def constructor_args(cls) -> tuple[frozenset, bool]:
    """The named hyperparameters a constructor takes, and whether it also takes **kwargs (which
    some libraries use for options of their own: pytorch-optimizer's `cautious`)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # less self
    # less the first argument: the parameters (or, for a wrapper such as Schedule-Free's, the base optimizer)
    named = frozenset(p.name for p in params[1:] if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


def spec_from_yaml(name: str) -> OptimizerSpec:
    cfg = {**CODE_DEFAULTS.get(name, {}), **load_option("optimizer", name)}
    return OptimizerSpec(
        name=name,
        source=str(cfg.get("source", "?")),
        state=str(cfg.get("state", "?")),
        description=str(cfg.get("description", "")),
        needs_closure=bool(cfg.get("needs_closure", False)),
        target=cfg.get("target"),
        factory_name=str(cfg.get("factory") or "class"),
        yaml_keys=frozenset(cfg),
    )


class _Optimizers(Mapping):
    """Every optimizer name in conf/optimizer/ and the user's config folders, read on use: the
    names are the yaml files, so a new yaml is a new optimizer with no line of code."""

    def __iter__(self):
        return iter(group_options("optimizer"))

    def __len__(self):
        return len(group_options("optimizer"))

    def __contains__(self, name):
        return isinstance(name, str) and name in group_options("optimizer")

    def __getitem__(self, name: str) -> OptimizerSpec:
        if name not in self:
            raise KeyError(name)
        path = option_path("optimizer", name)
        return _cached_spec(name, str(path), path.stat().st_mtime_ns)


@functools.cache
def _cached_spec(name: str, path: str, mtime: int) -> OptimizerSpec:
    return spec_from_yaml(name)


OPTIMIZERS: Mapping[str, OptimizerSpec] = _Optimizers()


def spec_of(cfg, key: str = "optimizer") -> OptimizerSpec:
    """The spec an `optimizer:` node describes: its yaml's, with the node's own `target` and
    `factory` (`optimizer=custom optimizer.target=...`, or a built-in's class swapped)."""
    cfg = as_dict(cfg)
    name = cfg.get("name")
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(OPTIMIZERS)}")
    spec = OPTIMIZERS[name]
    changes = {"key": key}
    if "target" in cfg and cfg["target"] != spec.target:
        changes["target"] = cfg["target"]
    if cfg.get("factory") and cfg["factory"] != spec.factory_name:
        changes["factory_name"] = str(cfg["factory"])
    return replace(spec, **changes)


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
    if name not in OPTIMIZERS or not can_be_inner(name):
        valid = [n for n in OPTIMIZERS if can_be_inner(n)]
        raise ConfigError(f"optimizer.fallback.name={name!r} is invalid; valid choices: {', '.join(valid)}")
    # `optimizer.fallback.name=lion` keeps the rest of the yaml's block: drop the values the user
    # did not change that the new fallback does not take (AdamW's eps for Lion, its two betas for Adan)
    yaml_block = as_dict(load_option("optimizer", "muon").get("fallback") or {})
    own = optimizer_defaults(name)
    # a custom fallback's class is the block's own target (optimizer.fallback.target=...)
    accepts = spec_of({**own, **fallback}, key="optimizer.fallback").accepts

    def fits(k, v) -> bool:  # AdamW's two betas do not fit Adan's three
        return k in accepts and not (
            isinstance(v, (list, tuple)) and isinstance(own.get(k), (list, tuple)) and len(v) != len(own[k])
        )

    fallback = {
        k: v for k, v in fallback.items() if k == "name" or fits(k, v) or not (k in yaml_block and yaml_block[k] == v)
    }
    cfg = {k: v for k, v in own.items() if k not in META_KEYS}
    cfg.update(fallback)
    return cfg


def can_be_inner(name: str) -> bool:
    """A fallback (or Schedule-Free's base) lives inside another optimizer: a plain class, with no
    closure, no train/eval switching and no factory of its own (no nesting)."""
    spec = OPTIMIZERS[name]
    if spec.factory_name != "class" or spec.needs_closure:
        return False
    if spec.target is None:  # custom: its class is given with the block
        return True
    try:
        cls = spec.constructor
    except ConfigError:
        return False
    return not (callable(getattr(cls, "train", None)) and callable(getattr(cls, "eval", None)))


def sf_base_config(base, base_args) -> dict:
    """sf_wrap's base optimizer: its own yaml, changed by `base_args` (a custom base names its target there)."""
    if base not in OPTIMIZERS or not can_be_inner(base):
        valid = [n for n in OPTIMIZERS if can_be_inner(n)]
        raise ConfigError(f"optimizer.base={base!r} is invalid; valid choices: {', '.join(valid)}")
    own = {k: v for k, v in optimizer_defaults(base).items() if k not in META_KEYS}
    return {**own, **as_dict(base_args or {}), "name": base}


def switches_modes(optimizer) -> bool:
    """Schedule-Free optimizers train at y and evaluate at x: they refuse to step until train()."""
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


def build_with_class(cls, groups: list[dict], hp: dict):
    """The default factory: the class itself, with the role-tagged groups and the yaml's values."""
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"optimizer.target={_path(cls)} is invalid: must be a torch.optim.Optimizer subclass")
    return cls(groups, **{**hp, **fast_kernels(cls, groups, hp)})


register_factory("class", build_with_class)


def fast_kernels(cls, groups: list[dict], hp: dict) -> dict:
    """torch.optim's fastest implementation of the same update: `fused=True` where torch has a
    fused kernel for the parameters' device and dtype (torch 2.13: AdamW, Adam, SGD, Adagrad on cpu
    and cuda) and every parameter is contiguous, else `foreach=True` (NAdam, RAdam, channels_last
    nets); torch's own default on CPU is a per-tensor loop. A `fused` or `foreach` given in the yaml
    or by the user wins. Other libraries: nothing."""
    if not (isinstance(cls, type) and cls.__module__.startswith("torch.optim")) or {"fused", "foreach"} & set(hp):
        return {}
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    args, _ = constructor_args(cls)
    params = [p for g in groups for p in g["params"]]
    # fused kernels walk raw memory: torch 2.13's fused SGD on CPU mis-pairs a channels_last weight
    # with a contiguous momentum/grad, so only tensors in the default layout get them
    if (
        "fused" in args
        and params
        and all(
            p.is_floating_point()
            and not p.is_sparse
            and p.is_contiguous()
            and p.device.type in _get_fused_kernels_supported_devices()
            for p in params
        )
    ):
        return {"fused": True}
    return {"foreach": True} if "foreach" in args and params else {}


def _path(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}" if hasattr(cls, "__qualname__") else repr(cls)


def build_optimizer_from_config(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The trainer's path: an `optimizer:` config node -> a ready optimizer."""
    cfg = as_dict(cfg)
    spec = spec_of(cfg)
    hp = hyperparameters(cfg)
    # an entry may re-assign roles from the model and its config (Muon: the input conv, first_conv)
    hook = ROLE_HOOKS.get(spec.factory_name)
    roles = hook(model, cfg) if hook else None
    groups = build_param_groups(
        model, lr=hp["lr"], weight_decay=hp.get("weight_decay", 0.0), policy=cfg.get("groups"), roles=roles
    )
    opt = spec.factory(groups, hp)
    if switches_modes(opt):  # the loop switches to eval() around evaluations, and back
        opt.train()
    opt.optbench_spec = spec
    return opt


def build_optimizer(name: str, model: torch.nn.Module, **overrides) -> torch.optim.Optimizer:
    """The Python entry point: the yaml's defaults, changed by `overrides`, same as the CLI."""
    cfg = optimizer_defaults(name)
    cfg.update(overrides)  # a key the constructor does not take is refused by the validation
    validate_optimizer_config(cfg)
    return build_optimizer_from_config(cfg, model)


def validate_optimizer_config(cfg, key: str = "optimizer") -> None:
    """Refuse, in one line, what would fail or silently misbehave once training has started."""
    cfg = as_dict(cfg)
    name = cfg.get("name")
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(OPTIMIZERS)}")
    spec = spec_of(cfg, key)
    if spec.target is None:
        raise ConfigError(
            f"optimizer={name} needs the class: give {key}.target=<module.Class>, e.g. "
            f"{key}.target=my_pkg.my_module.MyOptimizer"
        )
    cls = spec.constructor  # an import failure is one line naming the module
    spec.factory  # noqa: B018 -- an unknown `factory:` is one line too
    if spec.factory_name == "class" and not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"{key}.target={spec.target!r} is invalid: must be a torch.optim.Optimizer subclass")
    unknown = sorted(set(hyperparameters(cfg)) - {"name"} - set(spec.accepts))
    unknown += sorted(k for k, owner in OWN_META_KEYS.items() if k in cfg and owner != name)
    if unknown:
        which = (
            f"'{name}'"
            + (f" ({spec.target})" if spec.target != OPTIMIZERS[name].target else "")
            + (f" in {key}" if key.endswith("base_args") else "")
        )
        raise ConfigError(
            f"unknown hyperparameter(s) {unknown} for optimizer {which}; valid: {', '.join(sorted(spec.accepts))}"
        )
    for role, rule in (cfg.get("groups") or {}).items():
        check_rule(rule, role)
        mult = rule.get("lr_mult", 1.0) if isinstance(rule, dict) else 1.0
        if not _number(mult) or mult < 0:
            raise ConfigError(f"{key}.groups.{role}.lr_mult={mult!r} is invalid: must be a number >= 0")
    lr = cfg.get("lr")
    if not _number(lr) or not 0 < lr < math.inf:  # NaN fails both; inf the second
        raise ConfigError(f"{key}.lr={lr!r} is invalid: must be a finite number > 0")
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
            raise ConfigError(
                f"{key}.{k}={betas!r} is invalid: must be a list of "
                f"{n or 'several'} numbers in [0, 1), e.g. {key}.{k}={example}"
            )
        for i, beta in enumerate(betas):
            if not _number(beta) or not 0 <= beta < 1:
                raise ConfigError(f"{key}.{k}[{i}]={beta!r} is invalid: must be in [0, 1)")
    for k in ("momentum", "alpha" if name == "rmsprop" else None):
        v = cfg.get(k) if k else None
        if v is not None and (not _number(v) or not 0 <= v < 1):
            raise ConfigError(f"{key}.{k}={v!r} is invalid: must be in [0, 1)")
    if spec.factory_name == "sf_wrap":  # the base optimizer's values, at this lr
        base_cfg = {**sf_base_config(cfg.get("base"), cfg.get("base_args")), "lr": lr}
        validate_optimizer_config(base_cfg, key=f"{key}.base_args")
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
        raise ConfigError(
            f"{key}.ns_coefficients={coeffs!r} is invalid: must be three numbers [a, b, c], "
            f"e.g. {key}.ns_coefficients=[3.4445,-4.7750,2.0315]"
        )
    for k, valid in (
        ("momentum_form", muon.MOMENTUM_FORMS),
        ("ns_norm", muon.NS_NORMS),
        ("ns_dtype", tuple(muon.NS_DTYPES)),
        ("scale_rule", muon.SCALE_RULES),
        ("first_conv", muon.FIRST_CONV),
    ):
        if k in cfg:
            muon.check_choice(k, cfg[k], valid, prefix=key)
    renorm = cfg.get("weight_renorm", False)
    if not isinstance(renorm, bool):
        raise ConfigError(f"{key}.weight_renorm={renorm!r} is invalid; valid choices: true, false")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
