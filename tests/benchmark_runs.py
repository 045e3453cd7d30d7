"""Run directories as optbench writes them (summary.json, metrics.jsonl, config.yaml), from hand-made
numbers: the report's benchmark rules are tested on values whose answers are worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import OmegaConf

from optbench.train.rundir import dumps_line, write_json

BENCH = {
    "nanogpt_track3": ("fineweb10B", "val_loss", "min", 3.28),
    "airbench94_muon": ("cifar10", "test_acc", "max", 0.94),
    "airbench94": ("cifar10", "test_acc", "max", 0.94),
}


def write_run(
    d: Path,
    benchmark: str | None,
    evals: dict[int, float],
    *,
    seed: int = 0,
    optimizer: str = "muon",
    lr: float = 0.025,
    status: str = "completed",
    max_steps: int | None = None,
    stop_reason=None,
    task: str | None = None,
    config: dict | None = None,
) -> Path:
    """One run: eval lines at the given steps, train lines in between, the summary the loop would write."""
    name, metric, mode, target = BENCH.get(benchmark, ("fineweb_synthetic", "val_loss", "min", 3.28))
    task = task or name
    d.mkdir(parents=True, exist_ok=True)
    steps = sorted(evals)
    max_steps = max_steps if max_steps is not None else (steps[-1] if steps else 0)
    lines = []
    for i, s in enumerate(steps):
        if s > 0:
            lines.append({"type": "train", "step": s, "samples": s * 8, "time_s": 0.1 * s, "loss": 4.0})
        lines.append({"type": "eval", "step": s, "samples": s * 8, "time_s": 0.1 * s, metric: evals[s]})
    (d / "metrics.jsonl").write_text("".join(dumps_line(x) + "\n" for x in lines))
    final = evals[steps[-1]] if steps and status == "completed" else None
    finite_vals = [v for v in evals.values() if isinstance(v, float) and math.isfinite(v)]
    best = (min if mode == "min" else max)(finite_vals) if finite_vals else None
    summary = {
        "status": status,
        "stop_reason": stop_reason,
        "task": task,
        "optimizer": optimizer,
        "scheduler": "wsd",
        "seed": seed,
        "lr": lr,
        "metric": metric,
        "mode": mode,
        "final_metric": final,
        "best_metric": best,
        "final_eval": {metric: final} if final is not None else None,
        "target": target,
        "reached": best is not None and (best <= target if mode == "min" else best >= target),
        "steps_to_target": None,
        "time_to_target_s": None,
        "steps": steps[-1] if steps else 0,
        "max_steps": max_steps,
        "train_time_s": 1.0,
        "throughput_samples_per_s": 8.0,
        "peak_memory_bytes": 1 << 20,
        "optimizer_state_bytes": 1 << 10,
    }
    if benchmark is not None:
        summary["benchmark"] = benchmark
    write_json(d / "summary.json", summary)
    cfg = {
        "seed": seed,
        "task": {"name": task, "metric": metric, "benchmark": benchmark},
        "optimizer": {"name": optimizer, "lr": lr},
        "trainer": {"max_steps": max_steps},
    }
    cfg = OmegaConf.merge(OmegaConf.create(cfg), OmegaConf.create(config or {}))  # e.g. {"model": {"n_layer": 2}}
    OmegaConf.save(cfg, d / "config.yaml")
    return d
