"""CIFAR-10 in its canonical python format, read without torchvision.

Layout (the official archive, extracted): cifar-10-batches-py/{data_batch_1..5, test_batch,
batches.meta}; each batch is a pickle dict with b'data' (N x 3072 uint8, channel-major rows),
b'labels' (N ints), b'batch_label', b'filenames'. `read_cifar10` accepts the directory itself
or its parent, and prefers the compact uint8 cache written beside it.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from optbench.errors import ConfigError
from optbench.train.rundir import atomic_open

BATCH_DIR = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
CACHE_FILE = "cifar10_uint8.pt"
LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DOWNLOAD_HINT = "run `optbench data cifar10 --root DIR` and pass data.root=DIR"


@dataclass
class CifarArrays:
    """uint8 images N x 3 x 32 x 32 and int64 labels, for train and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    label_names: list[str]


def batch_dir(root: str | os.PathLike) -> Path:
    root = Path(root)
    return root if (root / META_FILE).exists() or (root / TEST_FILE).exists() else root / BATCH_DIR


# --------------------------------------------------------------------------- writing
def _atomic_pickle(obj, path: Path) -> None:
    with atomic_open(path) as f:
        pickle.dump(obj, f, protocol=2)


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray, batch_label: str) -> None:
    """images: N x 3 x 32 x 32 uint8 -> the official row layout (R plane, G plane, B plane)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    n = len(images)
    _atomic_pickle(
        {
            b"batch_label": batch_label.encode(),
            b"labels": [int(y) for y in labels],
            b"data": images.reshape(n, 3072),
            b"filenames": [f"img_{batch_label.replace(' ', '_')}_{i:05d}.png".encode() for i in range(n)],
        },
        path,
    )


def write_cifar10(root, train_images, train_labels, test_images, test_labels, label_names=LABEL_NAMES) -> Path:
    """Write a full dataset in the official layout under root/cifar-10-batches-py/."""
    out = Path(root) / BATCH_DIR
    out.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(train_images)), len(TRAIN_FILES))
    for i, (fname, idx) in enumerate(zip(TRAIN_FILES, chunks)):
        write_batch(out / fname, train_images[idx], train_labels[idx], f"training batch {i + 1} of 5")
    write_batch(out / TEST_FILE, test_images, test_labels, "testing batch 1 of 1")
    per_batch = len(chunks[0])
    _atomic_pickle(
        {b"label_names": [n.encode() for n in label_names], b"num_cases_per_batch": per_batch, b"num_vis": 3072},
        out / META_FILE,
    )
    return out


# --------------------------------------------------------------------------- reading
def _load_pickle(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"CIFAR-10 file missing: {path}; {DOWNLOAD_HINT}")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as e:  # truncated or not a pickle
        raise ConfigError(
            f"CIFAR-10 file unreadable: {path} ({type(e).__name__}); delete it and {DOWNLOAD_HINT}"
        ) from None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path)
    if b"data" not in d or b"labels" not in d:
        raise ConfigError(f"CIFAR-10 file {path} lacks 'data' or 'labels'; {DOWNLOAD_HINT}")
    data, labels = np.asarray(d[b"data"]), np.asarray(d[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ConfigError(
            f"CIFAR-10 file {path} has data of shape {data.shape} ({data.dtype}) and "
            f"{len(labels)} labels; expected N x 3072 uint8 and N labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ConfigError(f"CIFAR-10 file {path} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10(root) -> CifarArrays:
    """Read the cache if present, else the official batch files."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"data.root={str(root)!r} does not exist; {DOWNLOAD_HINT}")
    cache = root / CACHE_FILE
    if cache.exists():
        return load_cache(cache)
    d = batch_dir(root)
    if not (d / TEST_FILE).exists() and not any((d / f).exists() for f in TRAIN_FILES):
        raise ConfigError(
            f"no CIFAR-10 files in {root} (expected {BATCH_DIR}/data_batch_1..5, test_batch); {DOWNLOAD_HINT}"
        )
    return read_batch_files(d)


def read_batch_files(d: Path) -> CifarArrays:
    """The official batch files in directory d (every file must be there and well-formed)."""
    train = [read_batch(d / f) for f in TRAIN_FILES]
    test_x, test_y = read_batch(d / TEST_FILE)
    meta = _load_pickle(d / META_FILE)
    names = [n.decode() if isinstance(n, bytes) else n for n in meta.get(b"label_names", LABEL_NAMES)]
    return CifarArrays(
        torch.from_numpy(np.concatenate([x for x, _ in train])),
        torch.from_numpy(np.concatenate([y for _, y in train])),
        torch.from_numpy(test_x.copy()),
        torch.from_numpy(test_y),
        names,
    )


def check_arrays(arrays: CifarArrays, source) -> CifarArrays:
    """uint8 N x 3 x 32 x 32 images with N int64 labels in 0..9, for both splits."""
    for split in ("train", "test"):
        x, y = getattr(arrays, f"{split}_images"), getattr(arrays, f"{split}_labels")
        if (
            x.dtype != torch.uint8
            or x.ndim != 4
            or tuple(x.shape[1:]) != (3, 32, 32)
            or y.dtype != torch.int64
            or y.shape != (len(x),)
        ):
            raise ConfigError(
                f"CIFAR-10 data in {source} has {split} images {tuple(x.shape)} {x.dtype} and "
                f"labels {tuple(y.shape)} {y.dtype}; expected N x 3 x 32 x 32 uint8 and N "
                f"int64 labels; delete it and {DOWNLOAD_HINT}"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
            raise ConfigError(
                f"CIFAR-10 data in {source} has {split} labels outside 0..9; delete it and {DOWNLOAD_HINT}"
            )
    return arrays


def write_cache(arrays: CifarArrays, path: Path) -> None:
    """The compact cache: one torch file of uint8/int64 tensors, written atomically."""
    check_arrays(arrays, path)
    with atomic_open(path) as f:
        torch.save(
            {
                "train_images": arrays.train_images.contiguous(),
                "train_labels": arrays.train_labels,
                "test_images": arrays.test_images.contiguous(),
                "test_labels": arrays.test_labels,
                "label_names": list(arrays.label_names),
            },
            f,
        )


def load_cache(path: Path) -> CifarArrays:
    try:
        d = torch.load(path, weights_only=True)
        arrays = CifarArrays(
            d["train_images"], d["train_labels"], d["test_images"], d["test_labels"], list(d["label_names"])
        )
    except Exception as e:
        raise ConfigError(
            f"CIFAR-10 cache unreadable: {path} ({type(e).__name__}); delete it and it is rebuilt from the batch files"
        ) from None
    return check_arrays(arrays, path)
