"""The landscape's pictures: a contour map of the test function with every trajectory and the
known minima beside loss-vs-step curves (PNG), or the same drawn step by step (animated GIF)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch

from optbench.landscape.functions import TestFunction
from optbench.landscape.run import Trajectory
from optbench.plotting import pyplot, save_figure


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
        ax.contour(
            X, Y, gap, levels=levels, norm=matplotlib.colors.LogNorm(), cmap="viridis", linewidths=0.5, alpha=0.8
        )
    else:
        ax.contourf(X, Y, Z, levels=30, cmap="viridis", alpha=0.35)
        ax.contour(X, Y, Z, levels=30, cmap="viridis", linewidths=0.5, alpha=0.8)
    for i, (mx, my) in enumerate(fn.minima):
        ax.plot(
            mx,
            my,
            marker="*",
            color="gold",
            markeredgecolor="k",
            markersize=18,
            zorder=5,
            label="global minimum" if i == 0 else None,
        )
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


def animate(
    fn: TestFunction,
    trajectories: list[Trajectory],
    out: Path,
    title: str,
    frames: int = 60,
    fps: int = 12,
    dpi: int = 60,
) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, ax, lx = _setup_axes(fn, title, _start_of(fn, trajectories))
    shown = [t for t in trajectories if t.status != "skipped"]
    longest = max((len(t.path) for t in shown), default=1)
    lx.set_xlim(0, longest)
    curves = [_loss_curve(fn, t) for t in shown]
    finite = np.concatenate([c[np.isfinite(c)] for c in curves]) if curves else np.array([1.0])
    lx.set_ylim(
        finite.min() * (0.5 if fn.min_value is not None else 1) - (0 if fn.min_value is not None else 1),
        finite.max() * 2 if fn.min_value is not None else finite.max() + 1,
    )
    lines, heads, loss_lines = [], [], []
    for t in shown:
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
