"""The run directory contract: config.yaml, metrics.jsonl, summary.json (atomic)."""
from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
from contextlib import contextmanager
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


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PACKAGE_DIR.parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(PACKAGE_DIR.parent), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


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
    write_json(run_dir / "summary.json", {
        "status": "failed",
        "stop_reason": f"{type(error).__name__}: {error}".splitlines()[0][:500],
        "task": get("task.name"), "optimizer": get("optimizer.name"), "scheduler": get("scheduler.name"),
        "seed": get("seed"), "lr": get("optimizer.lr"), "metric": get("task.metric"), "mode": get("task.mode"),
        "target": get("task.target"), "benchmark": get("task.benchmark"), "reached": False, "steps": 0,
        "max_steps": get("trainer.max_steps"), "final_metric": None, "best_metric": None,
    })
    return True
