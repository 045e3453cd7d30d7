"""Per-workload numbers of one optimizer (a Cell), by the report's rules (optbench/report/stats.py):

- success rate: the fraction of the chosen configuration's seed runs that reached the task's target
  AND completed (stats.reached_target: one that diverged after the target is a miss);
- steps / train-clock seconds to target: the median over the seed runs, a miss counting as infinity
  (stats.median_to_target), so it is finite only when more than half the seeds reached the target;
- final metric: mean and 95% t-interval over the seed runs that completed (stats.mean_std_ci);
- attempts needed: 1 + the number of tuning trials tried before the first one that reached the target,
  in the order tune tried them (None: no trial reached it; "not reached" in the tables);
- every run of the cell (trials and seeds) counted by status: completed, diverged, failed, interrupted.
"""

from __future__ import annotations

import math

from optbench.report.stats import mean_std_ci, median_to_target, reached_target
from optbench.suite.collect import Cell


def attempts_needed(cell: Cell) -> int | None:
    for i, run in enumerate(cell.trials):
        if reached_target(run):
            return i + 1
    return None


def cell_scores(cell: Cell) -> dict:
    seeds = cell.seeds
    first = next((r.summary for r in cell.runs if r.summary.get("metric")), {})
    completed = [r for r in seeds if r.status == "completed"]
    reached = sum(reached_target(r) for r in seeds)
    target = first.get("target")
    return {
        "workload": cell.workload,
        "optimizer": cell.optimizer,
        "metric": first.get("metric"),
        "mode": first.get("mode"),
        "target": target,
        "seeds": len(seeds),
        "reached": reached,
        "success_rate": reached / len(seeds) if seeds and target is not None else math.nan,
        "steps_to_target": median_to_target(seeds, "steps_to_target") if target is not None else math.nan,
        "time_to_target_s": median_to_target(seeds, "time_to_target_s") if target is not None else math.nan,
        "final": mean_std_ci([r.summary.get("final_metric") for r in completed]),
        "attempts": attempts_needed(cell),
        "trials": len(cell.trials),
        "chosen": cell.points[cell.chosen] if cell.points else {},
        "status": cell.status_counts(),
        "runs": len(cell.runs),
    }


def all_scores(cells: list[Cell]) -> list[dict]:
    return [cell_scores(c) for c in cells]
