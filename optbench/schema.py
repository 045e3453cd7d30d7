"""Schemas (structured configs) of the config keys optbench reads itself, and their one-line messages.

- `TrainerSchema`: the whole `trainer:` group. Hydra applies it while composing (trainer/default.yaml
  pulls `_schema` first in its defaults list; `register()` puts it in Hydra's ConfigStore), so a value
  of the wrong type (`trainer.max_steps=abc`) or an unknown key stops composition with an OmegaConf
  error that names the key, the value and the field's type; `message()` turns that into one line.
  The yaml holds the values (fields without a default are MISSING here): the schema only says types.
- `OptimizerMetaSchema`, `SchedulerMetaSchema`: only the keys optbench reads around an optimizer's or
  a schedule's own arguments. Those groups are open (every optimizer yaml has constructor arguments
  of its own), and a structured node in Hydra's defaults list would either refuse them or, opened,
  accept any misspelt key without Hydra's "unknown key" check; so these two are applied by
  `check_meta()` in config.validate, to the meta-keys a node has, and leave the other keys alone.

Cross-field rules (batch size divisible by grad_accum x world, warmup_steps vs warmup_fraction, ...)
stay in config.py and the module that owns each group: a schema checks one value at a time.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from omegaconf import MISSING

# a number as written: Union keeps 3 an int and 0.9 a float (a float field would turn 3 into 3.0)
Number = Union[int, float]  # noqa: UP007 - OmegaConf reads typing.Union, not int | float

SCHEMA_NAME = "_schema"  # trainer/_schema in Hydra's ConfigStore (a leading _: not an option)


@dataclass
class AveragingSchema:
    kind: str = MISSING
    ema_decay: Number = MISSING
    ema_warmup: bool = MISSING
    swa_start: Number = MISSING
    swa_every: int = MISSING
    lookahead_every: int = MISSING
    lookahead_decay: Number = MISSING
    lookahead_power: Number = MISSING
    lookahead_final: bool = MISSING


@dataclass
class TrainerSchema:
    max_steps: int = MISSING
    batch_size: int = MISSING
    grad_accum: int = MISSING
    grad_clip: Number = MISSING
    device: str = MISSING
    amp: str = MISSING  # a bare YAML `off` (False) becomes "False": config.amp_mode reads both
    compile: bool = MISSING
    eval_every: int = MISSING
    eval_every_late: int | None = MISSING
    eval_late_fraction: Number = MISSING
    eval_at_start: bool = MISSING
    log_every: int = MISSING
    stop_at_target: bool = MISSING
    progress: bool = MISSING
    deterministic: bool = MISSING
    peak_flops: Number | None = MISSING
    averaging: AveragingSchema = field(default_factory=AveragingSchema)
    clock_includes: list[str] = MISSING
    nproc: int = MISSING
    checkpoint_every: int = MISSING
    resume: str = MISSING
    on_bad_checkpoint: str = MISSING
    extend: bool = MISSING
    save_final: bool = MISSING
    init_from: str | None = MISSING
    divergence_factor: Number = MISSING
    max_time_s: float | None = None  # the train-clock budget (null = none); the yaml may list it too


@dataclass
class OptimizerMetaSchema:
    """The keys of an optimizer yaml that configure optbench, not the constructor (registry.META_KEYS)."""

    name: str = MISSING
    target: str | None = None
    factory: str | None = None
    source: str = ""
    state: str = ""
    description: str = ""
    needs_closure: bool = False
    groups: dict[str, Any] = field(default_factory=dict)  # each role's rule: optim/groups.check_rule
    lr_grid: list[Number] | None = None
    lr_scaling: str = "none"
    reference_batch_size: int | None = None
    search_space: dict[str, Any] | None = None
    momentum_schedule: Any = None
    first_conv: str = "fallback"


@dataclass
class SchedulerMetaSchema:
    """The keys every schedule has (scheduler/_base.yaml); a schedule's own keys: schedules.py."""

    name: str = MISSING
    warmup_steps: int = 0
    warmup_fraction: Number = 0.0


def register() -> None:
    """Put the trainer schema in Hydra's ConfigStore (idempotent); trainer/default.yaml names it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="trainer", name=SCHEMA_NAME, node=TrainerSchema)


def check_meta(node, schema: type, prefix: str) -> None:
    """Check the keys of `node` that `schema` declares (the others are left alone), or raise ConfigError."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ValidationError

    from optbench.errors import ConfigError

    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    hints = typing.get_type_hints(schema)
    base = OmegaConf.structured(schema)
    for key in (k for k in plain if k in hints):
        try:  # one key at a time: OmegaConf's error for a list element does not say which list
            OmegaConf.merge(base, {key: plain[key]})
        except ValidationError:
            raise ConfigError(f"{prefix}.{key}={plain[key]!r} is invalid{_expected(hints[key])}") from None


def message(e, prefix: str = "") -> str:
    """One line from an OmegaConf ValidationError raised while Hydra composes (a schema's field got
    a value of the wrong type), from its attributes (the key, the value and the dataclass whose field
    it broke), not from its text: `trainer.max_steps='abc' is invalid: must be a whole number`."""
    key = ".".join(p for p in (prefix, str(e.full_key or e.key or "")) if p)
    owner = e.object_type
    hints = typing.get_type_hints(owner) if dataclasses.is_dataclass(owner) else {}
    return f"{key}={e.value!r} is invalid{_expected(hints.get(e.key))}"


def _expected(hint) -> str:
    """What a value of type `hint` must be, in words (with "(or null)" for Optional), as the tail
    of config.py's messages: ": must be a whole number", "; valid choices: true, false"."""
    args = typing.get_args(hint)
    # X | None (types.UnionType) and Optional[X] (typing.Union) alike
    if typing.get_origin(hint) in (Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return _expected(inner[0] if len(inner) == 1 else Union[tuple(inner)]) + " (or null)"  # noqa: UP007
    if hint is bool:
        return "; valid choices: true, false"
    if hint is int:
        return ": must be a whole number"
    if hint in (float, Number):
        return ": must be a number"
    if hint is str:
        return ": must be a string"
    origin = typing.get_origin(hint)
    if origin is list:
        return f": must be a list of {_noun(args[0]) if args else 'values'}"
    if origin is dict:
        return ": must be a mapping of keys to values"
    if dataclasses.is_dataclass(hint):
        return f": must be a mapping with the keys {', '.join(f.name for f in dataclasses.fields(hint))}"
    return f": must be of type {getattr(hint, '__name__', hint)}" if hint is not None else ": wrong type"


def _noun(hint) -> str:
    return {int: "whole numbers", float: "numbers", Number: "numbers", str: "strings", bool: "true/false"}.get(
        hint, "values"
    )
