"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; popularised by fastai).

The lr grows exponentially from --start to --end, one optimizer step per value, on the task's
own batches, model and optimizer (the trainer's build path, param-group ratios kept). The loss is
smoothed with a bias-corrected moving average, the ramp stops once the smoothed loss exceeds
--diverge x its minimum, and two suggestions are reported: the lr of steepest descent of the
smoothed loss (vs log lr) and the lr at its minimum divided by 10. The model and optimizer are
restored afterwards, so the function can run on a model you go on training. The command line
is optbench/commands/lr_find.py (`optbench lr-find`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from optbench.plotting import pyplot, save_figure


@dataclass
class RangeTestResult:
    lrs: list[float] = field(default_factory=list)  # the optimizer.lr value at each step
    losses: list[float] = field(default_factory=list)  # raw training loss at that lr
    smoothed: list[float] = field(default_factory=list)
    stopped_early: bool = False
    steepest: float | None = None  # lr of steepest descent
    min_over_10: float | None = None  # lr at the loss minimum / 10

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("lrs", "losses", "smoothed", "stopped_early", "steepest", "min_over_10")}


def exponential_ramp(start: float, end: float, steps: int) -> np.ndarray:
    """start * (end/start) ** (i / (steps-1)), i = 0..steps-1."""
    return start * (end / start) ** (np.arange(steps) / max(steps - 1, 1))


def suggestions(lrs, smoothed, skip_start: int = 5, skip_end: int = 2) -> tuple[float | None, float | None]:
    """(steepest-descent lr, minimum lr / 10). Steepest descent: the most negative slope of the
    smoothed loss against log lr, searched before the minimum (past it the loss is blowing up)
    and off the noisy first few points."""
    lrs, smoothed = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    if len(lrs) < 3:
        return None, None
    i_min = int(np.nanargmin(smoothed))
    min_over_10 = float(lrs[i_min] / 10)
    slope = np.gradient(smoothed, np.log(lrs))
    lo = min(skip_start, max(i_min - 1, 0))
    hi = max(min(i_min + 1, len(lrs) - skip_end), lo + 1)
    steepest = float(lrs[lo + int(np.nanargmin(slope[lo:hi]))])
    return steepest, min_over_10


def lr_range_test(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator,
    loss_fn: Callable[[torch.nn.Module, object], torch.Tensor],
    start: float = 1e-6,
    end: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.98,
    diverge: float = 4.0,
    reference_lr: float | None = None,
    needs_closure: bool = False,
) -> RangeTestResult:
    """Ramp the lr, record the loss, restore model and optimizer. `batches` yields per step a list
    of micro-batches (a Task's train_batches); `reference_lr` is the lr the groups' current lrs are
    relative to (default: the first group's), so per-role lr ratios stay as configured."""
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optim_state = copy.deepcopy(optimizer.state_dict())
    reference_lr = reference_lr or optimizer.param_groups[0]["lr"]
    ratios = [g["lr"] / reference_lr for g in optimizer.param_groups]
    result = RangeTestResult()
    avg, best = 0.0, math.inf
    was_training = model.training
    model.train()
    try:
        for i, lr in enumerate(exponential_ramp(start, end, steps)):
            for g, r in zip(optimizer.param_groups, ratios):
                g["lr"] = float(lr) * r
            micro_batches = next(batches)

            def closure():
                optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for batch in micro_batches:
                    loss = loss_fn(model, batch) / len(micro_batches)
                    loss.backward()
                    total += loss.detach()
                return total

            if needs_closure:  # L-BFGS re-evaluates the loss itself
                loss = optimizer.step(closure)
            else:
                loss = closure()
                optimizer.step()
            value = float(loss)
            result.lrs.append(float(lr))
            result.losses.append(value)
            avg = smoothing * avg + (1 - smoothing) * value
            smooth = avg / (1 - smoothing ** (i + 1))
            result.smoothed.append(smooth)
            if not math.isfinite(smooth) or smooth > diverge * best:
                result.stopped_early = True
                break
            best = min(best, smooth)
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
    finite = [s if math.isfinite(s) else np.nan for s in result.smoothed]
    result.steepest, result.min_over_10 = suggestions(result.lrs, finite)
    return result


def plot(result: RangeTestResult, title: str, out: Path) -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", lw=2, label="smoothed loss")
    finite = [s for s in result.smoothed if math.isfinite(s)]
    for lr, colour, label in (
        (result.steepest, "tab:red", "steepest descent"),
        (result.min_over_10, "tab:green", "minimum / 10"),
    ):
        if lr is not None:
            ax.axvline(lr, color=colour, ls="--", lw=1.2, label=f"{label}: {lr:.2g}")
    ax.set_xscale("log")
    if finite:  # keep the blow-up at the end from flattening the interesting part
        raw = [v for v in result.losses if math.isfinite(v)]
        lo, hi = min(finite + raw), min(max(finite), 2.5 * finite[0])
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo) + 1e-12)
    ax.set_xlabel("learning rate (optimizer.lr)")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, out, dpi=120)
