"""The run directory contract: config.yaml, metrics.jsonl, summary.json (atomic), and git_diff.patch
when the source checkout is dirty. What goes into config.yaml and summary.json is decided here;
the loop hands over its state (RunState)."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from optbench import PACKAGE_DIR, __version__


@contextmanager
def atomic_open(path: Path, mode: str = "wb"):
    """A file that appears at `path` complete or not at all: written to a temporary name in the same
    directory (unique per process: parallel jobs may race), fsynced, renamed; removed on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan" / "inf": strict JSON has no such numbers
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def dumps_line(obj: dict) -> str:
    return json.dumps(_jsonable(obj), separators=(",", ":"))


# The checkout optbench runs from (an editable install); for a wheel it is site-packages, which is
# no checkout of ours even when a virtual environment sits inside some git work tree.
SOURCE_DIR = PACKAGE_DIR.parent
GIT_DIFF = "git_diff.patch"  # in the run dir when the source checkout has uncommitted changes


def _git(*args: str, text: bool = True):
    """git's output in SOURCE_DIR, or None where git fails or is missing."""
    try:
        out = subprocess.run(["git", "-C", str(SOURCE_DIR), *args], capture_output=True, text=text, timeout=10)
    except (OSError, subprocess.SubprocessError, ValueError):  # ValueError: output not in the locale's encoding
        return None
    return out.stdout if out.returncode == 0 else None


def source_checkout() -> bool:
    """Whether SOURCE_DIR is the top of a git work tree (not a folder inside someone else's)."""
    top = _git("rev-parse", "--show-toplevel")
    return bool(top) and Path(top.strip()).resolve() == Path(SOURCE_DIR).resolve()


def git_commit() -> str | None:
    """The source checkout's commit, `-dirty` when tracked files have uncommitted changes."""
    if not source_checkout():
        return None
    head = _git("rev-parse", "HEAD")
    if head is None:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return head.strip() + ("-dirty" if dirty and dirty.strip() else "")


def git_diff() -> bytes | None:
    """`git diff HEAD` of the source checkout (the uncommitted changes to tracked files, staged or
    not: what a `-dirty` commit leaves unsaid), as bytes (a patch need not be UTF-8); None when the
    tree is clean or optbench does not run from a checkout."""
    if not source_checkout():
        return None
    diff = _git("diff", "HEAD", "--no-color", "--no-ext-diff", text=False)  # the user's git config aside
    return diff if diff and diff.strip() else None


def save_git_diff(run_dir: Path) -> str | None:
    """Write git_diff.patch into the run dir when the tree is dirty and return its name; when clean,
    remove one an earlier start of this run left (config.yaml describes the latest start)."""
    path = Path(run_dir) / GIT_DIFF
    diff = git_diff()
    if diff is None:
        path.unlink(missing_ok=True)
        return None
    with atomic_open(path, "wb") as f:
        f.write(diff)
    return GIT_DIFF


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name: float results on the CPU reproduce bit-exactly only on the same model
    (vector width and BLAS kernels differ), so it belongs beside the thread count."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability() -> str | None:
    """The vector ISA torch's CPU kernels dispatch to (e.g. AVX512, AVX2, DEFAULT)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # older builds lack it
        return None


def _build_setting(name: str) -> str | None:
    m = re.search(rf"\b{name}=([^,\s]+)", torch.__config__.show())
    return m.group(1) if m else None


def blas_backend() -> str | None:
    """The BLAS torch was built with (e.g. mkl, open): matmul results depend on its kernels."""
    try:
        return _build_setting("BLAS_INFO")
    except Exception:
        return None


def parallel_backend() -> str | None:
    """ATen's intra-op parallel backend (OpenMP, native thread pool, TBB), from parallel_info()."""
    try:
        m = re.search(r"ATen parallel backend:\s*(.+)", torch.__config__.parallel_info())
        return m.group(1).strip() if m else None
    except Exception:
        return None


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "hydra-core", "omegaconf", "schedulefree", "pytorch-optimizer", "wandb", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def environment(device: torch.device, world_size: int) -> dict:
    return {
        "optbench": __version__,
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "device": device.type,
        "device_name": device_name(device),
        "world_size": world_size,
        # CPU float reductions depend on it: the same seed reproduces exactly only at the same count
        "cpu_threads": torch.get_num_threads(),
        "cpu_interop_threads": torch.get_num_interop_threads(),
        "cpu_model": cpu_model(),
        "cpu_capability": cpu_capability(),
        "blas": blas_backend(),
        "parallel_backend": parallel_backend(),
        # the thread variables as set when the run started (None: unset, the library's default)
        "thread_env": {k: os.environ.get(k) for k in THREAD_ENV},
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "hostname": platform.node(),
        "packages": package_versions(),
    }


def base_lr_by_role(optimizer) -> dict:
    """Each param group's lr before any schedule (batch-size scaling applied), by role."""
    from optbench.optim.groups import group_name

    return {group_name(g, i): g["base_lr"] for i, g in enumerate(optimizer.param_groups)}


def write_config(run_dir: Path, cfg, resolved: dict, device: torch.device, world_size: int, extensions: list) -> None:
    """config.yaml: the composed config as resolved (Hydra's own keys left out), what the run derived
    from it (`resolved`), the versions it ran with, and its extensions (trainer.extend). Also
    git_diff.patch, when the source checkout is dirty; versions.git_diff names it (null: none)."""
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("hydra", None)
    out["resolved"] = resolved
    out["versions"] = {**environment(device, world_size), "git_diff": save_git_diff(run_dir)}
    if extensions:  # the run's max_steps was changed on purpose (trainer.extend=true)
        out["extensions"] = extensions
    atomic_write_text(Path(run_dir) / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(out)))


@dataclass(frozen=True)
class RunState:
    """What the loop knows when it writes the summary: where the run stands (checkpointed state)
    and the few numbers it derived at the start. The rest of the summary comes from the config,
    the task, the model, the optimizer and the device."""

    status: str  # running | completed | diverged | interrupted | failed
    stop_reason: str | None  # why a run ended other than by completing (None: it did not stop early)
    steps: int
    train_time_s: float  # the train clock (trainer.clock_includes says what it covers)
    compile_warmup_s: float
    best: float | None  # best value of the task's metric, and its step
    best_step: int | None
    last_eval: dict | None  # the latest evaluation's metrics
    target_step: int | None  # first evaluation that reached the task's target, and its train time
    target_time: float | None
    extensions: list  # trainer.extend records
    lr_scale: float  # optimizer.lr_scaling's factor at this batch size
    clock_includes: tuple
    peak_flops: float | None  # the device's, for MFU (None: unknown)
    git_diff: str | None  # GIT_DIFF when the run dir holds it


def build_summary(cfg, task, model, optimizer, device: torch.device, world_size: int, state: RunState) -> dict:
    """summary.json's fields (docs/design.md lists them); task.summary_extra adds the task's own."""
    from optbench.train.budget import stopped_by
    from optbench.train.memory import optimizer_state_bytes, peak_memory
    from optbench.train.mfu import mfu

    train_time = state.train_time_s
    peak, peak_kind = peak_memory(device)
    tokens = task.tokens_per_step
    samples = state.steps * task.samples_per_step
    tokens_per_s = state.steps * tokens / train_time if tokens and train_time > 0 else None
    return {
        "status": state.status,
        "stop_reason": state.stop_reason,
        "stopped_by": stopped_by(state.status, state.stop_reason),  # which budget or event ended it
        "task": cfg.task.name,
        "optimizer": cfg.optimizer.name,
        "scheduler": cfg.scheduler.name,
        "seed": cfg.seed,
        "lr": cfg.optimizer.lr * state.lr_scale,  # the lr used: batch-size scaling applied
        "lr_scale": state.lr_scale,
        "lr_by_role": base_lr_by_role(optimizer),
        "metric": task.metric,
        "mode": task.mode,
        "final_metric": state.last_eval.get(task.metric) if state.last_eval else None,
        "best_metric": state.best,
        "best_step": state.best_step,
        "final_eval": state.last_eval,
        "target": task.target,
        "reached": state.target_step is not None,
        "time_to_target_s": state.target_time,
        "steps_to_target": state.target_step,
        "steps": state.steps,
        "max_steps": cfg.trainer.max_steps,
        "extensions": state.extensions,
        "samples_seen": samples,
        "tokens_seen": state.steps * tokens if tokens else None,
        "train_time_s": train_time,
        "clock_includes": list(state.clock_includes),
        "compile_warmup_s": state.compile_warmup_s,
        "throughput_samples_per_s": samples / train_time if train_time > 0 else None,
        "throughput_tokens_per_s": tokens_per_s,
        # model FLOPs utilisation over all ranks (train/mfu.py); None without a known peak
        "mfu": mfu(tokens_per_s, task.flops_per_token, state.peak_flops, world_size),
        "peak_flops": state.peak_flops,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "param_count": sum(p.numel() for p in model.parameters()),
        "optimizer_state_bytes": optimizer_state_bytes(optimizer),
        "batch_size": cfg.trainer.batch_size,
        "benchmark": cfg.task.get("benchmark"),
        "loss_reduction": task.loss_reduction,
        "environment": {**environment(device, world_size), "git_diff": state.git_diff},
        **task.summary_extra,
    }


def write_failed_summary(run_dir: Path, cfg, error: BaseException) -> bool:
    """A job that failed before the loop wrote its summary (building the task, seeding, resuming,
    a config error found at run time) still leaves one, status failed with the error's first line,
    so a sweep's report counts it instead of losing it. A summary already there is the loop's own
    (or another run's, which is not ours to touch) and is kept. Returns whether it wrote one."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or (run_dir / "summary.json").exists():
        return False

    def get(key):
        try:
            return OmegaConf.select(cfg, key, default=None)
        except Exception:  # noqa: BLE001 - an interpolation that fails is the very error we record
            return None

    if not (run_dir / "config.yaml").exists():  # for the report's grouping: the run's configuration
        for resolve in (True, False):
            try:
                resolved = OmegaConf.to_container(cfg, resolve=resolve)
                resolved.pop("hydra", None)
                atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
                break
            except Exception:  # noqa: BLE001 - then the summary alone says what ran
                continue
    write_json(
        run_dir / "summary.json",
        {
            "status": "failed",
            "stop_reason": f"{type(error).__name__}: {error}".splitlines()[0][:500],
            "stopped_by": "failed",
            "task": get("task.name"),
            "optimizer": get("optimizer.name"),
            "scheduler": get("scheduler.name"),
            "seed": get("seed"),
            "lr": get("optimizer.lr"),
            "metric": get("task.metric"),
            "mode": get("task.mode"),
            "target": get("task.target"),
            "benchmark": get("task.benchmark"),
            "reached": False,
            "steps": 0,
            "max_steps": get("trainer.max_steps"),
            "final_metric": None,
            "best_metric": None,
        },
    )
    return True
