"""Optimizer trajectories on a 2-D test function: every optimizer starts from the same point and
steps through the same `optbench.optim.build_optimizer` path the trainer uses (`optbench
landscape`; its command line is optbench/commands/landscape.py, its pictures landscape/plot.py).

The point is a 1x2 matrix parameter with role "matrix": hybrid optimizers (Muon) then apply their
own update to it rather than handing it to their fallback, and matrix methods (Shampoo, SOAP)
precondition it. Weight decay is set to 0 for every optimizer so all of them chase the
function's own minimum. An optimizer that cannot step a 1x2 point is skipped with a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from optbench.errors import ConfigError
from optbench.landscape.functions import TestFunction

LR_GRID = tuple(float(10**e) for e in np.arange(-4.0, 0.01, 0.5))
ESCAPE_FACTOR = 10.0  # a trajectory this many plot-widths away has left the picture for good


class PointModel(torch.nn.Module):
    """The whole "model": one 1x2 matrix holding (x, y)."""

    def __init__(self, start):
        super().__init__()
        self.point = torch.nn.Parameter(torch.tensor([list(start)], dtype=torch.float64))

    def param_roles(self) -> dict[str, str]:
        return {"point": "matrix"}

    def xy(self) -> torch.Tensor:
        return self.point.view(2)


@dataclass
class Trajectory:
    optimizer: str
    lr: float
    path: list[tuple[float, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    status: str = "ok"  # ok | diverged | escaped | failed | skipped
    note: str = ""

    @property
    def final(self) -> tuple[float, float]:
        return self.path[-1]


def build_point_optimizer(name: str, model: PointModel, lr: float) -> torch.optim.Optimizer:
    from optbench.optim import build_optimizer, optimizer_defaults

    overrides = {"lr": lr}
    if "weight_decay" in optimizer_defaults(name):
        overrides["weight_decay"] = 0.0
    return build_optimizer(name, model, **overrides)


def run_trajectory(
    fn: TestFunction, name: str, lr: float, steps: int, start=None, noise: float = 0.0, seed: int = 0
) -> Trajectory:
    """Step `name` from the start for `steps` steps; stop early on NaN or once far off the picture."""
    from optbench.train.loop import set_optimizer_mode

    start = tuple(start or fn.start)
    traj = Trajectory(name, lr)
    model = PointModel(start)
    try:
        optimizer = build_point_optimizer(name, model, lr)
    except ConfigError:
        raise
    except Exception as e:  # e.g. an optimizer that refuses a 1x2 parameter
        traj.status, traj.note = "skipped", f"{type(e).__name__}: {e}".splitlines()[0]
        return traj
    set_optimizer_mode(optimizer, "train")
    needs_closure = getattr(getattr(optimizer, "optbench_spec", None), "needs_closure", False)
    gen = torch.Generator().manual_seed(seed)

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = fn(model.xy())
        loss.backward()
        if noise:
            model.point.grad.add_(noise * torch.randn(model.point.shape, generator=gen, dtype=torch.float64))
        return loss

    width = max(fn.xlim[1] - fn.xlim[0], fn.ylim[1] - fn.ylim[0])
    centre = ((fn.xlim[0] + fn.xlim[1]) / 2, (fn.ylim[0] + fn.ylim[1]) / 2)
    traj.path.append(start)
    traj.losses.append(float(fn(torch.tensor(start, dtype=torch.float64))))
    for _ in range(steps):
        try:
            if needs_closure:
                optimizer.step(closure)
            else:
                closure()
                optimizer.step()
        except Exception as e:
            # failing at once: it cannot step this problem; later: a numerical failure, shown as such
            traj.status = "skipped" if len(traj.path) == 1 else "failed"
            traj.note = f"{type(e).__name__}: {e}".splitlines()[0]
            return traj
        with torch.no_grad():
            xy = model.xy().detach()
            value = float(fn(xy))
        point = (float(xy[0]), float(xy[1]))
        if not (math.isfinite(value) and all(map(math.isfinite, point))):
            traj.status = "diverged"
            break
        traj.path.append(point)
        traj.losses.append(value)
        if math.dist(point, centre) > ESCAPE_FACTOR * width:
            traj.status = "escaped"
            break
    return traj


def tuned_lr(fn: TestFunction, name: str, steps: int, start=None, noise: float = 0.0, seed: int = 0) -> float:
    """The grid lr with the lowest final loss (diverged runs rank last)."""

    def score(lr):
        t = run_trajectory(fn, name, lr, steps, start, noise, seed)
        if t.status in ("skipped", "failed", "diverged") or not math.isfinite(t.losses[-1]):
            return math.inf
        return t.losses[-1]

    scores = [score(lr) for lr in LR_GRID]
    return LR_GRID[int(np.argmin(scores))]


def steps_to_tolerance(fn: TestFunction, traj: Trajectory, tol: float) -> int | None:
    for step, point in enumerate(traj.path):
        if fn.nearest_minimum(point)[1] <= tol:
            return step
    return None


def compare(fn: TestFunction, settings: dict, log=print) -> list[Trajectory]:
    out = []
    for name in settings["optimizer"]:
        steps = settings["steps_by"].get(name, settings["steps"])
        lr = settings["lr_by"].get(name, settings["lr"])
        if lr is None:
            lr = tuned_lr(fn, name, steps, settings["start"], settings["noise"], settings["seed"])
        traj = run_trajectory(fn, name, lr, steps, settings["start"], settings["noise"], settings["seed"])
        if traj.status == "skipped":
            log(f"note: {name} skipped: it cannot step a 1x2 point ({traj.note})")
        out.append(traj)
    return out


def table(fn: TestFunction, trajectories: list[Trajectory], tol: float) -> str:
    rows = [
        f"{'optimizer':<12} {'lr':>8} {'steps':>6} {'final f':>11} {'dist to min':>11} "
        f"{f'steps to {tol:g}':>14}  status"
    ]
    for t in trajectories:
        if t.status == "skipped":
            rows.append(f"{t.optimizer:<12} {'':>8} {'':>6} {'':>11} {'':>11} {'':>14}  skipped: {t.note}")
            continue
        _, dist = fn.nearest_minimum(t.final)
        reached = steps_to_tolerance(fn, t, tol) if fn.minima else None
        rows.append(
            f"{t.optimizer:<12} {t.lr:>8.3g} {len(t.path) - 1:>6} {t.losses[-1]:>11.4g} "
            f"{'n/a' if math.isnan(dist) else f'{dist:.4g}':>11} "
            f"{'n/a' if not fn.minima else (reached if reached is not None else '-'):>14}  {t.status}"
            + (f": {t.note}" if t.note else "")
        )
    return "\n".join(rows)
