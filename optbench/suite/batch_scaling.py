"""`optbench suite batch-scaling`: steps to target against batch size, per optimizer.

The protocol of Shallue et al. (2019) and Zhang et al. (2019, the noisy quadratic model): for every
optimizer and batch size B, the learning rate is tuned for that B (the fewest steps to the task's
target over the same trials), and S(B) = those fewest steps. Perfect scaling is S ∝ 1/B (doubling
the batch halves the steps); beyond the critical batch size more data per step buys few steps.

The critical batch size is McCandlish et al. (2018, "An Empirical Model of Large-Batch Training"):
the fit S(B) = S_min · (1 + B_crit / B) (their eq. 2.11, (S/S_min − 1)(E/E_min − 1) = 1 with E = B·S),
least squares on log S over the batch sizes that reached the target. B ≪ B_crit is the
perfect-scaling region, B ≫ B_crit the regime of diminishing returns; at B = B_crit the steps are
twice the minimum. On the NQM, plain SGD also gets its exact curve from the closed form
(optbench.tasks.nqm.sgd_expected_loss), which the measured SGD points should follow.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from optbench.errors import ConfigError

INF = math.inf


def runs_for(
    optimizers, batch_sizes, lrs_by_opt, seeds, overrides, out_dir: Path
) -> list[tuple[tuple, list[str], Path]]:
    """((optimizer, batch size, lr), overrides, run dir) of every run: optimizer x batch size x lr x seed."""
    runs = []
    for opt in optimizers:
        for b in batch_sizes:
            for lr in lrs_by_opt[opt]:
                for seed in range(seeds):
                    ov = [f"optimizer={opt}", *overrides, f"trainer.batch_size={b}", f"optimizer.lr={lr:.6g}",
                          f"seed={seed}"]  # fmt: skip
                    run_dir = out_dir / "runs" / opt / f"B={b}" / f"lr={lr:.3g}" / f"seed={seed}"
                    runs.append(((opt, b, float(f"{lr:.6g}")), ov, run_dir))
    return runs


def steps_of(summary: dict) -> float:
    """Steps to target of one run: ∞ unless it completed having reached the target."""
    steps = summary.get("steps_to_target")
    if summary.get("status") != "completed" or not summary.get("reached") or steps is None:
        return INF
    return float(steps)


def median_steps(values: list[float]) -> float:
    """The median over seeds, a miss counting as ∞ (finite only when more than half reached it)."""
    v = sorted(values)
    n = len(v)
    if not n:
        return INF
    mid = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return float(mid)


def best_per_batch(results: dict) -> dict:
    """results[opt][B][lr] = [steps per seed] -> {opt: {B: {steps, lr}}}: the lr with the fewest
    (median) steps to target at each batch size; steps ∞ and lr None when no lr reached it."""
    out = {}
    for opt, by_b in results.items():
        out[opt] = {}
        for b, by_lr in by_b.items():
            best = (INF, None)
            for lr, steps in sorted(by_lr.items()):
                s = median_steps(steps)
                if s < best[0]:
                    best = (s, lr)
            out[opt][b] = {"steps": best[0], "lr": best[1]}
    return out


def fit_critical_batch(batch_sizes: list[float], steps: list[float]) -> dict | None:
    """McCandlish et al.'s S(B) = S_min (1 + B_crit/B), least squares in log S over the finite points;
    None with fewer than two of them. B_crit is bounded to [B_min/1e3, B_max·1e3] (a curve that is still
    perfectly scaling at the largest B has B_crit beyond the measured range: `beyond_range`)."""
    from scipy.optimize import least_squares

    pts = [(float(b), float(s)) for b, s in zip(batch_sizes, steps) if math.isfinite(s) and s > 0]
    if len(pts) < 2:
        return None
    b = np.array([p[0] for p in pts])
    log_s = np.log([p[1] for p in pts])
    lo, hi = math.log(b.min() / 1e3), math.log(b.max() * 1e3)

    def residual(x):  # x = (log S_min, log B_crit)
        return x[0] + np.log1p(np.exp(x[1]) / b) - log_s

    start = [log_s.min() - math.log(2), math.log(float(np.median(b)))]
    fit = least_squares(residual, start, bounds=([-np.inf, lo], [np.inf, hi]))
    s_min, b_crit = math.exp(fit.x[0]), math.exp(fit.x[1])
    return {
        "s_min": s_min,
        "b_crit": b_crit,
        "rms_log_error": float(np.sqrt(np.mean(fit.fun**2))),
        "beyond_range": bool(b_crit > b.max()),
        "points": len(pts),
    }


def sgd_closed_form_steps(task_cfg, batch_size: int, target: float, max_steps: int, lrs) -> dict:
    """Plain SGD on the NQM, exactly: the fewest steps t ≤ max_steps with E[L(θ_t)] ≤ target over `lrs`
    (E[L] is non-increasing in t while it converges, so a bisection finds the first such t)."""
    import torch

    from optbench.tasks.nqm import sgd_expected_loss, spectrum

    dim = int(task_cfg.dim)
    h = spectrum(dim, float(task_cfg.hessian_power)).double()
    c = float(task_cfg.noise_scale) * spectrum(dim, float(task_cfg.noise_power)).double()
    theta0 = torch.full((dim,), float(task_cfg.init), dtype=torch.float64)
    best = {"steps": INF, "lr": None}
    for lr in lrs:
        if sgd_expected_loss(h, c, theta0, lr, batch_size, max_steps) > target:
            continue
        lo, hi = 0, max_steps  # loss(lo) > target >= loss(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if sgd_expected_loss(h, c, theta0, lr, batch_size, mid) <= target:
                hi = mid
            else:
                lo = mid
        if hi < best["steps"]:
            best = {"steps": float(hi), "lr": float(lr)}
    return best


# --------------------------------------------------------------------------- outputs
def _fmt(steps: float) -> str:
    return "not reached" if not math.isfinite(steps) else f"{steps:.0f}"


def table_rows(best: dict, fits: dict, batch_sizes: list[int]) -> list[dict]:
    rows = []
    for opt, by_b in best.items():
        fit = fits.get(opt)
        row = {"optimizer": opt}
        for b in batch_sizes:
            row[f"B={b}"] = by_b[b]["steps"]
            row[f"lr@B={b}"] = by_b[b]["lr"]
        row["s_min"] = fit["s_min"] if fit else None
        row["b_crit"] = fit["b_crit"] if fit else None
        row["b_crit_beyond_range"] = fit["beyond_range"] if fit else None
        rows.append(row)
    return rows


# (record key, how the markdown describes it)
CLOSED_FORMS = (
    (
        "closed_form",
        lambda cf: f"at the best of {len(cf['lrs'])} learning rates in [1e-3, 1.99] (log-spaced to 1, then every 0.01)",
    ),
    (
        "closed_form_at_run_lrs",
        lambda cf: "at the learning rates the sgd runs used (" + ", ".join(f"{x:.3g}" for x in cf["lrs"]) + ")",
    ),
)


def _crit_text(fit: dict, batch_sizes: list[int]) -> str:
    """B_crit as a number, or the side of the measured range it lies beyond."""
    if fit["beyond_range"]:
        return f"> {max(batch_sizes)}"
    if fit["b_crit"] < min(batch_sizes):
        return f"< {min(batch_sizes)}"
    return f"{fit['b_crit']:.3g}"


def markdown(record: dict, best: dict, fits: dict, command: str | None) -> str:
    bs = record["batch_sizes"]
    lines = ["# Steps to target against batch size", ""]
    if command:
        lines += [f"`{command}`", ""]
    lines += [
        f"Task {record['task']} ({record['metric']} {'<=' if record['mode'] == 'min' else '>='} {record['target']}), "
        f"at most {record['max_steps']} steps; per optimizer and batch size the lr with the fewest steps to target "
        f"over the same {record['trials']} learning rates, {record['seeds']} seed(s) each (median; a miss = "
        "not reached). B_crit: McCandlish et al. (2018)'s fit S(B) = S_min (1 + B_crit/B); B ≪ B_crit scales "
        "perfectly (S ∝ 1/B), B ≫ B_crit gains little. Runs: "
        f"{record['runs']}, diverged {record['diverged']}, failed {record['failed']}.",
        "",
        "| optimizer | " + " | ".join(f"B={b}" for b in bs) + " | S_min | B_crit |",
        "|---|" + "---:|" * len(bs) + "---:|---:|",
    ]
    for opt, by_b in best.items():
        fit = fits.get(opt)
        cells = [_fmt(by_b[b]["steps"]) for b in bs]
        crit = "—" if not fit else _crit_text(fit, bs)
        s_min = "—" if not fit else f"{fit['s_min']:.0f}"
        lines.append(f"| {opt} | " + " | ".join(cells) + f" | {s_min} | {crit} |")
    lines += ["", "The learning rate each cell chose:", ""]
    lines += ["| optimizer | " + " | ".join(f"B={b}" for b in bs) + " |", "|---|" + "---:|" * len(bs)]
    for opt, by_b in best.items():
        lines.append(
            f"| {opt} | " + " | ".join("—" if by_b[b]["lr"] is None else f"{by_b[b]['lr']:.3g}" for b in bs) + " |"
        )
    for key, words in CLOSED_FORMS:
        cf = record.get(key)
        if cf:
            lines += [
                "",
                f"Plain SGD on the NQM in closed form (its expected loss), {words(cf)}: "
                + ", ".join(f"B={b}: {_fmt(v['steps'])}" for b, v in zip(bs, cf["by_batch"])),
            ]
    return "\n".join(lines) + "\n"


def csv_text(best: dict, fits: dict, batch_sizes: list[int]) -> str:
    rows = table_rows(best, fits, batch_sizes)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["optimizer"])
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()})
    return buf.getvalue()


def plot(record: dict, best: dict, fits: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bs = record["batch_sizes"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, (opt, by_b) in enumerate(best.items()):
        colour = f"C{i % 10}"
        pts = [(b, by_b[b]["steps"]) for b in bs if math.isfinite(by_b[b]["steps"])]
        if not pts:
            continue
        ax.plot(*zip(*pts), "o-", color=colour, label=opt)
        ax.plot([pts[0][0], bs[-1]], [pts[0][1], pts[0][1] * pts[0][0] / bs[-1]], ":", color=colour, lw=0.8)
        fit = fits.get(opt)
        if fit and not fit["beyond_range"] and fit["b_crit"] >= bs[0]:
            ax.axvline(fit["b_crit"], color=colour, ls="--", lw=0.8)
            ax.annotate(
                f"B_crit≈{fit['b_crit']:.0f}",
                (fit["b_crit"], 2 * fit["s_min"]),
                color=colour,
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    for (key, _), (style, label) in zip(
        CLOSED_FORMS,
        (
            ("k+--", "SGD, closed form (expected loss), best lr < 2"),
            ("kx:", "SGD, closed form (expected loss) at the runs' lrs"),
        ),
    ):
        cf = [
            (b, v["steps"])
            for b, v in zip(bs, (record.get(key) or {}).get("by_batch", []))
            if math.isfinite(v["steps"])
        ]
        if cf:
            ax.plot(*zip(*cf), style, lw=1, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel(f"steps to {record['metric']} {'≤' if record['mode'] == 'min' else '≥'} {record['target']}")
    ax.set_title(
        f"{record['task']}: steps to target at the best lr per batch size\n"
        "dotted: perfect scaling (S ∝ 1/B) from each curve's smallest B; dashed: B_crit",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _finite(obj):
    """JSON has no infinity: a target never reached is written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- the whole study
def run_batch_scaling(
    optimizers: list[str],
    batch_sizes: list[int],
    out_dir: Path,
    *,
    task: str = "nqm",
    lrs: list[float] | None = None,
    budget: int = 5,
    search: str = "grid",
    seeds: int = 1,
    max_steps: int = 5000,
    eval_every: int = 25,
    overrides: list[str] = (),
    launcher: list[str] = (),
) -> tuple[dict, dict]:
    """Train every optimizer x batch size x lr x seed (stopping at the target), through tune's rounds
    (Hydra's launcher when given; finished runs read back), and return the study's record."""
    from optbench.tune import check_launcher, run_round, trial_points

    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ConfigError(f"suite batch-scaling: --batch-sizes={batch_sizes} is invalid: whole numbers >= 1")
    lrs_by_opt = {o: list(lrs) if lrs else [p["lr"] for p in trial_points(o, search, budget, 0)] for o in optimizers}
    base = [
        f"task={task}",
        f"trainer.max_steps={max_steps}",
        f"trainer.eval_every={eval_every}",
        "trainer.stop_at_target=true",
        "trainer.progress=false",
        *overrides,
    ]
    runs = runs_for(optimizers, sorted(batch_sizes), lrs_by_opt, seeds, base, out_dir)
    if launcher:
        check_launcher(runs[0][1], list(launcher))
    results_list = run_round([(ov, d) for _, ov, d in runs], out_dir, list(launcher))
    results: dict = {o: {b: {} for b in sorted(batch_sizes)} for o in optimizers}
    statuses = []
    for ((opt, b, lr), _, _), r in zip(runs, results_list):
        statuses.append(r["summary"].get("status"))
        results[opt][b].setdefault(lr, []).append(steps_of(r["summary"]))
    first = results_list[0]["summary"]
    # the task as the runs had it (overrides included): the closed form must describe the same problem
    from omegaconf import OmegaConf

    task_cfg = OmegaConf.load(runs[0][2] / "config.yaml").task
    record = {
        "task": task,
        "metric": first.get("metric"),
        "mode": first.get("mode"),
        "target": first.get("target"),
        "batch_sizes": sorted(batch_sizes),
        "optimizers": optimizers,
        "lrs": lrs_by_opt,
        "trials": max(len(v) for v in lrs_by_opt.values()),
        "seeds": seeds,
        "max_steps": max_steps,
        "runs": len(runs),
        "diverged": statuses.count("diverged"),
        "failed": sum(st not in ("completed", "diverged") for st in statuses),
        "results": {
            o: {str(b): {f"{lr:.6g}": v for lr, v in by_lr.items()} for b, by_lr in by_b.items()}
            for o, by_b in results.items()
        },
    }
    if task_cfg.get("kind") == "nqm" and first.get("target") is not None:
        target = float(first["target"])

        def closed_form(lrs) -> dict:
            return {
                "lrs": [float(x) for x in lrs],
                "by_batch": [sgd_closed_form_steps(task_cfg, b, target, max_steps, lrs) for b in sorted(batch_sizes)],
            }

        # the optimum (SGD is stable for lr < 2 / h_max = 2), and at the lrs plain SGD was run with: the
        # measured sgd row should match the latter up to the evaluation cadence and the noise of one seed
        # log-spaced, plus a fine linear grid below the stability limit, where SGD's best lr lies at large B
        grid = np.unique(np.concatenate([np.logspace(-3, 0, 31), np.arange(1.0, 1.995, 0.01)]))
        record["closed_form"] = closed_form(grid)
        plain_sgd = next((o for o in optimizers if o == "sgd"), None)
        if plain_sgd:
            record["closed_form_at_run_lrs"] = closed_form(lrs_by_opt[plain_sgd])
    return record, results


def write_outputs(out: Path, record: dict, results: dict, command: str | None = None) -> str:
    best = best_per_batch(results)
    bs = record["batch_sizes"]
    fits = {o: fit_critical_batch(bs, [best[o][b]["steps"] for b in bs]) for o in best}
    record = {**record, "best": {o: {str(b): v for b, v in by_b.items()} for o, by_b in best.items()}, "fits": fits}
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(record, best, fits, command)
    from optbench.train.rundir import atomic_write_text

    atomic_write_text(out / "batch_scaling.md", md)
    atomic_write_text(out / "batch_scaling.csv", csv_text(best, fits, bs))
    atomic_write_text(out / "batch_scaling.json", json.dumps(_finite(record), indent=2) + "\n")
    plot(record, best, fits, out / "batch_scaling.png")
    return md
