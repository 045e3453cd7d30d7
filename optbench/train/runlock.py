"""One run per run directory at a time: an exclusive lock on `<run dir>/.optbench.lock`.

Without it two runs into one `hydra.run.dir` both train and the last writer wins. The lock is an
fcntl.flock on the file; the file holds "pid host" for the message the second run prints. The
kernel drops a flock when its process dies (kill -9, OOM), so a lock left by a dead run is free
again at once: the next run takes it over and says whose it was. A process holds each directory's
lock once however many times it asks (app.main locks before Hydra writes `.hydra/`, run_job and
train() ask again), and releases it when the outermost holder is done.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from optbench.errors import ConfigError

LOCK_NAME = ".optbench.lock"
# a release racing an acquire (a report probing the lock, a requeued job starting as the old one
# exits): retry a moment before calling the directory busy
RETRY_S = 1.0


class RunDirLocked(ConfigError):
    """Another live process holds the run directory."""


_held: dict[Path, list] = {}  # resolved run dir -> [fd, depth]


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK_NAME


def _key(run_dir: Path) -> Path:
    return Path(os.path.abspath(run_dir))


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 512).decode(errors="replace").strip()
    except OSError:
        return ""


def _describe(holder: str) -> str:
    pid, _, host = holder.partition(" ")
    return f"pid {pid} on host {host}" if pid and host else "another process"


def busy_message(run_dir: Path, holder: str) -> str:
    return (
        f"{_key(run_dir)} is in use by another run ({_describe(holder)}); wait for it to finish "
        "or use another hydra.run.dir"
    )


def refuse_if_held(run_dir: Path) -> None:
    """For a process that hands the run to others (torchrun's parent): stop before launching them."""
    who = holder(run_dir)
    if who is not None and not holds(run_dir):
        raise RunDirLocked(busy_message(run_dir, who))


def acquire(run_dir: Path) -> None:
    """Take (or re-enter) the lock of `run_dir`, creating the directory; RunDirLocked if another
    live process holds it."""
    key = _key(run_dir)
    if key in _held:
        _held[key][1] += 1
        return
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(key), os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + RETRY_S
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise  # ENOLCK & co.: a file system without locks is an error the user must see
                if time.monotonic() >= deadline:
                    raise RunDirLocked(busy_message(key, _read_holder(fd))) from None
                time.sleep(0.05)
        previous = _read_holder(fd)
        if previous:  # written by a holder that never released: it died (the kernel freed its lock)
            print(
                f"optbench: warning: {key} was locked by {_describe(previous)}, which is no longer "
                "running; taking it over",
                file=sys.stderr,
                flush=True,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    except BaseException:
        os.close(fd)  # closing drops our flock, if we got it
        raise
    _held[key] = [fd, 1]


def release(run_dir: Path) -> None:
    key = _key(run_dir)
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    fd = entry[0]
    del _held[key]
    try:
        os.ftruncate(fd, 0)  # an empty file: released cleanly (a dead holder leaves its pid)
    except OSError:
        pass
    finally:
        os.close(fd)  # drops the flock


def holds(run_dir: Path) -> bool:
    return _key(run_dir) in _held


def holder(run_dir: Path) -> str | None:
    """'pid host' of the live process holding `run_dir`, or None when no one does (for report:
    a directory without summary.json is a run in progress, not a failed one, while it is held)."""
    path = lock_path(run_dir)
    if holds(run_dir):
        return f"{os.getpid()} {socket.gethostname()}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_holder(fd) or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextmanager
def hold(run_dir: Path, dist=None):
    """The lock for the block. Under DDP rank 0 locks and every rank learns the outcome, so all of
    them stop with the same one line instead of the others waiting for a rank 0 that left."""
    main = dist is None or dist.is_main
    error = None
    if main:
        try:
            acquire(run_dir)
        except RunDirLocked as e:
            error = str(e)
    if dist is not None and dist.enabled:
        from optbench.train.distributed import broadcast_object

        error = broadcast_object(error)
    if error is not None:
        raise RunDirLocked(error)
    try:
        yield
    finally:
        if main:
            release(run_dir)
