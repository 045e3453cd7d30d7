"""logger=wandb: the run's config, per-step metrics, summary and system info in a W&B run.

metrics.jsonl is written beside it whatever happens here (sinks.py), so W&B is a view, never
the record. A multirun's jobs share a group (the sweep directory) and each is named by its
overrides. Without credentials an online run says so in one line and logs offline instead of
prompting or failing; `wandb sync <dir>` uploads it later.
"""

from __future__ import annotations

import math
import netrc
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf

MODES = ("online", "offline", "disabled")
_said_offline = False


def has_credentials() -> bool:
    """An API key in the environment or a netrc entry for the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_mode(mode: str | None) -> str:
    """WANDB_MODE in the environment wins (as in wandb itself); online without credentials -> offline."""
    from optbench.errors import ConfigError

    mode = os.environ.get("WANDB_MODE") or mode or "online"
    if mode == "dryrun":
        mode = "offline"
    if mode not in MODES:
        raise ConfigError(f"wandb.mode={mode!r} is invalid; valid choices: {', '.join(MODES)}")
    if mode == "online" and not has_credentials():
        global _said_offline
        mode = "offline"
        if _said_offline:  # once per process: a multirun's jobs share one
            return mode
        _said_offline = True
        print(
            "optbench: W&B has no credentials (WANDB_API_KEY or `wandb login`); logging offline "
            "instead (upload later with `wandb sync`)",
            file=sys.stderr,
        )
    return mode


def _sweep_group(run_dir: Path) -> str | None:
    """The sweep directory of a Hydra multirun (e.g. '2026-11-21/08-55-36' or 'demo'), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            sweep = Path(hc.sweep.dir)
            return str(sweep.relative_to("multirun")) if sweep.parts[:1] == ("multirun",) else sweep.name
    except Exception:  # not inside a Hydra job (tests, `optbench tune`): no group
        pass
    return None


ID_FILE = "wandb_id"


def run_id(run_dir: Path) -> str:
    """The W&B run id of a run directory: stored there at first start, so a SLURM requeue or a
    resume continues the same W&B run (with resume="allow") instead of opening a second one.
    The first id is a stable hash of the directory's absolute path, so two processes starting the
    same directory at once agree even before the file exists."""
    import hashlib

    run_dir = Path(run_dir)
    path = run_dir / ID_FILE
    try:
        stored = path.read_text().strip()
        if stored and stored.isalnum():
            return stored
    except (OSError, UnicodeDecodeError):
        pass
    rid = "ob" + hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:14]
    try:
        from optbench.train.rundir import atomic_write_text

        atomic_write_text(path, rid + "\n")
    except OSError:  # a read-only directory: the hash alone stays stable
        pass
    return rid


def flatten_record(record: dict, prefix: str) -> dict:
    """{"type": "train", "loss": .., "lr": {"matrix": ..}} -> {"train/loss": .., "train/lr/matrix": ..}."""
    out = {}
    for k, v in record.items():
        if k in ("type", "step"):
            continue
        if isinstance(v, dict):
            out.update(flatten_record(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


class WandbSink:
    def __init__(self, cfg, run_dir: Path):
        from optbench.extras import require

        wandb = require("wandb", "logger=wandb")

        self.run_dir = Path(run_dir)
        w = cfg.logger.get("wandb", {}) or {}
        mode = resolve_mode(w.get("mode"))
        overrides = list(cfg.get("overrides") or [])
        # the run's own config.yaml (written before the sinks) holds the resolved values and versions
        config_file = self.run_dir / "config.yaml"
        config = OmegaConf.to_container(OmegaConf.load(config_file) if config_file.exists() else cfg, resolve=True)
        try:
            self.run = self._init(wandb, w, mode, overrides, config, cfg)
        except Exception as e:  # W&B is a view: its failure must not cost the run (local files go on)
            print(
                f"optbench: W&B could not start ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                "continuing with local files only",
                file=sys.stderr,
            )
            self.run = None

    def _init(self, wandb, w, mode, overrides, config, cfg):
        run = wandb.init(
            id=run_id(self.run_dir),
            resume="allow",  # the same id continues the run after a requeue or resume
            project=w.get("project") or "optbench",
            entity=w.get("entity") or None,
            group=w.get("group") or _sweep_group(self.run_dir),
            name=",".join(overrides) if overrides else str(cfg.get("name", self.run_dir.name)),
            tags=list(w.get("tags") or []),
            config=config,
            mode=mode,
            dir=os.environ.get("WANDB_DIR") or str(self.run_dir),  # system info and files beside the run
            job_type="train",
            reinit="finish_previous",  # several runs in one process (tune, tests)
            settings=wandb.Settings(console="off", silent=True),
        )
        run.define_metric("*", step_metric="step")
        run.config.update({"run_dir": str(self.run_dir)}, allow_val_change=True)
        return run

    def log(self, record: dict) -> None:
        if self.run is None:
            return
        kind = record.get("type", "train")
        data = flatten_record(record, f"{kind}/")
        data["step"] = record.get("step", 0)
        self.run.log(data)

    def summary(self, summary: dict) -> None:
        if self.run is None:
            return
        values = {
            k: v for k, v in flatten_record(summary, "").items() if not (isinstance(v, float) and not math.isfinite(v))
        }
        values.update(
            {
                k: summary[k]
                for k in ("status", "stop_reason", "task", "optimizer", "metric", "mode")
                if summary.get(k) is not None
            }
        )
        values["reached"] = bool(summary.get("reached"))
        self.status = summary.get("status")
        self.run.summary.update(values)  # one record, not one per key

    def close(self) -> None:
        if self.run is None:
            return
        self.run.finish(exit_code=0 if getattr(self, "status", "completed") == "completed" else 1)
