"""Time per step of optbench's training loop against a bare PyTorch loop (target: ratio <= 1.05).

Both loops train the same model from the same initial weights with the same optimizer, each
drawing its batches from the task's own data pipeline (the same loader, same seed, same batches:
the optbench side from the trainer's stream, the bare side from a fresh stream of that pipeline),
so the ratio isolates what the harness adds per step (lr schedule, logging, clock, progress bar,
bookkeeping) with the data pipeline's cost on both sides. Rounds alternate between the two loops;
medians are reported.

Data is generated (synthetic) or looked for under $OPTBENCH_DATA when it is set, else under a cache
directory, never in the checkout: $XDG_CACHE_HOME/optbench/bench (~/.cache/optbench/bench); a
`data.root=...` override wins.

    python scripts/bench_overhead.py [--steps 100] [--rounds 16] [--device cpu|cuda] [overrides...]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

from optbench.config import compose
from optbench.optim import build_optimizer_from_config
from optbench.train.clock import synchronize
from optbench.train.loop import Trainer


def make_trainer(overrides: list[str], run_dir: Path) -> Trainer:
    from omegaconf import open_dict

    cfg = compose(overrides)
    with open_dict(cfg):
        cfg.pop("hydra")
    return Trainer(cfg, run_dir)


def bench_data_root() -> Path:
    """Where benchmark data lives: a cache directory, so a run from the repository root writes no
    data/ (the data yamls' roots are ${oc.env:OPTBENCH_DATA,data}/...)."""
    if os.environ.get("OPTBENCH_DATA"):
        return Path(os.environ["OPTBENCH_DATA"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "optbench" / "bench"


def bare_loop(model, optimizer, loss_fn, batches, steps: int, device) -> float:
    """What a researcher would write by hand: next batch from the loader, forward, backward, step
    (the task's loss: cross-entropy for every task here)."""
    model.train()
    synchronize(device)
    start = time.perf_counter()
    for micro_batches in itertools.islice(batches, steps):
        for batch in micro_batches:
            loss_fn(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    os.environ["OPTBENCH_DATA"] = str(bench_data_root())
    overrides = [
        f"trainer.max_steps={args.steps}",
        f"trainer.eval_every={args.steps}",
        f"trainer.device={args.device}",
        "trainer.progress=true",
        "logger=jsonl",
        "optimizer=adamw",
        *args.overrides,
    ]

    with tempfile.TemporaryDirectory() as tmp:
        probe = make_trainer(overrides, Path(tmp) / "probe")
        init_state = copy.deepcopy(probe.model.state_dict())
        device = probe.device
        seed = int(probe.cfg.seed)
        ours, bare = [], []

        def run_ours(r: int) -> float:
            trainer = make_trainer(overrides, Path(tmp) / f"run{r}")  # its own pipeline, seed cfg.seed
            trainer.model.load_state_dict(init_state)
            summary = trainer.run()
            return summary["train_time_s"] / summary["steps"]

        def fresh_stream():
            if probe.task.make_train_batches is not None:
                return probe.task.make_train_batches(seed)  # the same loader code and seed as the trainer's
            return make_trainer(overrides, Path(tmp) / "stream").task.train_batches

        def run_bare() -> float:
            model = copy.deepcopy(probe.model).to(device)
            model.load_state_dict(init_state)
            optimizer = build_optimizer_from_config(probe.cfg.optimizer, model)
            return bare_loop(model, optimizer, probe.task.loss, fresh_stream(), args.steps, device)

        run_ours(-1), run_bare()  # warm-up round (allocator, caches), discarded
        for r in range(args.rounds):
            # alternate who goes first so neither loop always runs on warmer caches
            if r % 2:
                bare.append(run_bare())
                ours.append(run_ours(r))
            else:
                ours.append(run_ours(r))
                bare.append(run_bare())

    ratio = statistics.median(ours) / statistics.median(bare)
    print(
        f"device: {device}  model: {probe.cfg.model.name}  batch: {probe.cfg.trainer.batch_size}  "
        f"steps: {args.steps} x {args.rounds} rounds"
    )
    print(
        f"bare PyTorch loop : {statistics.median(bare) * 1e3:8.3f} ms/step  (rounds: "
        + ", ".join(f"{t * 1e3:.2f}" for t in bare)
        + ")"
    )
    print(
        f"optbench loop     : {statistics.median(ours) * 1e3:8.3f} ms/step  (rounds: "
        + ", ".join(f"{t * 1e3:.2f}" for t in ours)
        + ")"
    )
    print(f"overhead ratio    : {ratio:.3f}  (target <= 1.05: {'OK' if ratio <= 1.05 else 'ABOVE TARGET'})")


if __name__ == "__main__":
    main()
