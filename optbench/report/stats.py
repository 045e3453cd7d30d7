"""Group runs into rows (one per configuration) and compute each row's statistics.

Rules (docs/design.md "Statistics in reports"):
- metric mean ± std and a 95% t-interval over the runs that completed; diverged, failed and
  interrupted runs stay in the row as counts (and as misses below), never silently dropped;
  a completed run whose final metric is NaN/inf is counted too: the mean is then NaN and the
  table says how many runs ended so;
- reached / steps / time to target: a run reached the target only if it reached it AND
  completed (one that diverged after the target is a miss in the count and in the median);
  the median is over ALL runs of the row, a miss counting as infinity, so a median is finite
  only when more than half the runs reached the target;
- a one-sided t-test that the mean final metric beats the target (speedrun rule: p < 0.01);
- speedup vs the baseline row = baseline median / row median (steps and train-clock time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from optbench.errors import ConfigError
from optbench.report.collect import Run, find_duplicates, finite, is_ignored

FAILURE_STATUSES = ("diverged", "failed", "interrupted", "running", "unreadable")


@dataclass
class Row:
    key: tuple  # values of the grouping keys
    label: str
    runs: list[Run]  # one per distinct configuration: a repeated run is in duplicates, not here
    stats: dict = field(default_factory=dict)
    duplicates: list[tuple[Run, Run]] = field(default_factory=list)  # (repeat, the run it repeats)

    @property
    def task(self) -> str:
        return self.runs[0].task


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def seed_order(v) -> tuple:
    """Numbers in order, then anything else a damaged summary holds (as text), then no seed."""
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    return (v is None, not number, v if number else 0, "" if number else str(v))


def default_group_keys(runs: list[Run]) -> list[str]:
    """task (when several) + optimizer + every config key that varies among the runs of one
    (task, optimizer) -- e.g. optimizer.lr in an lr sweep. Seeds never split rows."""
    keys = ["task"] if len({r.task for r in runs}) > 1 else []
    keys.append("optimizer")
    by_opt: dict[tuple, list[Run]] = {}
    for r in runs:
        by_opt.setdefault((r.task, r.optimizer), []).append(r)
    varying = set()
    for group in by_opt.values():
        all_keys = set().union(*(r.config.keys() for r in group))
        for k in all_keys:
            if is_ignored(k) or k in ("task.name", "optimizer.name"):
                continue
            if len({_hashable(r.config.get(k)) for r in group}) > 1:
                varying.add(k)
    # a varying choice of a config group (scheduler.name) explains its group's other keys
    chosen = {k[: -len(".name")] for k in varying if k.endswith(".name")}
    varying = {k for k in varying if k.endswith(".name") or k.split(".", 1)[0] not in chosen}
    return keys + sorted(varying)


def _short(key: str, keys: list[str]) -> str:
    """'optimizer.lr' -> 'lr' unless another key has the same last part; 'scheduler.name' -> 'scheduler'."""
    if key.endswith(".name"):
        return key[: -len(".name")]
    last = key.rsplit(".", 1)[-1]
    return last if sum(k.rsplit(".", 1)[-1] == last for k in keys) == 1 else key


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def group_runs(runs: list[Run], keys: list[str]) -> list[Row]:
    rows: dict[tuple, list[Run]] = {}
    for r in runs:
        rows.setdefault(tuple(_hashable(r.value(k)) for k in keys), []).append(r)

    def label(key: tuple) -> str:
        parts = []
        for k, v in zip(keys, key):
            if v is None and k not in ("task", "optimizer"):
                continue  # a key this row's optimizer does not have (Muon's fallback.lr on an AdamW row)
            parts.append(_fmt_value(v) if k in ("task", "optimizer") else f"{_short(k, keys)}={_fmt_value(v)}")
        return " ".join(parts)

    def order(item):
        return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in item[0])

    return [
        Row(key=k, label=label(k), runs=sorted(v, key=lambda r: (seed_order(r.summary.get("seed")), str(r.path))))
        for k, v in sorted(rows.items(), key=order)
    ]


def mean_std_ci(values: list[float], confidence: float = 0.95) -> dict:
    """Over the values given (None = no value recorded, left out); a NaN/inf value is counted in
    n and `nonfinite`, and makes every statistic NaN rather than vanish from the mean."""
    given = [v for v in values if v is not None]
    x = np.asarray([v for v in given if finite(v)], dtype=float)
    n, bad = len(given), len(given) - len(x)
    out = {"n": n, "nonfinite": bad, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if n == 0 or bad:
        return out
    out["mean"] = float(x.mean())
    if n >= 2:
        out["std"] = float(x.std(ddof=1))
        half = sps.t.ppf(0.5 + confidence / 2, df=n - 1) * out["std"] / math.sqrt(n)
        out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    else:
        out["std"] = 0.0
    return out


def one_sided_p(values: list[float], target: float | None, mode: str) -> float:
    """p-value of H1: the mean beats the target (greater for mode=max, less for mode=min)."""
    x = np.asarray([v for v in values if finite(v)], dtype=float)
    if target is None or len(x) < 2:
        return math.nan
    if np.all(x == x[0]):  # no spread: the t statistic is undefined, the answer is not
        return 0.0 if (x[0] > target if mode == "max" else x[0] < target) else 1.0
    alternative = "greater" if mode == "max" else "less"
    return float(sps.ttest_1samp(x, target, alternative=alternative).pvalue)


def reached_target(run: Run) -> bool:
    """The one rule for "reached" (the count and the median): reached it and completed, so a run
    that diverged (or failed, or was interrupted) after the target is a miss in both."""
    return run.status == "completed" and bool(run.summary.get("reached"))


def median_to_target(runs: list[Run], field_: str) -> float:
    """Median over all runs; a run that missed the target (or did not complete) counts as inf."""
    values = []
    for r in runs:
        v = r.summary.get(field_)
        ok = reached_target(r) and finite(v)
        values.append(float(v) if ok else math.inf)
    return float(np.median(values)) if values else math.nan


def p_applies(runs: list[Run], completed: list[Run]) -> bool:
    """The claim "the mean beats the target" covers every run: with a diverged or failed run it cannot
    hold (a t-test over the survivors would flatter the row). And a run stopped at the target ends
    with a final metric at or past it by construction, which the test would count as evidence."""
    stopped_at_target = any(r.summary.get("stop_reason") == "target reached" for r in runs)
    nan_final = any(
        r.summary.get("final_metric") is not None and not finite(r.summary["final_metric"]) for r in completed
    )  # a NaN cannot beat it
    return len(completed) == len(runs) and not stopped_at_target and not nan_final


def row_stats(row: Row) -> dict:
    runs = row.runs
    first = next((r.summary for r in runs if r.status != "unreadable"), runs[0].summary)  # metric, target, mode
    completed = [r for r in runs if r.status == "completed"]
    statuses = [r.status for r in runs]
    target, mode = first.get("target"), first.get("mode", "max")
    final = [r.summary.get("final_metric") for r in completed]
    best = [r.summary.get("best_metric") for r in completed]
    throughput_key = "throughput_tokens_per_s" if first.get("throughput_tokens_per_s") else "throughput_samples_per_s"
    s = {
        "label": row.label,
        "task": row.task,
        "metric": first.get("metric"),
        "mode": mode,
        "target": target,
        "runs": len(runs),
        "seeds": sorted({_hashable(r.summary.get("seed")) for r in runs}, key=seed_order),
        "completed": len(completed),
        "diverged": statuses.count("diverged"),
        "failed": statuses.count("failed") + statuses.count("unreadable"),  # unreadable: a summary no one can trust
        "interrupted": statuses.count("interrupted") + statuses.count("running"),
        "final": mean_std_ci(final),
        "best": mean_std_ci(best),
        "reached": sum(reached_target(r) for r in runs),
        "steps_to_target": median_to_target(runs, "steps_to_target"),
        "time_to_target_s": median_to_target(runs, "time_to_target_s"),
        "p_beats_target": one_sided_p(final, target, mode) if p_applies(runs, completed) else math.nan,
        "throughput_unit": "tok/s" if throughput_key == "throughput_tokens_per_s" else "samples/s",
        "throughput": _mean([r.summary.get(throughput_key) for r in completed]),
        "peak_memory_bytes": _max([r.summary.get("peak_memory_bytes") for r in runs]),
        "optimizer_state_bytes": _mean([r.summary.get("optimizer_state_bytes") for r in runs]),
        "train_time_s": _mean([r.summary.get("train_time_s") for r in completed]),
        "steps": _mean([r.summary.get("steps") for r in completed]),
        "lr": runs[0].lr,
    }
    s["reached_fraction"] = s["reached"] / len(runs)
    if target is None:  # nothing to reach: "not reached" would read as a failure
        s["steps_to_target"] = s["time_to_target_s"] = s["reached_fraction"] = math.nan
    return s


def _mean(values) -> float:
    x = [float(v) for v in values if finite(v)]
    return float(np.mean(x)) if x else math.nan


def _max(values) -> float:
    x = [float(v) for v in values if finite(v)]
    return float(max(x)) if x else math.nan


def speedup(baseline: float, value: float) -> float:
    if not (math.isfinite(baseline) and math.isfinite(value)) or value <= 0:
        return math.nan
    return baseline / value


def pick_baseline(rows: list[Row], wanted: str | None) -> Row | None:
    """--baseline matches a row label or an optimizer name; by default adamw if present, else row 1."""
    if not rows:
        return None
    if wanted:
        for match in (lambda r: r.label == wanted, lambda r: r.runs[0].optimizer == wanted):
            hits = [r for r in rows if match(r)]
            if hits:
                return hits[0]
        raise ConfigError(
            f"report: --baseline '{wanted}' matches no row; valid choices: {', '.join(r.label for r in rows)}"
        )
    adamw = [r for r in rows if r.runs[0].optimizer == "adamw"]
    return adamw[0] if adamw else rows[0]


def build_rows(
    runs: list[Run], keys: list[str] | None = None, baseline: str | None = None
) -> tuple[list[Row], list[str]]:
    keys = keys or default_group_keys(runs)
    for k in keys:
        if all(r.value(k) is None for r in runs):
            # only keys some run has a value for: a key listed here must not be refused next time
            has_lr = {"lr"} if any(r.value("lr") is not None for r in runs) else set()
            known = sorted(
                {c for r in runs for c, v in r.config.items() if v is not None and not is_ignored(c)}
                | {"optimizer", "task"}
                | has_lr
            )
            raise ConfigError(f"report: --by key '{k}' is in no run; valid keys include: {', '.join(known[:40])}")
    from optbench.report.benchmarks import claim  # benchmarks builds on this module's statistics

    rows = group_runs(runs, keys)
    dups = find_duplicates(runs)  # the same configuration twice is one result: counted once
    for row in rows:
        mine = {r.path for r in row.runs}
        repeats = {r.path for r in row.runs if r.path in dups and dups[r.path].path in mine}
        row.duplicates = [(r, dups[r.path]) for r in row.runs if r.path in repeats]
        row.runs = [r for r in row.runs if r.path not in repeats]
        row.stats = row_stats(row)
        row.stats["duplicates"] = len(row.duplicates)
        row.stats["claim"] = claim(row.runs)  # the benchmark's own validity rule, None for other rows
    if baseline and not any(_matches(r, baseline) for r in rows):
        raise ConfigError(
            f"report: --baseline '{baseline}' matches no row; valid choices: {', '.join(r.label for r in rows)}"
        )
    # the baseline is per task: a speedup compares like with like
    for task in dict.fromkeys(r.task for r in rows):
        same = [r for r in rows if r.task == task]
        base = pick_baseline(same, baseline if any(_matches(r, baseline) for r in same) else None)
        for row in same:
            row.stats["baseline"] = base.label
            row.stats["speedup_steps"] = speedup(base.stats["steps_to_target"], row.stats["steps_to_target"])
            row.stats["speedup_time"] = speedup(base.stats["time_to_target_s"], row.stats["time_to_target_s"])
    return rows, keys


def _matches(row: Row, wanted: str | None) -> bool:
    return wanted is not None and (row.label == wanted or row.runs[0].optimizer == wanted)
