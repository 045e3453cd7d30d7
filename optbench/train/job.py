"""One Hydra job: validate, train into Hydra's output dir, and turn failures into a recorded status.

In a multirun a diverged or failed run is a result, not a crash: the sweep goes on.
Under DDP every rank runs this; rank 0's output dir is the run dir of all of them (Hydra's
${now:...} may name it differently on each rank when torchrun is started by hand), and only
rank 0 prints results.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from optbench.errors import ConfigError


def _hydra_context() -> tuple[Path, bool, list[str]]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return Path(hc.runtime.output_dir), hc.mode == RunMode.MULTIRUN, list(hc.overrides.task)


def run_job(cfg: DictConfig) -> float | None:
    from optbench.config import validate
    from optbench.train import runlock
    from optbench.train.distributed import DistInfo, barrier, destroy_process_group
    from optbench.train.loop import train
    from optbench.train.rundir import write_failed_summary

    run_dir, multirun, overrides = _hydra_context()
    dist = DistInfo.from_env()
    try:
        run_dir = _same_run_dir_on_every_rank(cfg, run_dir, dist)
        with runlock.hold(run_dir, dist):  # re-entered when commands/train.main locked it before Hydra
            try:
                validate(cfg, world_size=dist.world_size)
                _refuse_to_overwrite_another_run(cfg, run_dir)
                with open_dict(cfg):
                    cfg.overrides = overrides
                summary = train(cfg, run_dir, dist)
            except Exception as e:  # held by us: a failure before the loop's summary leaves one
                if dist.is_main:
                    write_failed_summary(run_dir, cfg, e)
                raise
        barrier()  # rank 0 hosts the store: leaving before the others are done aborts them
    except ConfigError as e:
        if dist.is_main:  # every rank hits the same config error: say it once
            print(f"optbench: error: {e}", file=sys.stderr)
        _record(run_dir, "failed" if not isinstance(e, runlock.RunDirLocked) else "locked", dist)
        if multirun:
            return None
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise
    except Exception as e:  # recorded in summary.json; the sweep continues
        where = "" if dist.is_main else f" (rank {dist.rank})"
        print(f"optbench: run failed in {run_dir}{where}: {type(e).__name__}: {e}", file=sys.stderr)
        _record(run_dir, "failed", dist)
        if multirun:
            return None
        raise SystemExit(1) from None
    finally:
        # the jobs of a multirun under torchrun share one process group: creating a second one
        # on the same rendezvous store would hang; it ends with the process
        if not multirun:
            destroy_process_group()
    if dist.is_main:
        _print_result(summary, run_dir)
    _record(run_dir, summary["status"], dist)
    if summary["status"] == "interrupted":  # a stop signal stops the whole sweep, not just this job
        raise SystemExit(_interrupted_status(summary, multirun))
    return sweep_objective(summary)


def sweep_objective(summary: dict) -> float | None:
    """The job's return value, which a sweeper (Optuna, Nevergrad) optimises: the final metric of a
    completed run; None for a run that diverged, failed or ended in NaN, which the Optuna sweeper
    records as a failed trial (a diverged run's last evaluation before it blew up would look good)."""
    import math

    value = summary.get("final_metric")
    if summary.get("status") != "completed" or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


# (run dir, status) of each job this process ran: commands/train.main counts a sweep's failures from it
OUTCOMES: list[tuple[Path, str]] = []


def _record(run_dir: Path, status: str, dist) -> None:
    if dist.is_main:
        OUTCOMES.append((Path(run_dir), status))


def _interrupted_status(summary: dict, multirun: bool) -> int:
    """A sweep stopped by SIGTERM exits 143, as a shell reports a process the signal ended, so a
    script can tell it from a finished sweep. A single run exits 0 (its summary says interrupted;
    torchrun's parent relies on it), and so do the SLURM/submitit warning signals (USR1/USR2),
    whose handler requeues the job."""
    import signal

    if multirun and "SIGTERM" in str(summary.get("stop_reason") or ""):
        return 128 + signal.SIGTERM
    return 0


def _refuse_to_overwrite_another_run(cfg: DictConfig, run_dir: Path) -> None:
    """A run dir that already holds a finished run of another configuration, and no checkpoint
    (which has its own check when resumed), would be overwritten: refuse instead, in one line."""
    from omegaconf import OmegaConf

    from optbench.train import checkpoint as ckpt

    saved = run_dir / "config.yaml"
    if (
        str(cfg.trainer.resume) == "never"
        or not (run_dir / "summary.json").exists()
        or not saved.exists()
        or ckpt.checkpoint_path(run_dir).exists()
    ):
        return
    if _failed_before_training(run_dir / "summary.json"):  # nothing there to lose: a fixed rerun goes ahead
        return
    before, now = ckpt.run_definition(OmegaConf.load(saved)), ckpt.run_definition(cfg)
    # the most telling difference first: optimizer.name=adamw rather than one of AdamW's betas
    for key in sorted(set(before) | set(now), key=lambda k: (not k.endswith(".name"), k)):
        if before.get(key) != now.get(key):
            raise ConfigError(
                f"{run_dir} already holds a run made with {key}={before.get(key)!r}, this run "
                f"has {key}={now.get(key)!r}; use another hydra.run.dir, or pass "
                "trainer.resume=never to overwrite it"
            )


def _failed_before_training(summary_path: Path) -> bool:
    import json

    try:
        s = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(s, dict) and s.get("status") == "failed" and not s.get("steps")


def _same_run_dir_on_every_rank(cfg: DictConfig, run_dir: Path, dist) -> Path:
    if not dist.enabled:
        return run_dir
    from optbench.train.distributed import broadcast_object, init_process_group, select_device

    init_process_group(dist, select_device(cfg.trainer.device, dist.local_rank))
    shared = Path(broadcast_object(str(run_dir.resolve())))
    if shared != run_dir.resolve():
        try:
            run_dir.rmdir()  # the empty dir Hydra made from this rank's own clock
        except OSError:
            pass
    return shared


def open_dict(cfg):
    from omegaconf import open_dict as _open_dict

    return _open_dict(cfg)


def _print_result(s: dict, run_dir: Path) -> None:
    metric = s["metric"]
    final = s.get("final_metric")
    parts = [
        f"{s['status']}: {s['task']} {s['optimizer']} seed={s['seed']}",
        f"{metric}={final:.4f}" if isinstance(final, float) else f"{metric}=n/a",
        f"steps={s['steps']}",
        f"train_time={s['train_time_s']:.2f}s",
    ]
    if s.get("target") is not None:
        parts.append(
            f"target {s['target']} "
            + (
                f"reached at step {s['steps_to_target']} ({s['time_to_target_s']:.2f}s)"
                if s["reached"]
                else "not reached"
            )
        )
    if s.get("stop_reason"):
        parts.append(f"({s['stop_reason']})")
    print("  ".join(parts) + f"\n  -> {run_dir}", flush=True)
