"""A GPU-resident image pipeline: the whole dataset lives on the device as uint8.

Shuffling, normalisation and augmentation are batched tensor ops (no per-image Python), so on
a GPU the pipeline costs a small fraction of a training step. Batches are cut from one global
permutation; each (rank, micro-step) takes its own disjoint slice of the global batch, so a
DDP or accumulated run sees exactly the samples of the equivalent single large batch.
"""
from __future__ import annotations

import torch

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def normalise(images_u8: torch.Tensor, mean, std, dtype=torch.float32) -> torch.Tensor:
    mean = torch.tensor(mean, device=images_u8.device, dtype=dtype).view(1, -1, 1, 1) * 255
    std = torch.tensor(std, device=images_u8.device, dtype=dtype).view(1, -1, 1, 1) * 255
    return (images_u8.to(dtype) - mean) / std


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images where mask is True."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def translate(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Reflect-pad by `pad` and crop back at a random offset per image (|shift| <= pad)."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per image, centred uniformly (DeVries & Taylor 2017)."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device, generator=generator)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    if size % 2 == 0:
        inside &= (ys - cy < size // 2) & (xs - cx < size // 2)
    return x * (~inside).unsqueeze(1).to(x.dtype)


class DeviceImageLoader:
    """Endless micro-batches (images, labels) of a uint8 dataset resident on `device`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, global_batch: int, micro_batch: int,
                 mean, std, *, flip: bool = True, alternating_flip: bool = False, translate: int = 0,
                 cutout: int = 0, seed: int = 0, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False):
        self.images, self.labels = images, labels
        self.global_batch, self.micro_batch = global_batch, micro_batch
        self.mean, self.std = mean, std
        self.flip, self.alternating_flip = flip, alternating_flip
        self.pad, self.cutout_size = translate, cutout
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.seed = seed
        self.epoch, self.position = 0, 0   # position: global batches done in this epoch
        self.steps_per_epoch = len(images) // global_batch
        self.accum = global_batch // (micro_batch * world_size)
        self._perm = None
        self._aug = torch.Generator(device=images.device)
        # airbench's alternating flip: a fixed random half is flipped on even epochs, the rest on odd
        self._flip_half = (torch.rand(len(images), generator=torch.Generator().manual_seed(seed + 7)) < 0.5
                           ).to(images.device) if alternating_flip else None

    # the permutation and augmentation randomness are functions of (seed, epoch, position), so
    # a resumed loader reproduces the exact batches of an uninterrupted run
    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(len(self.images), generator=g).to(self.images.device)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self._perm = int(state["epoch"]), int(state["position"]), None

    def __iter__(self):
        return self

    def next_global_indices(self) -> torch.Tensor:
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        if self._perm is None:
            self._perm = self._permutation()
        start = self.position * self.global_batch
        self.position += 1
        return self._perm[start:start + self.global_batch]

    def global_batches(self):
        """Yields, per optimizer step, this rank's micro-batches."""
        while True:
            idx = self.next_global_indices()
            self._aug.manual_seed((self.seed * 1_000_003 + self.epoch) * 100_003 + self.position)
            micro = []
            for j in range(self.accum):
                chunk = idx[j * self.world_size * self.micro_batch:(j + 1) * self.world_size * self.micro_batch]
                mine = chunk[self.rank * self.micro_batch:(self.rank + 1) * self.micro_batch]
                micro.append(self._augment(mine))
            yield micro

    def _augment(self, idx: torch.Tensor):
        x = self.images[idx]
        if self.alternating_flip:
            x = flip(x, self._flip_half[idx] ^ bool(self.epoch % 2))
        elif self.flip:
            x = flip(x, torch.rand(len(idx), device=x.device, generator=self._aug) < 0.5)
        x = translate(x, self.pad, self._aug)
        x = normalise(x, self.mean, self.std)
        x = cutout(x, self.cutout_size, self._aug)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx]
