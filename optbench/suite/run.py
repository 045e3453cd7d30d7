"""Run the suite: for every workload, the same tuning budget for every optimizer, then seeds.

All tuning goes through ONE function, `tune_workload`, the adapter to optbench.tune: it calls tune's
`run_tune` (CONTRACTS13 K1: Hydra launcher overrides run the trials in parallel) where the installed
tune has it, else the older in-process `tune` (sequential, no launcher). It returns the suite's own
record of a workload:

    {"select_metric", "mode", "optimizers": {name: {
        "trials": [{"index", "point", "run_dir", "status", "value"}],   # in the order they were tried
        "chosen": index of the chosen trial,
        "seeds": [{"seed", "run_dir", "status"}]}}}

Resumable because tune is: a finished run's directory is read back, never retrained.
"""

from __future__ import annotations

import json
from pathlib import Path

from optbench.errors import ConfigError
from optbench.suite.workloads import Workload

SEARCHES = ("grid", "random", "sobol")


def tune_workload(
    optimizers: list[str],
    overrides: list[str],
    out_dir: Path,
    *,
    budget: int,
    seeds: int,
    search: str = "sobol",
    launcher: list[str] = (),
    select_metric: str | None = None,
) -> dict:
    """The adapter to optbench.tune (the one place that knows its record's layout): run_tune with
    the launcher overrides (Hydra's launcher runs the trials; none: in-process, one after another)."""
    from optbench.tune import run_tune

    record = run_tune(
        optimizers,
        list(overrides),
        search=search,
        trials=budget,
        seeds=seeds,
        out_dir=out_dir,
        launcher=list(launcher),
        select_metric=select_metric,
    )
    out = {
        "select_metric": record["select_metric"],
        "mode": record["mode"],
        "overrides": record["overrides"],
        "optimizers": {},
    }
    for name in optimizers:
        trials = [
            {
                "index": i,
                "point": t["point"],
                "status": t["status"],
                "value": t["value"],
                "run_dir": str(out_dir / t["run_dir"]),
            }
            for i, t in enumerate(record["trials"][name])
        ]
        best = record["best"][name]
        chosen = best["trial"]
        finals = [
            {
                "seed": r["seed"],
                "status": r["status"],
                "run_dir": str(out_dir / r["run_dir"]),
            }
            for r in record["final"][name]
        ]
        out["optimizers"][name] = {"trials": trials, "chosen": int(chosen), "seeds": finals}
    return out


def run_suite(
    optimizers: list[str],
    workloads: list[Workload],
    out_dir: Path,
    *,
    budget: int,
    seeds: int,
    search: str = "sobol",
    overrides: list[str] = (),
    launcher: list[str] = (),
    jobs: int = 1,
) -> dict:
    """Every workload (jobs > 1: that many at once, each in its own process); suite.json (the
    protocol and each workload's record) is rewritten after each, so an interrupted suite shows what
    it had finished. Workloads write disjoint folders, so parallel ones never share a run."""
    if budget < 1:
        raise ConfigError(
            f"suite: --budget={budget} is invalid: must be >= 1 (tuning trials per optimizer and workload)"
        )
    if seeds < 1:
        raise ConfigError(f"suite: --seeds={seeds} is invalid: must be >= 1")
    if search not in SEARCHES:
        raise ConfigError(f"suite: --search={search} is invalid; valid choices: {', '.join(SEARCHES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "optimizers": optimizers,
        "budget": budget,
        "seeds": seeds,
        "search": search,
        "overrides": list(overrides),
        "launcher": list(launcher),
        "workloads": {},
    }
    if jobs < 1:
        raise ConfigError(f"suite: --jobs={jobs} is invalid: must be >= 1")
    jobs = min(jobs, len(workloads))
    args = {
        w.task: (
            optimizers,
            [*w.overrides, *overrides],
            out_dir / "runs" / w.task,
            budget,
            seeds,
            search,
            list(launcher),
            jobs,
            w.select_metric,
        )
        for w in workloads
    }
    if jobs == 1:
        results = (_tune_job(*args[w.task]) for w in workloads)
        _gather(record, workloads, results, out_dir)
        return record
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked copy of a process with torch's thread pools can hang
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_tune_job, *args[w.task]) for w in workloads]
        _gather(record, workloads, (f.result() for f in futures), out_dir)
    return record


def _gather(record: dict, workloads: list[Workload], results, out_dir: Path) -> None:
    for w, rec in zip(workloads, results):
        record["workloads"][w.task] = {"group": w.group, "overrides": list(w.overrides), **rec}
        write_record(out_dir, record)


def _tune_job(optimizers, overrides, out_dir, budget, seeds, search, launcher, jobs, select_metric=None) -> dict:
    """One workload's tuning (in the suite's process, or in a worker of its own)."""
    import os

    import torch

    from optbench.confdir import use_overrides

    use_overrides(overrides)  # a spawned worker starts without the command line's config folders
    if jobs > 1:  # the cores shared among the workers
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
    print(
        f"suite: workload {Path(out_dir).name} ({len(optimizers)} optimizers x ({budget} trials + {seeds} seeds))",
        flush=True,
    )
    return tune_workload(
        optimizers,
        overrides,
        Path(out_dir),
        budget=budget,
        seeds=seeds,
        search=search,
        launcher=launcher,
        select_metric=select_metric,
    )


def write_record(out_dir: Path, record: dict) -> Path:
    from optbench.train.rundir import write_json

    path = out_dir / "suite.json"
    write_json(path, record)
    return path


def read_record(out_dir: Path) -> dict:
    return json.loads((out_dir / "suite.json").read_text())
