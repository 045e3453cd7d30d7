"""Tasks as a registry: `task.kind` names a builder that turns the config into a Task.

Each task kind is one module of this package that calls `register_task_kind` at import; the
modules are found by listing the package, so adding a kind is one module plus its yamls
(conf/task/<name>.yaml with `kind: <kind>`). A kind outside optbench (a researcher's own) is a
module on the Python path named by the task yaml's `module:` key; it registers itself the same way.

    @register_task_kind("my_kind", models=("my_model",), description="...")
    def build(cfg, device, rank, world_size) -> Task: ...
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from optbench.errors import ConfigError, choices
from optbench.tasks.base import LOSS_REDUCTIONS, Task, _dist_sum, loss_reduction  # noqa: F401 (re-exported)

BENCHMARKS = ("nanogpt_track3", "airbench94", "airbench94_muon")


@dataclass(frozen=True)
class TaskKind:
    name: str
    build: Callable[..., Task]  # (cfg, device, rank, world_size) -> Task
    validate: Callable[[DictConfig], None] | None = None  # raises ConfigError before anything runs
    # the model yamls' `name`s this kind can train; empty: the kind builds its own model
    models: tuple[str, ...] = ()
    description: str = ""


TASK_KINDS: dict[str, TaskKind] = {}
_NOT_KINDS = {"base"}  # modules of this package that hold shared code, not a kind


def register_task_kind(
    name: str,
    build: Callable[..., Task] | None = None,
    *,
    validate=None,
    models: tuple[str, ...] = (),
    description: str = "",
):
    """Register `build` as task.kind=`name`; usable as a call or as a decorator."""

    def add(fn: Callable[..., Task]) -> Callable[..., Task]:
        TASK_KINDS[name] = TaskKind(name, fn, validate, tuple(models), description or (fn.__doc__ or "").strip())
        return fn

    return add(build) if build is not None else add


def discover() -> dict[str, TaskKind]:
    """Import every task-kind module of this package once (each registers itself)."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_KINDS and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return TASK_KINDS


def task_kind(cfg: DictConfig) -> TaskKind:
    """The registered kind of cfg.task, importing the task yaml's `module:` first when it names one."""
    module = cfg.task.get("module")
    if module:
        try:
            importlib.import_module(str(module))
        except ImportError as e:
            raise ConfigError(
                f"task.module={module!r} cannot be imported ({e}); it must be a module on the "
                "Python path that calls optbench.tasks.register_task_kind"
            ) from None
    kinds = discover()
    kind = cfg.task.get("kind")
    if kind not in kinds:
        raise ConfigError(f"unknown task.kind '{kind}'; valid choices: {choices(kinds)}")
    return kinds[kind]


def build_task(cfg: DictConfig, device, rank: int = 0, world_size: int = 1) -> Task:
    return task_kind(cfg).build(cfg, device, rank, world_size)


# --------------------------------------------------------------------------- validation
def validate_task_config(cfg: DictConfig) -> None:
    """The checks every task shares, then its kind's own (TaskKind.validate)."""
    t = cfg.task
    kind = task_kind(cfg)
    if t.mode not in ("max", "min"):
        raise ConfigError(f"task.mode={t.mode!r} is invalid; valid choices: max, min")
    target = t.get("target")
    if target is not None and (
        not isinstance(target, (int, float)) or isinstance(target, bool) or not math.isfinite(target)
    ):
        raise ConfigError(f"task.target={target!r} is invalid: must be a number (or null for none)")
    metric = str(t.get("metric") or "")
    if target is not None and "acc" in metric and not 0 <= target <= 1:  # an accuracy is a fraction
        raise ConfigError(f"task.target={target!r} is invalid for task.metric={metric}: an accuracy is in [0, 1]")
    root = OmegaConf.select(cfg, "data.root")
    if root and Path(str(root)).exists() and not Path(str(root)).is_dir():
        raise ConfigError(f"data.root={root!r} is a file, not a directory; pass data.root=DIR")
    reduction = t.get("loss_reduction", "mean")
    if reduction not in LOSS_REDUCTIONS:
        raise ConfigError(f"task.loss_reduction={reduction!r} is invalid; valid choices: {', '.join(LOSS_REDUCTIONS)}")
    bench = t.get("benchmark")
    if bench is not None and bench not in BENCHMARKS:
        raise ConfigError(f"task.benchmark={bench!r} is invalid; valid choices: null, {', '.join(BENCHMARKS)}")
    _validate_model_kind(cfg, kind)
    if kind.validate is not None:
        kind.validate(cfg)


def _validate_model_kind(cfg: DictConfig, kind: TaskKind) -> None:
    """`task=fineweb_synthetic model=cnn_small` would fail inside the run; refuse it here."""
    from optbench.confdir import group_options, load_option

    if not kind.models or cfg.model.get("name") in kind.models:
        return
    valid = [m for m in group_options("model") if load_option("model", m).get("name") in kind.models]
    chosen = OmegaConf.select(cfg, "hydra.runtime.choices.model") or cfg.model.get("name")
    raise ConfigError(
        f"model '{chosen}' cannot train task '{cfg.task.name}' ({cfg.task.kind}); "
        f"valid choices for model: {', '.join(valid)}"
    )
