"""Shared by the small CPU workloads (digits, nqm, diagnostics); not a task kind itself."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from optbench.errors import ConfigError


def limit_cpu_threads(cfg: DictConfig, device: torch.device) -> None:
    """task.cpu_threads (default 1 in these yamls; null leaves torch's choice): on a CPU a problem
    of a few thousand numbers gains nothing from intra-op threads, and on a shared machine they
    cost much (measured: a 1,500x64 logistic-regression gradient 2 ms on one thread, 68 ms on two
    while other processes ran). A process-wide torch setting, so only on a CPU device."""
    n = cfg.task.get("cpu_threads")
    if n is not None and device.type == "cpu" and torch.get_num_threads() != int(n):
        torch.set_num_threads(int(n))


def validate_cpu_threads(cfg: DictConfig) -> None:
    n = cfg.task.get("cpu_threads")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"task.cpu_threads={n!r} is invalid: must be a whole number >= 1 (or null: torch's default)")
