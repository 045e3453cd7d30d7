"""Checkpoints: everything a run needs to continue as if never stopped.

Model, optimizer, grad scaler, averaged weights, every RNG, the data position, the train clock and
the run's bookkeeping; written atomically to checkpoints/last.pt (the previous file stays intact
until the new one is complete) and loaded with weights_only=True.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from optbench.errors import ConfigError

BOOKKEEPING = ("step", "best", "best_step", "last_eval", "target_step", "target_time", "initial_loss")


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def _rng_state(device: torch.device) -> dict:
    state = {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
             "numpy": np.random.get_state()[1].tolist(), "numpy_pos": int(np.random.get_state()[2]),
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def trainer_state(trainer) -> dict:
    state = {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "data": trainer.task.state_dict(),
        "clock": trainer.clock.read(),
        "rng": _rng_state(trainer.device),
        "bookkeeping": {k: getattr(trainer, k) for k in BOOKKEEPING},
    }
    if trainer.averager is not None:
        state["averager"] = trainer.averager.state_dict()
    return state


def save(trainer) -> Path | None:
    if not trainer.dist.is_main:
        return None
    path = checkpoint_path(trainer.run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(trainer_state(trainer), tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(trainer, path: Path) -> None:
    try:
        state = torch.load(path, map_location=trainer.device, weights_only=True)
    except Exception as e:
        raise ConfigError(f"checkpoint {path} is unreadable ({type(e).__name__}); "
                          "delete it or pass trainer.resume=never") from None
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.task.load_state_dict(state["data"])
    trainer.clock.elapsed = float(state["clock"])
    _set_rng_state(state["rng"], trainer.device)
    for k, v in state["bookkeeping"].items():
        setattr(trainer, k, v)
    if trainer.averager is not None and "averager" in state:
        trainer.averager.load_state_dict(state["averager"])


def maybe_resume(trainer) -> Path | None:
    mode = str(trainer.t.resume)
    if mode == "never":
        return None
    path = checkpoint_path(trainer.run_dir) if mode == "auto" else Path(mode)
    if not path.exists():
        if mode != "auto":
            raise ConfigError(f"trainer.resume={mode!r}: no such checkpoint; valid: auto, never, or a path")
        return None
    load(trainer, path)
    return path


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
