"""`optbench landscape function=rosenbrock optimizer=sgd,momentum,adam,lion,sf_adamw [key=value ...]`

Every optimizer starts from the same point of a 2-D test function and steps through the same
`optbench.optim.build_optimizer` path the trainer uses; the result is a contour plot with every
trajectory and the known minima, loss-vs-step curves (PNG; an animated GIF with --animate), and a
printed table of the final distance to the nearest minimum and the steps to reach a tolerance.

Keys (all optional but function/optimizer):
  function=NAME            rosenbrock | beale | booth | himmelblau | rastrigin | quadratic | saddle
  optimizer=A,B,...        any registered optimizers
  steps=N                  steps per optimizer (default 500); steps.NAME=N for one optimizer
  lr=X                     lr for all; lr.NAME=X for one; default: each optimizer's best final
                           loss over the grid 1e-4 .. 1 (half-decade steps), an equal tuning budget
  noise=S                  add N(0, S^2) to each gradient coordinate (stochastic gradients)
  start=[x,y]              start point (default: the function's standard start)
  tol=D                    distance to a minimum that counts as reached (default 1e-2)
  seed=N                   seed of the gradient noise (the same noise stream for every optimizer)

The point is a 1x2 matrix parameter with role "matrix": hybrid optimizers (Muon) then apply their
own update to it rather than handing it to their fallback, and matrix methods (Shampoo, SOAP)
precondition it — on a 1x2 matrix Muon's orthogonalisation reduces to normalising the momentum,
so Muon draws as normalised-gradient descent with momentum. Weight decay is set to 0 for every
optimizer so all of them chase the function's own minimum (decay would pull it towards the
origin). Schedule-Free optimizers are drawn at their training point (the sequence they take
gradients at). An optimizer that cannot step a 1x2 point is skipped with a note saying why.
"""
from __future__ import annotations

import argparse
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from optbench.errors import ArgumentParser, ConfigError, choices
from optbench.landscape_functions import FUNCTIONS, TestFunction
from optbench.plotting import pyplot, save_figure

LR_GRID = tuple(float(10 ** e) for e in np.arange(-4.0, 0.01, 0.5))
DEFAULTS = {"steps": 500, "noise": 0.0, "tol": 1e-2, "seed": 0}
ESCAPE_FACTOR = 10.0   # a trajectory this many plot-widths away has left the picture for good


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
    status: str = "ok"          # ok | diverged | escaped | failed | skipped
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


def run_trajectory(fn: TestFunction, name: str, lr: float, steps: int, start=None, noise: float = 0.0,
                   seed: int = 0) -> Trajectory:
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


# --------------------------------------------------------------------------- table and pictures
def table(fn: TestFunction, trajectories: list[Trajectory], tol: float) -> str:
    rows = [f"{'optimizer':<12} {'lr':>8} {'steps':>6} {'final f':>11} {'dist to min':>11} "
            f"{f'steps to {tol:g}':>14}  status"]
    for t in trajectories:
        if t.status == "skipped":
            rows.append(f"{t.optimizer:<12} {'':>8} {'':>6} {'':>11} {'':>11} {'':>14}  skipped: {t.note}")
            continue
        _, dist = fn.nearest_minimum(t.final)
        reached = steps_to_tolerance(fn, t, tol) if fn.minima else None
        rows.append(f"{t.optimizer:<12} {t.lr:>8.3g} {len(t.path) - 1:>6} {t.losses[-1]:>11.4g} "
                    f"{'n/a' if math.isnan(dist) else f'{dist:.4g}':>11} "
                    f"{'n/a' if not fn.minima else (reached if reached is not None else '-'):>14}  {t.status}"
                    + (f": {t.note}" if t.note else ""))
    return "\n".join(rows)


def _grid(fn: TestFunction, n: int = 300):
    xs = np.linspace(*fn.xlim, n)
    ys = np.linspace(*fn.ylim, n)
    X, Y = np.meshgrid(xs, ys)
    Z = fn.f(torch.from_numpy(X), torch.from_numpy(Y)).numpy()
    return X, Y, Z


def _setup_axes(fn: TestFunction, title: str, start):
    import matplotlib

    plt = pyplot()

    fig, (ax, lx) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.15, 1]})
    X, Y, Z = _grid(fn)
    if fn.log_levels and fn.min_value is not None:
        gap = Z - fn.min_value
        levels = np.geomspace(max(gap.min(), 1e-3), gap.max(), 30)
        ax.contourf(X, Y, gap, levels=levels, norm=matplotlib.colors.LogNorm(), cmap="viridis", alpha=0.35)
        ax.contour(X, Y, gap, levels=levels, norm=matplotlib.colors.LogNorm(), cmap="viridis",
                   linewidths=0.5, alpha=0.8)
    else:
        ax.contourf(X, Y, Z, levels=30, cmap="viridis", alpha=0.35)
        ax.contour(X, Y, Z, levels=30, cmap="viridis", linewidths=0.5, alpha=0.8)
    for i, (mx, my) in enumerate(fn.minima):
        ax.plot(mx, my, marker="*", color="gold", markeredgecolor="k", markersize=18, zorder=5,
                label="global minimum" if i == 0 else None)
    for px, py in fn.critical_points:
        ax.plot(px, py, marker="X", color="w", markeredgecolor="k", markersize=12, zorder=5, label="saddle point")
    ax.plot(*start, marker="o", color="k", markersize=7, zorder=6, label="start")
    ax.set_xlim(*fn.xlim)
    ax.set_ylim(*fn.ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(textwrap.fill(title, 80), fontsize=9)
    lx.set_xlabel("step")
    lx.set_ylabel("f - f_min" if fn.min_value is not None else "f")
    if fn.min_value is not None:
        lx.set_yscale("log")
    lx.grid(alpha=0.3, which="both")
    lx.set_title("loss vs step", fontsize=10)
    return fig, ax, lx


def _loss_curve(fn: TestFunction, t: Trajectory) -> np.ndarray:
    losses = np.asarray(t.losses)
    return np.maximum(losses - fn.min_value, 1e-16) if fn.min_value is not None else losses


def _start_of(fn: TestFunction, trajectories: list[Trajectory]):
    return next((t.path[0] for t in trajectories if t.path), fn.start)


def _label(t: Trajectory) -> str:
    return f"{t.optimizer} (lr {t.lr:.2g})" + ("" if t.status == "ok" else f", {t.status}")


def plot(fn: TestFunction, trajectories: list[Trajectory], out: Path, title: str) -> Path:
    fig, ax, lx = _setup_axes(fn, title, _start_of(fn, trajectories))
    for i, t in enumerate(trajectories):
        if t.status == "skipped":
            continue
        colour = f"C{i % 10}"
        path = np.asarray(t.path)
        ax.plot(path[:, 0], path[:, 1], "-", color=colour, lw=1.6, alpha=0.9)
        ax.plot(path[-1, 0], path[-1, 1], "o", color=colour, markeredgecolor="k", markersize=6, zorder=6)
        lx.plot(_loss_curve(fn, t), color=colour, lw=1.4, label=_label(t))
    # markers on the map, optimizers (with their lr) beside the curves: the map stays readable
    ax.legend(fontsize=8, loc="best")
    lx.legend(fontsize=8, loc="best")
    return save_figure(fig, out, dpi=110)


def animate(fn: TestFunction, trajectories: list[Trajectory], out: Path, title: str, frames: int = 60,
            fps: int = 12, dpi: int = 60) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, ax, lx = _setup_axes(fn, title, _start_of(fn, trajectories))
    shown = [t for t in trajectories if t.status != "skipped"]
    longest = max((len(t.path) for t in shown), default=1)
    lx.set_xlim(0, longest)
    curves = [_loss_curve(fn, t) for t in shown]
    finite = np.concatenate([c[np.isfinite(c)] for c in curves]) if curves else np.array([1.0])
    lx.set_ylim(finite.min() * (0.5 if fn.min_value is not None else 1) - (0 if fn.min_value is not None else 1),
                finite.max() * 2 if fn.min_value is not None else finite.max() + 1)
    lines, heads, loss_lines = [], [], []
    for i, t in enumerate(shown):
        colour = f"C{trajectories.index(t) % 10}"
        lines.append(ax.plot([], [], "-", color=colour, lw=1.6)[0])
        heads.append(ax.plot([], [], "o", color=colour, markeredgecolor="k", markersize=6, zorder=6)[0])
        loss_lines.append(lx.plot([], [], color=colour, lw=1.4, label=_label(t))[0])
    ax.legend(fontsize=8, loc="best")
    lx.legend(fontsize=8, loc="best")
    cut_points = np.unique(np.linspace(1, longest, frames).astype(int))

    def draw(k):
        for t, line, head, ll, c in zip(shown, lines, heads, loss_lines, curves):
            path = np.asarray(t.path[:k])
            line.set_data(path[:, 0], path[:, 1])
            head.set_data([path[-1, 0]], [path[-1, 1]])
            ll.set_data(np.arange(len(c[:k])), c[:k])
        return lines + heads + loss_lines

    anim = FuncAnimation(fig, draw, frames=cut_points, blit=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    anim.save(out, writer=PillowWriter(fps=fps), dpi=dpi)  # low dpi: a GIF stores every frame whole
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- command line
def parse_keys(pairs: list[str]) -> dict:
    """key=value arguments -> settings, with one-line errors for anything unknown or malformed."""
    from optbench.optim import OPTIMIZERS

    settings = {**DEFAULTS, "function": None, "optimizer": None, "lr": None, "start": None,
                "lr_by": {}, "steps_by": {}}
    valid = ("function", "optimizer", "steps", "lr", "noise", "start", "tol", "seed", "hydra.searchpath")
    from optbench.confdir import SEARCHPATH_KEY, use_overrides

    # your config folders' optimizers too (OPTBENCH_CONFIG_PATH adds them permanently)
    use_overrides([p for p in pairs if p.split("=", 1)[0] == SEARCHPATH_KEY])
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"cannot parse '{pair}' (expected key=value); valid keys: {', '.join(valid)}")
        key, value = pair.split("=", 1)
        if key == SEARCHPATH_KEY:
            continue
        base, _, which = key.partition(".")
        if base not in valid or (which and base not in ("lr", "steps")):
            raise ConfigError(f"unknown key '{key}'; valid keys: {', '.join(valid)} (and lr.NAME, steps.NAME)")
        try:
            if base == "function":
                settings["function"] = value
            elif base == "optimizer":
                settings["optimizer"] = [v.strip() for v in value.split(",") if v.strip()]
            elif base == "start":
                xy = [float(v) for v in value.strip("[]() ").split(",")]
                if len(xy) != 2:
                    raise ValueError
                settings["start"] = tuple(xy)
            elif base in ("steps", "seed"):
                n = int(value)
                if n < (1 if base == "steps" else 0):
                    raise ValueError
                (settings["steps_by"].__setitem__(which, n) if which else settings.__setitem__(base, n))
            else:
                x = float(value)
                if not math.isfinite(x) or x < 0 or (base in ("lr", "tol") and x == 0):
                    raise ValueError
                (settings["lr_by"].__setitem__(which, x) if which else settings.__setitem__(base, x))
        except ValueError:
            need = {"start": "two numbers, e.g. start=[-1.5,2]", "steps": "a whole number >= 1",
                    "seed": "a whole number >= 0"}.get(base, "a number > 0" if base in ("lr", "tol") else "a number >= 0")
            raise ConfigError(f"{key}={value!r} is invalid: must be {need}") from None
    if settings["function"] is None:
        raise ConfigError(f"name the test function, e.g. function=rosenbrock; valid choices: {choices(FUNCTIONS)}")
    if settings["function"] not in FUNCTIONS:
        raise ConfigError(f"unknown function '{settings['function']}'; valid choices: {choices(FUNCTIONS)}")
    if not settings["optimizer"]:
        raise ConfigError("name the optimizers to compare, e.g. optimizer=sgd,momentum,adam; valid choices: "
                          f"{choices(OPTIMIZERS)}")
    for name in settings["optimizer"] + list(settings["lr_by"]) + list(settings["steps_by"]):
        if name not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(OPTIMIZERS)}")
    return settings


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


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="optbench landscape", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--animate", action="store_true", help="also write an animated GIF")
    parser.add_argument("--out", type=Path, help="PNG path (default outputs/landscape/<function>.png)")
    parser.add_argument("keys", nargs="*", help="key=value settings (see above)")
    args = parser.parse_args(argv)
    settings = parse_keys(args.keys)
    fn = FUNCTIONS[settings["function"]]
    trajectories = compare(fn, settings)
    noise = f", gradient noise {settings['noise']:g}" if settings["noise"] else ""
    title = f"{fn.name}: {fn.description}{noise}"
    print(f"{fn.name}: {fn.description}")
    print(table(fn, trajectories, settings["tol"]))
    out = args.out or Path("outputs") / "landscape" / f"{fn.name}.png"
    print(f"wrote {plot(fn, trajectories, out, title)}")
    if args.animate:
        print(f"wrote {animate(fn, trajectories, out.with_suffix('.gif'), title)}")
