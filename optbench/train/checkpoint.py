"""Checkpoints: everything a run needs to continue as if it had never stopped.

Model, optimizer (every rank's share when its state is sharded), grad scaler, averaged weights,
every RNG of every rank, the data position, the train clock and the run's bookkeeping (incl. the
partial loss sum since the last metrics line, so the resumed metrics lines are identical).

On disk: checkpoints/last.pt, and the one before it as checkpoints/prev.pt. A file is written to a
temporary name, fsynced and renamed, so a crash at any point leaves at least one whole checkpoint.
The state is serialised, hashed (SHA-256) and stored as a byte tensor next to its digest: torch.load
notices a torn zip but not flipped bits in tensor data, and the digest catches both. Everything is
loaded with weights_only=True. What happens with a bad checkpoint is `trainer.on_bad_checkpoint`:
previous (fall back to prev.pt) | stop (exit with the reason) | restart (from step 0).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from optbench.config import ON_BAD_CHECKPOINT_CHOICES as ON_BAD_CHOICES
from optbench.errors import ConfigError

FORMAT = 1
BOOKKEEPING = (
    "step",
    "best",
    "best_step",
    "last_eval",
    "target_step",
    "target_time",
    "initial_loss",
    "loss_sum",
    "steps_since_log",
    "status",
    "stop_reason",
    "compile_warmup_s",
    "extensions",
)


# What defines a run's trajectory: resuming under other values would silently train with the checkpoint's
# (optimizer state carries its lr and betas) or mix two runs in one directory. max_steps may grow.
RUN_DEFINING = (
    "seed",
    "task",
    "model",
    "optimizer",
    "scheduler",
    "data",
    "trainer.batch_size",
    "trainer.grad_accum",
    "trainer.grad_clip",
    "trainer.amp",
    "trainer.averaging",
)
NOT_RUN_DEFINING = ("data.root",)  # the data may move


def run_definition(cfg) -> dict:
    from omegaconf import OmegaConf

    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif prefix not in NOT_RUN_DEFINING:
            flat[prefix] = value

    for key in RUN_DEFINING:
        value = OmegaConf.select(cfg, key)
        walk(key, OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value)
    if "trainer.amp" in flat:  # YAML's bare `off` is false, the command line's is 'off': one value
        from optbench.config import amp_mode

        flat["trainer.amp"] = amp_mode(flat["trainer.amp"])
    return flat


def check_same_run(saved: dict | None, cfg, path: Path) -> None:
    if saved is None:
        return
    now = run_definition(cfg)
    # the most telling difference first: optimizer.name=sgd rather than one of AdamW's betas
    for key in sorted(set(saved) | set(now), key=lambda k: (not k.endswith(".name"), k)):
        if saved.get(key) != now.get(key):
            raise ConfigError(
                f"checkpoint {path} was made with {key}={saved.get(key)!r}, this run has "
                f"{key}={now.get(key)!r}; rerun with the same values, use another "
                "hydra.run.dir, or pass trainer.resume=never"
            )


class BadCheckpoint(ConfigError):
    """A checkpoint file that is unreadable, fails its digest, or does not fit this run."""


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def previous_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "prev.pt"


# --------------------------------------------------------------------------- RNG
def _rng_state(device: torch.device) -> dict:
    _, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": list(py_state),
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(
        (
            "MT19937",
            state["numpy"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------- gathering ranks
def _optimizer_is_sharded(optimizer) -> bool:
    """An optimizer whose state differs between ranks (e.g. a distributed Muon that keeps each
    parameter's momentum only on its owner rank) says so with `state_is_sharded = True`."""
    return bool(getattr(optimizer, "state_is_sharded", False))


def _gather(obj, dist_info) -> list:
    """Every rank's `obj`, on every rank (a list indexed by rank)."""
    if not dist_info.enabled:
        return [obj]
    import torch.distributed as dist

    out = [None] * dist_info.world_size
    dist.all_gather_object(out, obj)
    return out


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def trainer_state(trainer) -> dict:
    """The checkpoint's content. Collective under DDP: every rank must call it."""
    sharded = _optimizer_is_sharded(trainer.optimizer)
    per_rank = {"rng": _rng_state(trainer.device), "data": trainer.task.state_dict()}
    if sharded:
        per_rank["optimizer"] = _to_cpu(trainer.optimizer.state_dict())
    ranks = _gather(_to_cpu(per_rank), trainer.dist)
    state = {
        "format": FORMAT,
        "world_size": trainer.dist.world_size,
        "model": trainer.model.state_dict(),
        "optimizer": None if sharded else trainer.optimizer.state_dict(),
        "optimizer_sharded": sharded,
        "scaler": trainer.scaler.state_dict(),
        "clock": trainer.clock.read(),
        "ranks": ranks,
        "bookkeeping": {k: _to_cpu(getattr(trainer, k, None)) for k in BOOKKEEPING},
        "run_definition": run_definition(trainer.cfg),
        "max_steps": int(trainer.t.max_steps),  # a resume under another length is refused or recorded
    }
    if trainer.averager is not None:
        state["averager"] = trainer.averager.state_dict()
    if callable(getattr(trainer.schedule, "state_dict", None)):  # metric-driven schedules (plateau)
        state["schedule"] = trainer.schedule.state_dict()
    return state


# --------------------------------------------------------------------------- files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class NoSpaceLeft(OSError):
    """The disk filled up while a checkpoint was written: one line naming the directory, instead of
    torch's `[enforce fail at inline_container.cc] . unexpected pos`."""

    def __str__(self) -> str:
        return str(self.strerror)


def _disk_full(e: BaseException, where: Path, needed: int) -> bool:
    """ENOSPC/EDQUOT from our own writes, or torch's zip writer failing (it reports a short write as
    a RuntimeError) while the disk has less room than the checkpoint needs."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(e, RuntimeError) and ("inline_container" in str(e) or "file write failed" in str(e)):
        import shutil

        try:
            return shutil.disk_usage(where).free < 2 * needed
        except OSError:
            return True
    return False


def write_checkpoint(state: dict, path: Path) -> None:
    """Atomically write `state` (hashed) to `path`, keeping the file it replaces as prev.pt."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getbuffer()
    envelope = {
        "format": FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(payload, dtype=torch.uint8),
    }  # shares buf's memory
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(envelope, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # the checkpoints already there stay as they were
        if _disk_full(e, path.parent, len(payload)):
            raise NoSpaceLeft(
                errno.ENOSPC,
                f"no space left on {path.parent} while writing checkpoint "
                f"{path.name} ({len(payload) / 2**20:.1f} MiB); the checkpoints "
                "already there are kept",
                str(path.parent),
            ) from None
        raise
    # from here on a crash leaves prev.pt, last.pt or both complete: never neither
    if path.exists():
        os.replace(path, path.with_name("prev.pt"))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_checkpoint(path: Path, device: torch.device) -> dict:
    """The state in `path`, or BadCheckpoint with one line saying what is wrong."""
    try:
        envelope = torch.load(path, map_location="cpu", weights_only=True)
        payload = envelope["payload"].numpy().tobytes()
        digest = envelope["sha256"]
    except Exception as e:
        raise BadCheckpoint(
            f"checkpoint {path} is unreadable ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else 'truncated or not a checkpoint'})"
        ) from None
    if hashlib.sha256(payload).hexdigest() != digest:
        raise BadCheckpoint(f"checkpoint {path} is corrupted (SHA-256 mismatch)")
    try:
        return torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
    except Exception as e:
        raise BadCheckpoint(f"checkpoint {path} is unreadable ({type(e).__name__})") from None


def save(trainer) -> Path | None:
    """Collective under DDP (gathers every rank's RNG, data and sharded optimizer state);
    only rank 0 writes. Returns the path written on rank 0."""
    state = trainer_state(trainer)
    if not trainer.dist.is_main:
        return None
    path = checkpoint_path(trainer.run_dir)
    write_checkpoint(state, path)
    return path


# --------------------------------------------------------------------------- run length
def _saved_max_steps(run_dir: Path):
    """trainer.max_steps of the run's last start (config.yaml), for checkpoints older than the key."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(OmegaConf.load(Path(run_dir) / "config.yaml"), "trainer.max_steps")
    except Exception:
        return None


def check_length(old, new: int, step, extend: bool, where) -> bool:
    """Resuming a run of trainer.max_steps=old, now at `step`, under max_steps=new. Every schedule
    (lr, momentum, SWA start, late evaluations) is a function of max_steps, so another length splices
    two schedules: refused unless trainer.extend=true. Returns whether the run is being extended."""
    if step is not None and new < step:
        raise ConfigError(
            f"trainer.max_steps={new} is below step {step} of the run in {where}: a run cannot "
            "be shortened past where it is; use another hydra.run.dir or trainer.resume=never"
        )
    if old is None or int(old) == int(new):
        return False
    if not extend:
        at = f" at step {step}" if step is not None else ""
        raise ConfigError(
            f"{where} holds a run of trainer.max_steps={old}{at}; trainer.max_steps={new} would "
            "splice a second lr schedule onto it; pass trainer.extend=true to extend it on "
            "purpose (recorded in summary.json), or use another hydra.run.dir"
        )
    return True


def check_run_dir_length(cfg, run_dir: Path) -> None:
    """The same check from the run directory's files, before anything is written into it (Hydra's
    .hydra/ included): the max_steps of its last start (config.yaml) and the step it reached
    (summary.json). A finished run without a checkpoint cannot be extended at all."""
    import json

    run_dir = Path(run_dir)
    if str(cfg.trainer.resume) != "auto" or not (run_dir / "config.yaml").exists():
        return
    old = _saved_max_steps(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    # a finished run's last checkpoint is at its last step; an unfinished one's may be behind the
    # summary (a crash after it): that step is checked against the checkpoint itself, in apply
    step = (
        summary.get("steps") if isinstance(summary.get("steps"), int) and summary.get("status") == "completed" else None
    )
    has_checkpoint = checkpoint_path(run_dir).exists() or previous_path(run_dir).exists()
    if not has_checkpoint and summary.get("status") != "completed":
        return  # nothing to resume: the run starts over (an unfinished run without a checkpoint)
    extend = bool(cfg.trainer.get("extend", False))
    if has_checkpoint:
        check_length(old, int(cfg.trainer.max_steps), step, extend, str(run_dir))
    elif old is not None and int(old) != int(cfg.trainer.max_steps):
        how = (
            "it has no checkpoint to continue from (trainer.save_final=true keeps one)"
            if extend
            else "a rerun would overwrite it"
        )
        raise ConfigError(
            f"{run_dir} holds a finished run of trainer.max_steps={old} and this run has "
            f"trainer.max_steps={cfg.trainer.max_steps}: {how}; use another hydra.run.dir, "
            "or trainer.resume=never to overwrite it"
        )


def extension_record(trainer, old: int, step: int) -> dict:
    """What summary.json and config.yaml record of an extension: where it happened, both lengths and
    the lr multiplier at that step under the old and the new schedule (the splice's jump)."""
    from optbench.schedules import build_schedule_from_config

    record = {"from_step": int(step), "old_max_steps": int(old), "new_max_steps": int(trainer.t.max_steps)}
    if not hasattr(trainer.schedule, "observe"):  # a metric-driven schedule has no fixed value at a step
        before = build_schedule_from_config(trainer.cfg.scheduler, int(old))
        record["lr_mult_old_schedule"] = float(before(step))
        record["lr_mult_new_schedule"] = float(trainer.schedule(step))
    return record


def apply(trainer, state: dict, path: Path) -> None:
    """Restore a trainer from a checkpoint's state."""
    check_same_run(state.get("run_definition"), trainer.cfg, path)
    step = state["bookkeeping"].get("step")
    old = state.get("max_steps") or _saved_max_steps(Path(path).parent.parent)
    extension = None
    if check_length(old, int(trainer.t.max_steps), step, bool(trainer.t.get("extend", False)), f"checkpoint {path}"):
        extension = extension_record(trainer, old, step)
    rank, world = trainer.dist.rank, trainer.dist.world_size
    if state.get("optimizer_sharded") and state.get("world_size") != world:
        raise BadCheckpoint(
            f"checkpoint {path} holds optimizer state sharded over "
            f"{state.get('world_size')} ranks; resume it with trainer.nproc="
            f"{state.get('world_size')} (this run has {world})"
        )
    try:
        trainer.model.load_state_dict(state["model"])
        mine = state["ranks"][rank] if rank < len(state["ranks"]) else state["ranks"][0]
        trainer.optimizer.load_state_dict(mine["optimizer"] if state.get("optimizer_sharded") else state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise BadCheckpoint(
            f"checkpoint {path} does not fit this run's model/optimizer "
            f"({str(e).splitlines()[0][:160]}); pass trainer.resume=never or another "
            "hydra.run.dir"
        ) from None
    for g in trainer.optimizer.param_groups:
        g.setdefault("base_lr", g["lr"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.task.load_state_dict(mine["data"])
    trainer.clock.elapsed = float(state["clock"])
    _set_rng_state(mine["rng"], trainer.device)
    for k, v in state["bookkeeping"].items():
        if k == "loss_sum" and v is not None:
            v = v.to(trainer.device)
        setattr(trainer, k, v)
    trainer.extensions = list(trainer.extensions or [])  # checkpoints older than the key hold None
    if extension is not None:
        trainer.extensions.append(extension)
    if trainer.averager is not None and "averager" in state:
        trainer.averager.load_state_dict(state["averager"])
    if "schedule" in state and callable(getattr(trainer.schedule, "load_state_dict", None)):
        trainer.schedule.load_state_dict(state["schedule"])


def _warn(trainer, message: str) -> None:
    if trainer.dist.is_main:
        print(f"optbench: warning: {message}", file=sys.stderr, flush=True)


def maybe_resume(trainer) -> Path | None:
    """trainer.resume: auto (last.pt, else prev.pt, in this run dir) | never | a checkpoint path.

    Returns the checkpoint resumed from, or None for a fresh start. Every rank reads the file
    itself (the run dir is shared), so all ranks reach the same decision."""
    mode = str(trainer.t.resume)
    on_bad = str(trainer.t.get("on_bad_checkpoint", "previous"))
    if on_bad not in ON_BAD_CHOICES:
        raise ConfigError(
            f"trainer.on_bad_checkpoint={on_bad!r} is invalid; valid choices: {', '.join(ON_BAD_CHOICES)}"
        )
    if mode == "never":
        return None
    if mode == "auto":
        candidates = [p for p in (checkpoint_path(trainer.run_dir), previous_path(trainer.run_dir)) if p.exists()]
    else:
        path = Path(mode)
        if not path.is_file():
            raise ConfigError(
                f"trainer.resume={mode!r}: no such checkpoint; valid: auto, never, or the path of a checkpoint file"
            )
        candidates = [path]
        if path.name == "last.pt" and path.with_name("prev.pt").exists():
            candidates.append(path.with_name("prev.pt"))
    bad: BadCheckpoint | None = None
    for path in candidates:
        try:
            state = read_checkpoint(path, trainer.device)
        except BadCheckpoint as e:
            if on_bad == "stop":
                raise BadCheckpoint(f"{e}; refusing to resume (trainer.on_bad_checkpoint=stop)") from None
            if on_bad == "restart":
                _warn(trainer, f"{e}; starting from step 0 (trainer.on_bad_checkpoint=restart)")
                return None
            bad = e
            if path != candidates[-1]:  # the last candidate's failure is said once, by the error below
                _warn(trainer, f"{e}; trying the previous checkpoint")
            continue
        apply(trainer, state, path)
        if bad is not None or path != candidates[0]:
            _warn(trainer, f"resumed from {path} at step {trainer.step}")
        return path
    if bad is not None:
        raise BadCheckpoint(
            f"{bad}, and no good previous checkpoint; pass trainer.resume=never "
            "or trainer.on_bad_checkpoint=restart to start over"
        )
    return None


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep the metrics lines up to `step` (a resumed run rewrites what came after)."""
    import json

    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            break  # a torn last line from a crash
    from optbench.train.rundir import atomic_write_text

    atomic_write_text(path, "".join(f"{ln}\n" for ln in kept))
