"""Where metrics go: metrics.jsonl (always, unless logger=none), W&B, the tqdm bar."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm.auto import tqdm

from optbench.train.rundir import dumps_line


class JsonlSink:
    """Appends one JSON object a line and flushes it, so a crash keeps what was written."""

    def __init__(self, path: Path):
        self.file = open(path, "a", buffering=1)

    def log(self, record: dict) -> None:
        self.file.write(dumps_line(record) + "\n")
        self.file.flush()

    def summary(self, summary: dict) -> None:
        pass

    def close(self) -> None:
        self.file.close()


class ProgressBar:
    def __init__(self, total: int, initial: int, enabled: bool, desc: str):
        # in a log file (SLURM, CI) every refresh is a new line: refresh every 30 s there, not 10 times a second
        interactive = sys.stderr.isatty()
        self.bar = tqdm(
            total=total,
            initial=initial,
            disable=not enabled,
            desc=desc,
            dynamic_ncols=True,
            leave=True,
            mininterval=0.1 if interactive else 30.0,
        )

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def show(self, loss: float, lr: float, throughput: float, unit: str) -> None:
        self.bar.set_postfix_str(f"loss={loss:.4f} lr={lr:.3g} {throughput:,.0f} {unit}/s", refresh=False)

    def write(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


def build_sinks(cfg, run_dir: Path) -> list:
    name = cfg.logger.name
    sinks = []
    if name in ("jsonl", "wandb"):
        sinks.append(JsonlSink(run_dir / "metrics.jsonl"))
    if name == "wandb":
        from optbench.train.wandb_sink import WandbSink

        sinks.append(WandbSink(cfg, run_dir))
    return sinks
