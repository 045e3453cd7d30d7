"""`optbench data cifar10 --root DIR`: the official archive -> checksum -> extract -> uint8 cache.

Every stage is resumable and leaves nothing half-written under its final name:
  1. download to `cifar-10-python.tar.gz.part`, continuing a previous partial file (HTTP Range);
     the finished file is renamed to `cifar-10-python.tar.gz` only after its MD5 matches;
  2. extract into a temporary directory (regular files and directories only, no absolute paths
     or `..`), check every batch file, then rename it to `cifar-10-batches-py/`;
  3. write `cifar10_uint8.pt` (read_cifar10 prefers it) through a temporary file and a rename.
Every failure is one ConfigError line: what is wrong, which file, what to do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from optbench.data.cifar10 import (
    BATCH_DIR,
    CACHE_FILE,
    META_FILE,
    TEST_FILE,
    TRAIN_FILES,
    read_batch_files,
    write_cache,
)
from optbench.errors import ConfigError

# the canonical python-format archive (https://www.cs.toronto.edu/~kriz/cifar.html) and the MD5
# published on that page
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
CHUNK = 1 << 20


def _rerun(root: Path) -> str:
    return f"`optbench data cifar10 --root {root}`"


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def open_url(url: str, offset: int = 0):
    """(stream, resumed, total bytes or None) for `url` from byte `offset` when the server can.

    file:// is served by seeking (so resume is testable without a network); http(s) asks for a
    Range and reports resumed=False when the server sends the whole file instead (status 200)."""
    if url.startswith("file://"):
        path = Path(urllib.request.url2pathname(url[len("file://") :]))
        f = open(path, "rb")
        size = path.stat().st_size
        f.seek(min(offset, size))
        return f, offset > 0, size
    request = urllib.request.Request(url, headers={"User-Agent": "optbench"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    response = urllib.request.urlopen(request, timeout=60)
    resumed = offset > 0 and response.status == 206
    length = response.headers.get("Content-Length")
    total = (int(length) + (offset if resumed else 0)) if length else None
    return response, resumed, total


def fetch(url: str, part: Path, progress: bool = True) -> None:
    """Download url into `part`, appending to what a previous attempt left there."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        stream, resumed, total = open_url(url, offset)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the range starts at the end: the part file is complete
            return
        raise ConfigError(
            f"download of {url} failed: HTTP {e.code} {e.reason}; check the URL or "
            f"your network and rerun {_rerun(part.parent)}"
        ) from None
    except (OSError, urllib.error.URLError) as e:
        raise ConfigError(
            f"download of {url} failed: {getattr(e, 'reason', e)}; check your network "
            f"and rerun {_rerun(part.parent)} (it resumes)"
        ) from None
    done = offset if resumed else 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=ARCHIVE, file=sys.stderr)
    try:
        with stream, open(part, "ab" if resumed else "wb") as out:
            for block in iter(lambda: stream.read(CHUNK), b""):
                out.write(block)
                done += len(block)
                if bar is not None:
                    bar.update(len(block))
    except OSError as e:
        raise ConfigError(
            f"download of {url} interrupted after {done} bytes ({e}); rerun {_rerun(part.parent)} to resume from {part}"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    if total is not None and done < total:
        raise ConfigError(
            f"download of {url} stopped at {done} of {total} bytes; rerun {_rerun(part.parent)} to resume from {part}"
        )


def ensure_archive(root: Path, url: str, md5: str, progress: bool = True) -> Path:
    """The verified archive under root (downloaded or resumed as needed)."""
    archive, part = root / ARCHIVE, root / (ARCHIVE + ".part")
    if archive.exists():
        if md5sum(archive) == md5:
            return archive
        archive.replace(part)  # not what it claims to be: treat as an unfinished download
    fetch(url, part, progress)
    digest = md5sum(part)
    if digest != md5:
        part.unlink()
        raise ConfigError(
            f"checksum mismatch for {url}: MD5 {digest}, expected {md5} (corrupt or "
            f"truncated download); deleted {part}, rerun {_rerun(root)}"
        )
    os.replace(part, archive)
    return archive


def _safe_members(tar: tarfile.TarFile, archive: Path):
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
            raise ConfigError(
                f"{archive} holds an unsafe entry {m.name!r} (absolute path, '..' or a "
                f"link); delete it and rerun {_rerun(archive.parent)}"
            )
        if parts and parts[0] == BATCH_DIR:
            yield m


def extract(archive: Path, root: Path) -> Path:
    """Extract the batch files next to the archive; the final directory appears complete or not
    at all. Returns root/cifar-10-batches-py."""
    final = root / BATCH_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = list(_safe_members(tar, archive))
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ConfigError(
                f"{archive} is not a readable tar.gz ({type(e).__name__}: {e}); delete it and rerun {_rerun(root)}"
            ) from None
        got = tmp / BATCH_DIR
        missing = [f for f in (*TRAIN_FILES, TEST_FILE, META_FILE) if not (got / f).is_file()]
        if missing:
            raise ConfigError(
                f"{archive} lacks {BATCH_DIR}/{', '.join(missing)}; it is not the CIFAR-10 "
                f"python archive: delete it and rerun {_rerun(root)}"
            )
        read_batch_files(got)  # shapes, dtypes, labels of every file, before it goes live
        if final.exists():
            shutil.rmtree(final)
        os.replace(got, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def download_cifar10(root, url: str | None = None, md5: str | None = None, progress: bool = True) -> Path:
    """Download (resumable), verify, extract and cache CIFAR-10 under root; returns root.
    Each finished stage is skipped on a rerun. url/md5 default to the canonical archive."""
    url, md5 = url or CIFAR10_URL, md5 or CIFAR10_MD5
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cache = root / CACHE_FILE
    if cache.exists():
        from optbench.data.cifar10 import load_cache

        load_cache(cache)  # raises with a clear line if it is damaged
        print(f"CIFAR-10 is ready in {root} ({CACHE_FILE})", file=sys.stderr)
        return root
    batch_dir = root / BATCH_DIR
    try:
        arrays = read_batch_files(batch_dir) if (batch_dir / META_FILE).exists() else None
    except ConfigError:
        arrays = None  # a damaged extraction: extract again from the verified archive
    if arrays is None:
        archive = ensure_archive(root, url, md5, progress)
        arrays = read_batch_files(extract(archive, root))
    write_cache(arrays, cache)
    print(
        f"CIFAR-10 is ready in {root}: {len(arrays.train_images)} train and {len(arrays.test_images)} "
        f"test images; use data.root={root}",
        file=sys.stderr,
    )
    return root
