"""`trainer.nproc=N`: relaunch this very command under torchrun (N local processes)."""
from __future__ import annotations

import os
import sys

from omegaconf import DictConfig


def maybe_relaunch_under_torchrun(cfg: DictConfig, argv: list[str]) -> None:
    nproc = int(cfg.trainer.nproc)
    if nproc <= 1 or "LOCAL_RANK" in os.environ:
        return
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "optbench.cli", "train", *argv]
    raise SystemExit(subprocess.call(cmd))
