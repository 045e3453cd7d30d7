"""The suite's two figures (Agg backend, optbench.plotting): a heat map of optimizer x workload
(colour: success rate of the seed runs; text: the profile's ratio) and the performance profile."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from optbench.plotting import pyplot, save_figure
from optbench.suite.profile import rho


def heatmap(scores: list[dict], prof: dict, path: Path) -> Path:
    plt = pyplot()
    optimizers = list(prof["score"])
    workloads = list(dict.fromkeys(s["workload"] for s in scores))
    grid = np.full((len(optimizers), len(workloads)), np.nan)
    by = {(s["optimizer"], s["workload"]): s for s in scores}
    for i, o in enumerate(optimizers):
        for j, w in enumerate(workloads):
            grid[i, j] = by[(o, w)]["success_rate"]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(workloads) + 3.0), max(3.0, 0.32 * len(optimizers) + 1.8)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i, o in enumerate(optimizers):
        for j, w in enumerate(workloads):
            r = prof["ratios"].get(o, {}).get(w)
            text = "" if r is None else ("×" if math.isinf(r) else f"{r:.2g}")
            ax.text(
                j, i, text, ha="center", va="center", fontsize=6, color="white" if not (grid[i, j] > 0.6) else "black"
            )
    ax.set_xticks(range(len(workloads)), workloads, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(optimizers)), optimizers, fontsize=7)
    ax.set_title(
        f"colour: success rate of the seeds\ntext: {prof['by']} to target / the best's (× = not reached)", fontsize=8
    )
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02).set_label("success rate", fontsize=7)
    return save_figure(fig, path)


def profile_plot(prof: dict, path: Path) -> Path:
    plt = pyplot()
    taus = np.linspace(1.0, prof["tau_max"], 400)
    n = len(prof["score"])
    fig, ax = plt.subplots(figsize=(6.4 + (1.6 if n > 20 else 0.0), max(4.2, 0.11 * n + 1.0)))
    order = sorted(prof["score"], key=lambda o: -prof["score"][o] if not math.isnan(prof["score"][o]) else 1)
    styles = ("-", "--", ":", "-.")  # ten colours repeat: a line style per ten optimizers tells them apart
    for i, o in enumerate(order):
        r = list(prof["ratios"][o].values())
        ax.step(
            taus,
            rho(r, taus),
            where="post",
            linestyle=styles[(i // 10) % len(styles)],
            label=f"{o} ({prof['score'][o]:.3f})",
        )
    ax.set_xlim(1.0, prof["tau_max"])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"τ (median {prof['measure'].replace('_', ' ')} / the best optimizer's)")
    ax.set_ylabel("fraction of workloads within τ of the best")
    ax.set_title(
        f"performance profile over {len(prof['workloads'])} workloads (legend: area, AlgoPerf score)", fontsize=9
    )
    ax.grid(alpha=0.3)
    # outside the axes: with a few dozen optimizers no corner of the plot is free
    ax.legend(fontsize=6, ncol=2 if n > 20 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save_figure(fig, path)
