"""Learning-rate schedules as plain functions of the step.

A schedule returns a multiplier of each group's base lr, so per-role lrs keep their ratios.
`build_schedule(name, total_steps, **kwargs)` -> callable step -> multiplier.
"""
from __future__ import annotations

import math
from typing import Callable

from optbench.errors import ConfigError, choices


def _constant(total_steps: int) -> Callable[[int], float]:
    return lambda step: 1.0


def _cosine(total_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    def f(step: int) -> float:
        t = min(step, total_steps) / max(total_steps, 1)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


SCHEDULES: dict[str, Callable[..., Callable[[int], float]]] = {
    "constant": _constant,
    "cosine": _cosine,
}


def with_warmup(f: Callable[[int], float], warmup_steps: int) -> Callable[[int], float]:
    """Linear warmup from 1/warmup to 1, then the schedule (whose clock starts at step 0)."""
    if warmup_steps <= 0:
        return f
    return lambda step: f(step) * min(1.0, (step + 1) / warmup_steps)


def build_schedule(name: str, total_steps: int, warmup_steps: int = 0, **kwargs) -> Callable[[int], float]:
    if name not in SCHEDULES:
        raise ConfigError(f"unknown scheduler '{name}'; valid choices: {choices(SCHEDULES)}")
    return with_warmup(SCHEDULES[name](total_steps, **kwargs), warmup_steps)


def build_schedule_from_config(cfg, total_steps: int):
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    name = kwargs.pop("name")
    return build_schedule(name, total_steps, **kwargs)


def validate_schedule_config(cfg, total_steps: int) -> None:
    name = cfg.get("name")
    if name not in SCHEDULES:
        raise ConfigError(f"unknown scheduler '{name}'; valid choices: {choices(SCHEDULES)}")
    warmup = cfg.get("warmup_steps", 0)
    if warmup < 0 or warmup > total_steps:
        raise ConfigError(f"scheduler.warmup_steps={warmup} is invalid: must be in [0, trainer.max_steps={total_steps}]")
