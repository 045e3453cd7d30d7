"""`trainer.nproc=N`: relaunch this very command under torchrun (N local processes).

The parent resolves the output directory once and hands it to every rank: Hydra names it with
${now:...}, which two ranks starting a second apart would resolve differently. Ranks other than 0
get Hydra's own file output (.hydra/, app.log) switched off, so only rank 0 writes files.
Multi-node runs use torchrun directly (see README); job.py then aligns the run dir on rank 0's.
"""

from __future__ import annotations

import os
import sys

from omegaconf import DictConfig, OmegaConf

# Hydra's own output on ranks other than 0: none (the loop writes nothing there either).
QUIET_RANK_OVERRIDES = ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


def _has_override(argv: list[str], key: str) -> bool:
    return any(a.lstrip("+~").split("=", 1)[0] == key for a in argv)


def resolved_output_dir(cfg: DictConfig, multirun: bool) -> str:
    """The directory Hydra would create for this command, resolved now (in the parent)."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    return str(OmegaConf.select(cfg, key))


def torchrun_command(cfg: DictConfig, argv: list[str]) -> list[str]:
    multirun = any(a in ("-m", "--multirun") for a in argv)
    args = list(argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if not _has_override(args, key):
        args.append(f"{key}={resolved_output_dir(cfg, multirun)}")
    nproc = int(cfg.trainer.nproc)
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "optbench.cli",
        "train",
        *args,
    ]


def maybe_relaunch_under_torchrun(cfg: DictConfig, argv: list[str]) -> None:
    """In the user's process with nproc > 1: run torchrun and exit with its status.
    In a rank > 0 (under torchrun): append to `argv`, in place, the overrides that switch off
    Hydra's file output, since commands/train.main hands this same list to Hydra."""
    rank = int(os.environ.get("RANK", 0))
    if rank > 0:
        argv.extend(QUIET_RANK_OVERRIDES)
        return
    nproc = int(cfg.trainer.nproc)
    if nproc <= 1 or "LOCAL_RANK" in os.environ:
        return
    env = dict(os.environ)
    # N processes on a machine with N or fewer free cores: one thread each (torchrun's own default)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = torchrun_command(cfg, argv)
    run_dir = next((a.split("=", 1)[1] for a in cmd if a.startswith("hydra.run.dir=")), None)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    summary = None if multirun or run_dir is None else os.path.join(run_dir, "summary.json")
    raise SystemExit(run_forwarding_signals(cmd, env, summary))


def run_forwarding_signals(cmd: list[str], env: dict, summary_path: str | None = None) -> int:
    """Run torchrun; a stop signal sent to us (scancel, preemption, Ctrl-C) goes to torchrun as
    SIGTERM, which passes it to every rank and waits for them: each rank finishes its step, the
    ranks checkpoint together, rank 0 writes summary.json (interrupted), and they exit 0.
    torchrun itself handles SIGTERM but would die of SIGUSR1/2, leaving the ranks orphaned."""
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env)
    stopped = []

    def forward(signum, frame):
        stopped.append(signum)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    status = proc.wait()
    # torchrun reports a failure when told to stop, even when the ranks stopped cleanly
    if stopped and status != 0 and summary_path and _status(summary_path) == "interrupted":
        return 0
    return status


def _status(summary_path: str) -> str | None:
    import json

    try:
        with open(summary_path) as f:
            return json.load(f).get("status")
    except (OSError, ValueError):
        return None
