"""PNG figures of a report: learning curves, lr sensitivity, performance profile (Agg backend)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from optbench.plotting import pyplot, save_figure
from optbench.report.collect import finite

plt = pyplot()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def mean_curve(runs, kind: str, field: str) -> dict:
    """step -> (mean time, mean value, std value, n) over the runs that logged that step."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        for line in r.train if kind == "train" else r.evals:
            v = line.get(field)
            if finite(v) and "step" in line:
                by_step.setdefault(int(line["step"]), []).append((float(line.get("time_s", math.nan)), float(v)))
    out = {}
    for step in sorted(by_step):
        t, v = np.array(by_step[step]).T
        out[step] = (float(np.nanmean(t)), float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))
    return out


def curves(rows, out_dir: Path, metric: str, task: str) -> list[Path]:
    """Eval metric and train loss vs steps and vs train-clock time: mean line, ±1 std band."""
    written = []
    suffix = f"_{_slug(task)}" if task else ""
    for kind, field, ylabel in (("eval", metric, metric), ("train", "loss", "train loss")):
        for axis in ("step", "time"):
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            ymax = []
            for row in rows:
                c = mean_curve(row.runs, kind, field)
                if not c:
                    continue
                x = np.array([s if axis == "step" else v[0] for s, v in c.items()], dtype=float)
                m = np.array([v[1] for v in c.values()])
                sd = np.array([v[2] for v in c.values()])
                n_runs = len(row.runs)
                (line,) = ax.plot(x, m, marker="o" if len(x) < 12 else None, ms=3, label=f"{row.label} (n={n_runs})")
                ax.fill_between(x, m - sd, m + sd, color=line.get_color(), alpha=0.2, linewidth=0)
                if kind == "train":
                    done = mean_curve([r for r in row.runs if r.status == "completed"], kind, field)
                    ymax += [v[1] + v[2] for v in done.values()]
            if kind == "train" and ymax:
                # a diverged run's loss would flatten every other curve: the axis fits completed runs
                ax.set_ylim(bottom=0, top=1.05 * max(ymax))
            ax.set_xlabel("step" if axis == "step" else "train-clock time (s)")
            ax.set_ylabel(ylabel)
            ax.set_title(
                f"{rows[0].task}: {ylabel} vs {'steps' if axis == 'step' else 'time'} (mean ± std over seeds)",
                fontsize=9,
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            name = f"{'eval_' + _slug(metric) if kind == 'eval' else 'train_loss'}_vs_{axis}{suffix}.png"
            written.append(save_figure(fig, out_dir / name))
    return written


def lr_sensitivity(rows, out_dir: Path, metric: str, task: str) -> Path | None:
    """Final metric vs lr, one line per optimizer; only when some optimizer has several lrs.

    A run that diverged, failed or ended on a non-finite metric has no point on the metric axis:
    it is drawn as a cross at the axis' worst edge (top for a loss, bottom for an accuracy), at its
    lr, and the x axis spans every lr tried, so no run falls off the figure."""
    by_opt: dict[str, dict[float, list]] = {}
    for row in rows:
        for r in row.runs:
            if r.lr is not None and r.lr > 0:
                by_opt.setdefault(r.optimizer, {}).setdefault(r.lr, []).append(r)
    if not any(len(lrs) > 1 for lrs in by_opt.values()):
        return None
    worst_edge = 1.0 if rows[0].stats.get("mode") == "min" else 0.0  # axes fraction

    def ok(r) -> bool:
        return r.status == "completed" and finite(r.summary.get("final_metric"))

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for opt, lrs in sorted(by_opt.items()):
        xs = sorted(lrs)
        done = [[float(r.summary["final_metric"]) for r in lrs[lr] if ok(r)] for lr in xs]
        pts = [(lr, np.mean(v), np.std(v)) for lr, v in zip(xs, done) if v]
        color = None
        if pts:
            x, m, sd = map(np.array, zip(*pts))
            line = ax.errorbar(x, m, yerr=sd, marker="o", capsize=3, label=opt)
            color = line[0].get_color()
        bad = {lr: sum(not ok(r) for r in lrs[lr]) for lr in xs}
        bad = {lr: k for lr, k in bad.items() if k}
        if bad:  # kept on the figure: a cross at the worst edge, with how many runs of that lr
            color = color or ax._get_lines.get_next_color()
            ax.scatter(
                list(bad),
                [worst_edge] * len(bad),
                marker="X",
                s=60,
                color=color,
                zorder=4,
                edgecolor="black",
                linewidth=0.5,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                label=f"{opt}: diverged / failed / non-finite",
            )
            for lr, k in bad.items():
                ax.annotate(
                    f"{k}/{len(lrs[lr])}",
                    (lr, worst_edge),
                    xycoords=ax.get_xaxis_transform(),
                    xytext=(6, -12 if worst_edge else 6),
                    textcoords="offset points",
                    fontsize=7,
                    color=color,
                    annotation_clip=False,
                )
    all_lrs = [lr for lrs in by_opt.values() for lr in lrs]
    lo, hi = min(all_lrs), max(all_lrs)
    ax.set_xscale("log")
    ax.set_xlim(lo / 10**0.25, hi * 10**0.25)  # every lr tried is on the figure, the edges too
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"final {metric}")
    ax.set_title(
        f"{rows[0].task}: lr sensitivity (mean ± std over the seeds that finished; "
        f"x at the {'top' if worst_edge else 'bottom'}: runs that did not)",
        fontsize=8,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir / f"lr_sensitivity{'_' + _slug(task) if task else ''}.png")


def profile_ratios(times: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    """times[task][algo] -> per algo, its ratio to the best algo on each task (inf: never reached)."""
    algos = sorted({a for per in times.values() for a in per})
    ratios = {a: [] for a in algos}
    for per in times.values():
        best = min((t for t in per.values() if math.isfinite(t)), default=math.inf)
        for a in algos:
            t = per.get(a, math.inf)
            ratios[a].append(t / best if math.isfinite(t) and math.isfinite(best) and best > 0 else math.inf)
    return ratios


def profile_curve(ratios: list[float], taus: np.ndarray) -> np.ndarray:
    """rho(tau) = fraction of tasks on which the algo is within a factor tau of the best."""
    r = np.asarray(ratios, dtype=float)
    return np.array([(r <= tau).mean() for tau in taus])


def profile_skipped(rows) -> str | None:
    """The line saying why performance_profile.png is not drawn over several tasks, or None. With
    no target reached every curve would be a flat zero: a figure that looks like a result and
    says nothing. (With one task there is nothing to profile over, and nothing to say.)"""
    tasks = list(dict.fromkeys(r.task for r in rows))
    if len(tasks) < 2:
        return None
    if not any(finite(r.stats.get("time_to_target_s")) for r in rows):
        return (
            f"performance_profile.png not drawn: no row of the {len(tasks)} tasks reached its target "
            "(a median time-to-target needs more than half a row's runs to reach it)"
        )
    return None


def performance_profile(rows, out_dir: Path) -> Path | None:
    """AlgoPerf-style profile over tasks, using the median time-to-target of each row."""
    tasks = list(dict.fromkeys(r.task for r in rows))
    if len(tasks) < 2 or profile_skipped(rows):
        return None
    times: dict[str, dict[str, float]] = {t: {} for t in tasks}
    for row in rows:
        algo = " ".join(row.label.split(" ")[1:]) or row.label  # the label less its task
        times[row.task][algo] = row.stats["time_to_target_s"]
    ratios = profile_ratios(times)
    finite_r = [x for v in ratios.values() for x in v if math.isfinite(x)]
    tau_max = max(max(finite_r, default=1.0) * 1.2, 2.0)
    taus = np.logspace(0, math.log10(tau_max), 200)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algo, r in ratios.items():
        ax.step(taus, profile_curve(r, taus), where="post", label=algo)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("τ (time-to-target / best time-to-target on the task)")
    ax.set_ylabel("fraction of tasks")
    ax.set_title(f"performance profile over {len(tasks)} tasks", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir / "performance_profile.png")


def all_plots(rows, out_dir: Path) -> list[Path]:
    written = []
    tasks = list(dict.fromkeys(r.task for r in rows))
    for task in tasks:
        same = [r for r in rows if r.task == task]
        metric = same[0].stats["metric"]
        written += curves(same, out_dir, metric, task if len(tasks) > 1 else "")
        p = lr_sensitivity(same, out_dir, metric, task if len(tasks) > 1 else "")
        if p:
            written.append(p)
    p = performance_profile(rows, out_dir)
    if p:
        written.append(p)
    return written
