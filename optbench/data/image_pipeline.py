"""A GPU-resident image pipeline: the whole dataset lives on the device.

Like airbench, the set is normalised (in the model's compute dtype), reflect-padded by the
translate amount and paired with its mirror image once, up front; a batch is then one gather
that picks, per image, the copy (mirrored or not) and the crop offset, straight out of a
strided view of the padded set. That is one pass over the batch's bytes, against airbench's
per-epoch crop and flip of the whole set plus its per-batch gather.

Two schemes decide the random choices:
- "optbench": one global permutation per epoch; the augmentation parameters (flip, shift,
  cutout position) drawn once per global batch from a generator seeded by (seed, epoch,
  position).
- "airbench": the reference CifarLoader's stream exactly (airbench94_muon.py and
  legacy/airbench94.py share it): one generator seeded once; epoch 0 draws the pre-flip mask
  of a random half, every epoch draws one (sy, sx) in [-r, r] per image then the permutation;
  odd epochs mirror every image after its crop. Same draws in the same order, so with the same
  generator state the batches equal the reference's bit for bit (fp16 normalisation included).
Either way each (rank, micro-step) takes its own disjoint slice of the global batch, so a DDP
or accumulated run sees exactly the samples, augmented identically, of the single large batch,
and the stream is a function of (seed, epoch, position), so a resumed loader is bit-exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def normalise(images_u8: torch.Tensor, mean, std, dtype=torch.float32) -> torch.Tensor:
    """(x / 255 - mean) / std per channel; mean and std may be sequences or ready tensors."""
    mean = torch.as_tensor(mean, device=images_u8.device, dtype=dtype).view(1, -1, 1, 1) * 255
    std = torch.as_tensor(std, device=images_u8.device, dtype=dtype).view(1, -1, 1, 1) * 255
    return (images_u8.to(dtype) - mean) / std


LOADER_SCHEMES = ("optbench", "airbench")


class Normaliser:
    """Per-channel normalisation into `dtype`, with mean and std made device tensors once
    (rebuilding them from Python tuples per batch would be a host->device copy each time).

    style "optbench": (x - 255 mean) / (255 std) in fp32, rounded once to `dtype`.
    style "airbench": torchvision's Normalize on x / 255, each op in `dtype` as the reference
    does it in fp16 (so the fp16 values equal the reference's bit for bit)."""

    def __init__(self, mean, std, device, dtype: torch.dtype = torch.float32, style: str = "optbench"):
        if style not in LOADER_SCHEMES:
            raise ValueError(f"normalisation style {style!r} is invalid; valid choices: {', '.join(LOADER_SCHEMES)}")
        self.dtype, self.style = dtype, style
        # via float32, as the reference's CIFAR_MEAN tensors are
        mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if style == "airbench":
            self.mean, self.std = mean.to(device, dtype), std.to(device, dtype)
        else:
            self.mean, self.std = (mean * 255).to(device), (std * 255).to(device)

    def __call__(self, images_u8: torch.Tensor) -> torch.Tensor:
        if self.style == "airbench":
            return (images_u8.to(self.dtype) / 255 - self.mean) / self.std
        x = (images_u8.to(torch.float32) - self.mean) / self.std
        return x if self.dtype == torch.float32 else x.to(self.dtype)


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """F.pad(x, (pad,) * 4, "reflect"); where a dtype lacks that kernel, the same copy by two
    index_selects (much slower for fp16 on a CPU)."""
    if pad <= 0:
        return x
    try:
        return F.pad(x, (pad,) * 4, mode="reflect")
    except (RuntimeError, NotImplementedError):
        pass
    h, w = x.shape[-2:]
    rows = _reflect(torch.arange(-pad, h + pad, device=x.device), h)
    cols = _reflect(torch.arange(-pad, w + pad, device=x.device), w)
    return x.index_select(-2, rows).index_select(-1, cols)


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

    flip: torch.Tensor | None = None  # bool
    dy: torch.Tensor | None = None  # shifts in [-pad, pad]
    dx: torch.Tensor | None = None
    cy: torch.Tensor | None = None  # cutout centres in [0, H)
    cx: torch.Tensor | None = None

    def slice(self, start: int, stop: int) -> AugmentParams:
        return AugmentParams(
            *(None if t is None else t[start:stop] for t in (self.flip, self.dy, self.dx, self.cy, self.cx))
        )


class DeviceImageLoader:
    """Endless micro-batches (images, labels) of a uint8 dataset resident on `device`, yielded
    in `dtype` (the model's compute dtype: bf16/fp16 under AMP or for an fp16 model)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        global_batch: int,
        micro_batch: int,
        mean,
        std,
        *,
        flip: bool = True,
        alternating_flip: bool = False,
        translate: int = 0,
        cutout: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        scheme: str = "optbench",
    ):
        if global_batch > len(images):
            raise ValueError(f"batch size {global_batch} exceeds the {len(images)} training images")
        if global_batch % (micro_batch * world_size):
            raise ValueError(
                f"batch size {global_batch} is not a multiple of micro batch {micro_batch} x world size {world_size}"
            )
        if scheme not in LOADER_SCHEMES:
            raise ValueError(f"loader scheme {scheme!r} is invalid; valid choices: {', '.join(LOADER_SCHEMES)}")
        if scheme == "airbench" and cutout:
            raise ValueError(f"cutout={cutout} is invalid with the airbench loader: airbench has no cutout (use 0)")
        self.images, self.labels = images, labels
        self.global_batch, self.micro_batch = global_batch, micro_batch
        self.dtype, self.scheme = dtype, scheme
        self.normaliser = Normaliser(mean, std, images.device, dtype, style=scheme)
        self.mean, self.std = self.normaliser.mean, self.normaliser.std
        if scheme == "airbench":  # airbench's only flip is the alternating one
            flip = alternating_flip = flip or alternating_flip
        self.flip, self.alternating_flip = flip, alternating_flip
        self.pad, self.cutout_size = translate, cutout
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.seed = seed
        self.epoch, self.position = 0, 0  # position: global batches done in this epoch
        self.steps_per_epoch = len(images) // global_batch  # the remainder is dropped, reshuffled
        self.accum = global_batch // (micro_batch * world_size)
        self._perm = None
        dev = images.device
        self._aug = torch.Generator(device=dev)
        self._gen = torch.Generator(device=dev)  # permutations (and airbench's whole stream)
        self._stream_epoch = None  # airbench: the last epoch drawn from _gen
        self._preflip = self._shifts = None
        # optbench's alternating flip: a fixed random half is flipped on even epochs, the rest on odd
        self._flip_half = (
            (torch.rand(len(images), generator=torch.Generator().manual_seed(seed + 7)) < 0.5).to(dev)
            if alternating_flip and scheme == "optbench"
            else None
        )
        self._views = self._prepare(images)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised, reflect-padded set, with its mirror image when flipping, as a strided
        view V of shape (copies * N, 2 pad + 1, 2 pad + 1, C, H, W): V[c * N + i, top, left] is
        copy c of image i cropped at (top, left) of the padded image, so a batch of crops is a
        single gather. Mirroring the padded image equals padding the mirrored one (reflect
        padding is symmetric), so copy 1 is copy 0 flipped."""
        n, ch, h, w = images.shape
        p, copies = self.pad, 2 if self.flip else 1
        hp, wp = h + 2 * p, w + 2 * p
        if self.channels_last:  # (copies, N, H, W, C) in memory: each gathered crop is channels-last
            store = torch.empty((copies, n, hp, wp, ch), dtype=self.dtype, device=images.device).permute(0, 1, 4, 2, 3)
        else:
            store = torch.empty((copies, n, ch, hp, wp), dtype=self.dtype, device=images.device)
        for start in range(0, n, 10_000):  # in chunks: no full-size fp32 temporary
            store[0, start : start + 10_000] = reflect_pad(self.normaliser(images[start : start + 10_000]), p)
        if copies == 2:
            store[1] = store[0].flip(-1)
        s_copy, s_n, s_c, s_h, s_w = store.stride()
        assert s_copy == n * s_n
        return store.as_strided((copies * n, 2 * p + 1, 2 * p + 1, ch, h, w), (s_n, s_h, s_w, s_c, s_h, s_w))

    def _crop(self, idx: torch.Tensor, mirrored: torch.Tensor | None, top, left) -> torch.Tensor:
        rows = idx if mirrored is None else mirrored.long() * len(self.images) + idx
        x = self._views[rows, top, left]
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)  # a no-op: the gather already lays it out so

    # the permutation and augmentation randomness are functions of (seed, epoch, position), so
    # a resumed loader reproduces the exact batches of an uninterrupted run
    def _permutation(self) -> torch.Tensor:
        if self.scheme == "airbench":
            return self._airbench_epoch()
        self._gen.manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(len(self.images), generator=self._gen, device=self.images.device)

    def _airbench_epoch(self) -> torch.Tensor:
        """Advance airbench's single stream to self.epoch (replaying it from the seed after a
        resume): epoch 0 draws the pre-flip mask; every epoch the shifts, then the permutation."""
        n, dev, g, r = len(self.images), self.images.device, self._gen, self.pad
        if self._stream_epoch is None or self._stream_epoch >= self.epoch:
            g.manual_seed(self.seed)
            self._stream_epoch = -1
            self._preflip = (torch.rand(n, device=dev, generator=g) < 0.5) if self.flip else None
        while True:
            self._stream_epoch += 1
            self._shifts = torch.randint(-r, r + 1, (n, 2), device=dev, generator=g) if r > 0 else None
            perm = torch.randperm(n, device=dev, generator=g)
            if self._stream_epoch == self.epoch:
                return perm

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
        return self._perm[start : start + self.global_batch]

    def draw_params(self, idx: torch.Tensor) -> AugmentParams:
        """optbench scheme: the random choices for one global batch (every rank draws the same)."""
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
            params = None
            if self.scheme == "optbench":
                self._aug.manual_seed((self.seed * 1_000_003 + self.epoch) * 100_003 + self.position)
                params = self.draw_params(idx)
            micro = []
            for j in range(self.accum):
                start = (j * self.world_size + self.rank) * self.micro_batch
                stop = start + self.micro_batch
                if params is None:
                    micro.append(self.airbench_batch(idx[start:stop]))
                else:
                    micro.append(self.augment(idx[start:stop], params.slice(start, stop)))
            yield micro

    def augment(self, idx: torch.Tensor, p: AugmentParams):
        """optbench scheme: translate(flip(image)), normalised, then cutout."""
        top = 0 if p.dy is None else p.dy + self.pad
        left = 0 if p.dx is None else p.dx + self.pad
        x = self._crop(idx, p.flip, top, left)
        if p.cy is not None:
            x = cutout(x, self.cutout_size, p.cy, p.cx)
        return x, self.labels[idx]

    def airbench_batch(self, idx: torch.Tensor):
        """airbench scheme: crop (sy, sx) of the pre-flipped padded image, all mirrored on odd
        epochs. A mirror after the crop is the crop at -sx of the mirrored copy."""
        odd = self.flip and self.epoch % 2 == 1
        mirrored = None if self._preflip is None else self._preflip[idx] ^ odd
        top = left = self.pad
        if self._shifts is not None:
            shifts = self._shifts[idx]
            top, left = self.pad + shifts[:, 0], (self.pad - shifts[:, 1]) if odd else (self.pad + shifts[:, 1])
        return self._crop(idx, mirrored, top, left), self.labels[idx]
