"""A Task = model + batches + loss + evaluation metric + target: all the training loop sees.

Each task kind (one module in this package) builds one from the config; see optbench/tasks/__init__.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn


@dataclass
class Task:
    name: str
    model: nn.Module
    train_batches: Iterator[list[Any]]  # per step: this rank's micro-batches, on device
    loss: Callable[[nn.Module, Any], torch.Tensor]
    evaluate: Callable[[nn.Module], dict]  # untimed; includes `metric`
    metric: str
    mode: str  # "max" or "min"
    target: float | None
    samples_per_step: int  # global, all ranks and micro-steps
    tokens_per_step: int | None = None
    state_dict: Callable[[], dict] = dict  # data position, for resume
    load_state_dict: Callable[[dict], None] = lambda s: None
    make_train_batches: Callable[[int], Iterator[list[Any]]] | None = None  # fresh stream (BN recompute)
    summary_extra: dict = field(default_factory=dict)
    flops_per_token: float | None = None
    # mean: `loss` is the micro-batch's mean per-example loss; sum: its sum (task.loss_reduction)
    loss_reduction: str = "mean"

    @property
    def examples_per_step(self) -> int:
        """What a per-example loss averages over, per optimizer step, all ranks: tokens or samples."""
        return self.tokens_per_step or self.samples_per_step

    def better(self, a: float, b: float | None) -> bool:
        return b is None or (a > b if self.mode == "max" else a < b)

    def reached(self, value: float) -> bool:
        if self.target is None:
            return False
        return value >= self.target if self.mode == "max" else value <= self.target


def _dist_sum(values: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(values)
    return values


LOSS_REDUCTIONS = ("mean", "sum")


def loss_reduction(cfg: DictConfig) -> str:
    """task.loss_reduction: mean (default) or sum of the per-example losses over the global batch."""
    return str(cfg.task.get("loss_reduction") or "mean")
