"""Run the suite: for every workload, the same tuning budget for every optimizer, then seeds.

All tuning goes through ONE function, `tune_workload`, the adapter to optbench.tune: today it calls
`optbench.tune.tune` (in-process, sequential); when tune's `run_tune` (CONTRACTS13 K1, launcher
support) is in, only this function changes. It returns the suite's own record of a workload:

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


def tune_workload(optimizers: list[str], overrides: list[str], out_dir: Path, *, budget: int, seeds: int,
                  search: str = "sobol", launcher: list[str] = ()) -> dict:
    """The adapter to optbench.tune (the one place that knows its record's layout)."""
    from optbench import tune as tune_mod

    if launcher:
        # run_tune (K1) takes Hydra launcher overrides; the in-process tune() runs one at a time
        if not hasattr(tune_mod, "run_tune"):
            raise ConfigError(f"suite: {' '.join(launcher)} needs optbench.tune.run_tune (parallel trials through "
                              "Hydra's launcher), which this version lacks; drop it to run the suite sequentially")
        raise ConfigError("suite: run_tune is available but the suite's adapter still calls tune(); "
                          "switch tune_workload in optbench/suite/run.py to it")
    record = tune_mod.tune(optimizers, overrides, out_dir, search=search, trials=budget, seeds=seeds)
    out = {"select_metric": record["select_metric"], "mode": record["mode"],
           "overrides": record["overrides"], "optimizers": {}}
    for name in optimizers:
        trials = []
        for i, t in enumerate(record["trials"][name]):
            trials.append({"index": i, "point": t["point"], "status": t["status"], "value": t["value"],
                           "run_dir": str(out_dir / "trials" / name / f"{i:02d}-{tune_mod.point_slug(t['point'])}")})
        best = record["best"][name]["point"]
        chosen = next(t["index"] for t in trials if t["point"] == best)
        finals = [{"seed": r["seed"], "status": r["status"], "run_dir": str(out_dir / "final" / name / f"seed={r['seed']}")}
                  for r in record["final"][name]]
        out["optimizers"][name] = {"trials": trials, "chosen": chosen, "seeds": finals}
    return out


def run_suite(optimizers: list[str], workloads: list[Workload], out_dir: Path, *, budget: int, seeds: int,
              search: str = "sobol", overrides: list[str] = (), launcher: list[str] = ()) -> dict:
    """Every workload in turn; suite.json (the protocol and each workload's record) is rewritten
    after each, so an interrupted suite shows what it had finished."""
    if budget < 1:
        raise ConfigError(f"suite: --budget={budget} is invalid: must be >= 1 (tuning trials per optimizer and workload)")
    if seeds < 1:
        raise ConfigError(f"suite: --seeds={seeds} is invalid: must be >= 1")
    if search not in SEARCHES:
        raise ConfigError(f"suite: --search={search} is invalid; valid choices: {', '.join(SEARCHES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"optimizers": optimizers, "budget": budget, "seeds": seeds, "search": search,
              "overrides": list(overrides), "launcher": list(launcher), "workloads": {}}
    for w in workloads:
        print(f"suite: workload {w.task} ({len(optimizers)} optimizers x ({budget} trials + {seeds} seeds))", flush=True)
        rec = tune_workload(optimizers, [*w.overrides, *overrides], out_dir / "runs" / w.task,
                            budget=budget, seeds=seeds, search=search, launcher=launcher)
        record["workloads"][w.task] = {"group": w.group, "overrides": list(w.overrides), **rec}
        write_record(out_dir, record)
    return record


def write_record(out_dir: Path, record: dict) -> Path:
    from optbench.train.rundir import write_json

    path = out_dir / "suite.json"
    write_json(path, record)
    return path


def read_record(out_dir: Path) -> dict:
    return json.loads((out_dir / "suite.json").read_text())
