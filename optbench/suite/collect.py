"""Read a suite's runs back: per (workload, optimizer) its tuning trials and seed runs, as the report's
Run objects (summary.json, config.yaml, metrics.jsonl), every run counted whatever its status.

A run directory that is missing or has no readable summary.json counts as failed (report.collect's
rule), never as absent: a suite that lost runs must not look better for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optbench.report.collect import Run, load_run

STATUSES = ("completed", "diverged", "failed", "interrupted")


@dataclass
class Cell:
    """One optimizer on one workload."""

    workload: str
    optimizer: str
    trials: list[Run]  # in the order tune tried them
    chosen: int  # index into trials of the configuration the seeds reran
    seeds: list[Run]
    points: list[dict]  # each trial's hyperparameters

    @property
    def runs(self) -> list[Run]:
        return [*self.trials, *self.seeds]

    def status_counts(self) -> dict[str, int]:
        """Every run of the cell (trials and seeds) by status; 'unreadable' and a run that never
        wrote a summary are failures, 'running' is interrupted (as in report.stats)."""
        counts = dict.fromkeys(STATUSES, 0)
        for r in self.runs:
            s = {"unreadable": "failed", "unknown": "failed", "running": "interrupted"}.get(r.status, r.status)
            counts[s if s in counts else "failed"] += 1
        return counts


def read_run(run_dir: str | Path) -> Run:
    path = Path(run_dir)
    if not path.exists():
        return Run(path=path, summary={"status": "failed", "stop_reason": "run directory missing"}, config={})
    return load_run(path)


def collect(record: dict) -> list[Cell]:
    """suite.json's record -> cells, workload by workload, optimizers in the suite's order."""
    cells = []
    for workload, rec in record["workloads"].items():
        for name in record["optimizers"]:
            o = rec["optimizers"][name]
            cells.append(
                Cell(
                    workload=workload,
                    optimizer=name,
                    trials=[read_run(t["run_dir"]) for t in o["trials"]],
                    chosen=int(o["chosen"]),
                    seeds=[read_run(s["run_dir"]) for s in o["seeds"]],
                    points=[t["point"] for t in o["trials"]],
                )
            )
    return cells
