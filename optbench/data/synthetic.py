"""Synthetic CIFAR-10: learnable images written in the real CIFAR-10 python format.

Each class has a smooth random prototype; an image is its class prototype, randomly shifted
and scaled in contrast, plus pixel noise. A small CNN separates the classes well above chance
within tens of steps, yet not trivially (noise and shifts), so optimizers differ.
The data seed is fixed and independent of the run's seed: every run sees the same dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from optbench.data.cifar10 import CACHE_FILE, META_FILE, batch_dir, write_cifar10
from optbench.train.rundir import atomic_write_text

DATA_SEED = 1234


def _prototypes(rng: np.random.Generator, n_classes: int = 10) -> np.ndarray:
    coarse = torch.from_numpy(rng.standard_normal((n_classes, 3, 4, 4)).astype(np.float32))
    smooth = F.interpolate(coarse, size=(32, 32), mode="bicubic", align_corners=False)
    smooth = smooth / smooth.flatten(1).std(1).view(-1, 1, 1, 1)
    return smooth.numpy()


def make_images(n: int, rng: np.random.Generator, protos: np.ndarray, noise: float):
    labels = rng.integers(0, len(protos), size=n)
    contrast = rng.uniform(0.6, 1.4, size=(n, 1, 1, 1)).astype(np.float32)
    x = protos[labels] * contrast
    shifts = rng.integers(-3, 4, size=(n, 2))
    for s in np.unique(shifts, axis=0):  # vectorised per distinct shift, not per image
        idx = np.all(shifts == s, axis=1)
        x[idx] = np.roll(x[idx], shift=(int(s[0]), int(s[1])), axis=(2, 3))
    x = x + noise * 3.0 * rng.standard_normal(x.shape).astype(np.float32)
    return np.clip(128 + 40 * x, 0, 255).astype(np.uint8), labels.astype(np.int64)


def _stamp(path: Path):
    """The parameters the files were made with; None when the stamp is missing or damaged (the
    files are then made again: they are a cache of a fixed-seed generator)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure_synthetic_cifar10(
    root, n_train: int = 10000, n_test: int = 2000, noise: float = 2.0, force: bool = False
) -> Path:
    """Generate the files once (atomically per file); later calls find them and return."""
    root = Path(root)
    params = {"n_train": n_train, "n_test": n_test, "noise": noise, "seed": DATA_SEED, "version": 1}
    stamp = root / "synthetic.json"
    if not force and (batch_dir(root) / META_FILE).exists() and _stamp(stamp) == params:
        return root
    rng = np.random.default_rng(DATA_SEED)
    protos = _prototypes(rng)
    train_x, train_y = make_images(n_train, rng, protos, noise)
    test_x, test_y = make_images(n_test, rng, protos, noise)
    (root / CACHE_FILE).unlink(missing_ok=True)  # it would be read instead of the files made here
    write_cifar10(root, train_x, train_y, test_x, test_y)  # batches.meta is written last
    atomic_write_text(stamp, json.dumps(params))
    return root


def read_synthetic_cifar10(root, n_train: int = 10000, n_test: int = 2000, noise: float = 2.0):
    """The synthetic set's arrays, generated if absent; files that are missing or damaged are
    generated again (once) instead of pointing the user at the real set's download."""
    from optbench.data.cifar10 import read_cifar10
    from optbench.errors import ConfigError

    ensure_synthetic_cifar10(root, n_train=n_train, n_test=n_test, noise=noise)
    try:
        return read_cifar10(root)
    except ConfigError as e:
        import sys

        print(
            f"optbench: warning: {str(e).split(';')[0]}; regenerating the synthetic dataset in {root}",
            file=sys.stderr,
            flush=True,
        )
        ensure_synthetic_cifar10(root, n_train=n_train, n_test=n_test, noise=noise, force=True)
        return read_cifar10(root)
