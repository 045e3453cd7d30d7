"""Token shard files, the format of the public FineWeb GPT-2 shards of the NanoGPT speedrun.

A shard is a header of 256 little-endian int32 — [0] magic 20240520, [1] version 1, [2] token
count, the rest zero — followed by that many uint16 tokens. Shards are read memory-mapped
(a 100M-token shard is never loaded whole) after checking the header against the file size,
and written atomically, so a reader never sees half a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optbench.errors import ConfigError
from optbench.train.rundir import atomic_open

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
MAX_VOCAB = 2**16  # uint16 tokens


def read_header(path: Path) -> int:
    """Validate the header of `path` and return its token count (one ConfigError line if bad)."""
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ConfigError(f"token shard {path} is truncated: {size} bytes, shorter than the {HEADER_BYTES}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != MAGIC:
        raise ConfigError(
            f"token shard {path} has magic number {int(header[0])}, expected {MAGIC}: not a GPT-2 token shard"
        )
    if header[1] != VERSION:
        raise ConfigError(f"token shard {path} has unknown version {int(header[1])}; valid choices: {VERSION}")
    n_tokens = int(header[2])
    expected = HEADER_BYTES + n_tokens * TOKEN_DTYPE.itemsize
    if n_tokens < 0 or size != expected:
        raise ConfigError(
            f"token shard {path} is truncated or corrupt: the header says {n_tokens} tokens "
            f"({expected} bytes) but the file has {size} bytes"
        )
    return n_tokens


def read_shard(path: Path) -> np.ndarray:
    """The shard's tokens as a read-only uint16 memory map (validated first)."""
    n_tokens = read_header(path)
    if n_tokens == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n_tokens,))


def write_shard(path: Path, tokens) -> Path:
    """Write tokens (any integer array with values in [0, 65535]) as a shard, atomically."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= MAX_VOCAB):
        raise ValueError(f"tokens must lie in [0, {MAX_VOCAB - 1}] to fit uint16; got [{tokens.min()}, {tokens.max()}]")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, tokens.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write(header.tobytes())
        f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())
    return path


def find_shards(root: Path, pattern: str) -> list[Path]:
    """The shards matching `pattern` under `root`, in name order (one ConfigError line if none)."""
    root = Path(root)
    shards = sorted(p for p in root.glob(pattern) if p.is_file())
    if not shards:
        raise ConfigError(
            f"no token shards matching '{pattern}' in {root}; download them with "
            f"`optbench data fineweb10B --root {root}` or point data.root at them"
        )
    return shards
