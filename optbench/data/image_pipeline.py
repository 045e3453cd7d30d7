"""A GPU-resident image pipeline: the whole dataset lives on the device as uint8.

Shuffling, normalisation and augmentation are batched tensor ops (no per-image Python), so on
a GPU the pipeline costs a small fraction of a training step. Batches are cut from one global
permutation, and the augmentation parameters (flip, shift, cutout position) are drawn once per
global batch; each (rank, micro-step) takes its own disjoint slice of both, so a DDP or
accumulated run sees exactly the samples, augmented identically, of the equivalent single
large batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def normalise(images_u8: torch.Tensor, mean, std, dtype=torch.float32) -> torch.Tensor:
    """(x / 255 - mean) / std per channel; mean and std may be sequences or ready tensors."""
    mean = torch.as_tensor(mean, device=images_u8.device, dtype=dtype).view(1, -1, 1, 1) * 255
    std = torch.as_tensor(std, device=images_u8.device, dtype=dtype).view(1, -1, 1, 1) * 255
    return (images_u8.to(dtype) - mean) / std


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) the images where mask is True."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Index arithmetic of reflect padding (edge not repeated): -1 -> 1, size -> size - 2."""
    i = i.abs()
    return (size - 1) - (size - 1 - i).abs()


def translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Shift each image by (dy[i], dx[i]) pixels, filling the border by reflection:
    out[i, :, r, c] = reflect_pad(x)[i, :, r + dy, c + dx]; the same as reflect-padding by
    max|shift| and cropping, without materialising the padded copy. Any dtype (uint8 too)."""
    n, ch, h, w = x.shape
    rows = _reflect(dy.view(n, 1) + torch.arange(h, device=x.device), h)
    cols = _reflect(dx.view(n, 1) + torch.arange(w, device=x.device), w)
    # two gathers with broadcast (stride-0) indices: rows first, then columns
    x = x.gather(2, rows.view(n, 1, h, 1).expand(n, ch, h, w))
    return x.gather(3, cols.view(n, 1, 1, w).expand(n, ch, h, w))


def cutout(x: torch.Tensor, size: int, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Zero a size x size square per image at rows cy - size//2 .. cy - size//2 + size - 1 (same
    for columns), clipped at the border (DeVries & Taylor 2017). Zero is the dataset mean once
    normalised."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    top, left = (cy - size // 2).view(n, 1, 1), (cx - size // 2).view(n, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)


@dataclass
class AugmentParams:
    """Per-sample random choices of one global batch; sliced along with the indices."""
    flip: torch.Tensor | None = None    # bool
    dy: torch.Tensor | None = None      # shifts in [-pad, pad]
    dx: torch.Tensor | None = None
    cy: torch.Tensor | None = None      # cutout centres in [0, H)
    cx: torch.Tensor | None = None

    def slice(self, start: int, stop: int) -> "AugmentParams":
        return AugmentParams(*(None if t is None else t[start:stop] for t in
                               (self.flip, self.dy, self.dx, self.cy, self.cx)))


class DeviceImageLoader:
    """Endless micro-batches (images, labels) of a uint8 dataset resident on `device`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, global_batch: int, micro_batch: int,
                 mean, std, *, flip: bool = True, alternating_flip: bool = False, translate: int = 0,
                 cutout: int = 0, seed: int = 0, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32):
        if global_batch > len(images):
            raise ValueError(f"batch size {global_batch} exceeds the {len(images)} training images")
        if global_batch % (micro_batch * world_size):
            raise ValueError(f"batch size {global_batch} is not a multiple of micro batch {micro_batch} "
                             f"x world size {world_size}")
        self.images, self.labels = images, labels
        self.global_batch, self.micro_batch = global_batch, micro_batch
        self.dtype = dtype
        # as device tensors once: rebuilding them per batch would be a host->device copy each time
        self.mean = torch.as_tensor(mean, dtype=dtype).to(images.device)
        self.std = torch.as_tensor(std, dtype=dtype).to(images.device)
        self.flip, self.alternating_flip = flip, alternating_flip
        self.pad, self.cutout_size = translate, cutout
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.seed = seed
        self.epoch, self.position = 0, 0   # position: global batches done in this epoch
        self.steps_per_epoch = len(images) // global_batch  # the remainder is dropped, reshuffled
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

    def draw_params(self, idx: torch.Tensor) -> AugmentParams:
        """The random choices for one global batch (every rank draws the same ones)."""
        n, (h, w) = len(idx), self.images.shape[-2:]
        g, dev = self._aug, self.images.device
        p = AugmentParams()
        if self.alternating_flip:
            p.flip = self._flip_half[idx] ^ bool(self.epoch % 2)
        elif self.flip:
            p.flip = torch.rand(n, device=dev, generator=g) < 0.5
        if self.pad > 0:
            p.dy = torch.randint(-self.pad, self.pad + 1, (n,), device=dev, generator=g)
            p.dx = torch.randint(-self.pad, self.pad + 1, (n,), device=dev, generator=g)
        if self.cutout_size > 0:
            p.cy = torch.randint(0, h, (n,), device=dev, generator=g)
            p.cx = torch.randint(0, w, (n,), device=dev, generator=g)
        return p

    def global_batches(self):
        """Yields, per optimizer step, this rank's micro-batches."""
        while True:
            idx = self.next_global_indices()
            self._aug.manual_seed((self.seed * 1_000_003 + self.epoch) * 100_003 + self.position)
            params = self.draw_params(idx)
            micro = []
            for j in range(self.accum):
                start = (j * self.world_size + self.rank) * self.micro_batch
                stop = start + self.micro_batch
                micro.append(self.augment(idx[start:stop], params.slice(start, stop)))
            yield micro

    def augment(self, idx: torch.Tensor, p: AugmentParams):
        x = self.images[idx]
        if p.flip is not None:
            x = flip(x, p.flip)
        if p.dy is not None:
            x = translate(x, p.dy, p.dx)   # on uint8: 4x less memory traffic than on floats
        x = normalise(x, self.mean, self.std, self.dtype)
        if p.cy is not None:
            x = cutout(x, self.cutout_size, p.cy, p.cx)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx]
