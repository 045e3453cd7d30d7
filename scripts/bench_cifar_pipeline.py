"""Data time per batch of our CIFAR-10 pipeline against airbench's CifarLoader, and beside a step.

(1) Ours vs airbench, same data, same device, same run: airbench's loader (CifarLoader,
    batch_flip_lr, batch_crop from airbench94_muon.py) is loaded at run time from --reference
    (its source parsed with `ast`, only those definitions exec'd, torchvision's Normalize stubbed
    by its formula), or, when that checkout is absent, from a transcription of its loading steps
    in this script (labelled so in the output). Both run airbench's augmentation (flip, translate
    2) in fp16 on CIFAR-sized random uint8 images (50,000 x 3 x 32 x 32); rounds alternate A and
    B, each round times two whole epochs (one even, one odd: airbench flips the set every odd
    epoch) after a warm-up epoch, and the medians give the data time per batch and the ratio
    ours / airbench (also for our default "optbench" scheme, random flip per batch, same
    augmentation otherwise). The first-epoch set-up (normalise, pre-flip, pad) is timed apart. With the
    same seed both streams are also checked to yield the same batches (and legacy/airbench94.py's
    loader, whose epoch logic is the same, against ours too).
(2) --step: a training step of the airbench94 network on a ready batch, and pipeline time / step.

    .venv/bin/python scripts/bench_cifar_pipeline.py                       # batches 1024 and 2000
    .venv/bin/python scripts/bench_cifar_pipeline.py --reference PATH --rounds 7
    .venv/bin/python scripts/bench_cifar_pipeline.py --device cuda --step
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import statistics
import time
from math import ceil
from pathlib import Path

import torch
import torch.nn.functional as F

from optbench.data.image_pipeline import CIFAR_MEAN, CIFAR_STD, DeviceImageLoader

REFERENCE_DEFS = ("CIFAR_MEAN", "CIFAR_STD", "batch_flip_lr", "batch_crop", "CifarLoader")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Normalize:
    """Stand-in for torchvision.transforms.Normalize on a tensor: (x - mean) / std per channel,
    mean and std cast to the tensor's dtype (torchvision.transforms.functional.normalize)."""

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, x):
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return x.sub(mean).div(std)


def load_reference_loader(reference: Path, file: str = "airbench94_muon.py"):
    """airbench's CifarLoader class from its source, or None when the file is absent."""
    src = reference / file
    if not src.exists():
        return None
    tree = ast.parse(src.read_text())
    keep = [
        node
        for node in tree.body
        if (isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in REFERENCE_DEFS)
        or (isinstance(node, ast.Assign) and any(getattr(t, "id", None) in REFERENCE_DEFS for t in node.targets))
    ]
    ns = {"torch": torch, "F": F, "ceil": ceil, "os": __import__("os"), "T": type("T", (), {"Normalize": _Normalize})}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(src), "exec"), ns)
    return ns["CifarLoader"]


def make_reference(loader_cls, images_nhwc: torch.Tensor, labels: torch.Tensor, batch: int):
    """A CifarLoader over in-memory data: its __init__ reads train.pt onto CUDA, so its
    attribute set-up is repeated here with the same expressions, on our device."""
    ld = loader_cls.__new__(loader_cls)
    ld.images, ld.labels = images_nhwc, labels
    ld.images = (ld.images.half() / 255).permute(0, 3, 1, 2).to(memory_format=torch.channels_last)
    ld.normalize = _Normalize(torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD))
    ld.proc_images, ld.epoch, ld.aug = {}, 0, dict(flip=True, translate=2)
    ld.batch_size, ld.drop_last, ld.shuffle = batch, True, True
    return ld


class TranscribedAirbenchLoader:
    """TRANSCRIPTION (used only when --reference is absent) of airbench's CifarLoader steps with
    aug flip + translate 2: epoch 0 normalises the set in fp16, mirrors a random half and
    reflect-pads it by 2; every epoch crops each image at one (sy, sx) in [-2, 2] (25 masked
    copies, as airbench does for r <= 2), mirrors the whole set on odd epochs, and yields
    batches gathered through a fresh permutation, dropping the last partial batch."""

    def __init__(self, images_nhwc, labels, batch):
        self.images = (images_nhwc.half() / 255).permute(0, 3, 1, 2).to(memory_format=torch.channels_last)
        self.labels, self.batch_size, self.epoch, self.pad = labels, batch, 0, None

    def __len__(self):
        return len(self.images) // self.batch_size

    def __iter__(self):
        dev, r = self.images.device, 2
        if self.epoch == 0:
            x = _Normalize(torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD))(self.images)
            mask = (torch.rand(len(x), device=dev) < 0.5).view(-1, 1, 1, 1)
            self.pad = F.pad(torch.where(mask, x.flip(-1), x), (r,) * 4, "reflect")
        shifts = torch.randint(-r, r + 1, size=(len(self.pad), 2), device=dev)
        out = torch.empty((len(self.pad), 3, 32, 32), device=dev, dtype=self.pad.dtype)
        for sy in range(-r, r + 1):
            for sx in range(-r, r + 1):
                m = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
                out[m] = self.pad[m, :, r + sy : r + sy + 32, r + sx : r + sx + 32]
        if self.epoch % 2 == 1:
            out = out.flip(-1)
        self.epoch += 1
        perm = torch.randperm(len(out), device=dev)
        for i in range(len(self)):
            idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
            yield out[idx], self.labels[idx]


class Ours:
    """Our loader in airbench mode, driven epoch by epoch like the reference."""

    def __init__(self, images, labels, batch, channels_last, scheme="airbench"):
        self.loader = DeviceImageLoader(
            images,
            labels,
            batch,
            batch,
            CIFAR_MEAN,
            CIFAR_STD,
            flip=True,
            translate=2,
            seed=0,
            channels_last=channels_last,
            dtype=torch.float16,
            scheme=scheme,
        )
        self.batches = self.loader.global_batches()

    def __len__(self):
        return self.loader.steps_per_epoch

    def __iter__(self):
        for _ in range(len(self)):
            yield next(self.batches)[0]


def time_epochs(loader, epochs: int, device) -> float:
    """Seconds per batch over `epochs` whole epochs."""
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            pass
    sync(device)
    return (time.perf_counter() - start) / (epochs * len(loader))


def first_epoch_setup(make, device) -> float:
    sync(device)
    start = time.perf_counter()
    loader = make()
    next(iter(loader))
    sync(device)
    return time.perf_counter() - start


def streams_match(ref_cls, images_nhwc, images, labels, batch, device) -> bool | None:
    """Same seed, same draws: do the reference's and our batches agree bit for bit over two epochs?"""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.manual_seed(0)
    ref = (
        make_reference(ref_cls, images_nhwc, labels, batch)
        if ref_cls
        else TranscribedAirbenchLoader(images_nhwc, labels, batch)
    )
    ref_batches = [b for _ in range(2) for b in ref]
    ours = Ours(images, labels, batch, channels_last=False)
    ours_batches = [b for _ in range(2) for b in ours]
    return all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ref_batches, ours_batches))


def compare(args, device) -> None:
    ref_cls = load_reference_loader(Path(args.reference))
    source = (
        f"airbench's CifarLoader exec'd from {args.reference}/airbench94_muon.py"
        if ref_cls
        else f"TRANSCRIPTION of airbench's loader ({args.reference} absent)"
    )
    g = torch.Generator().manual_seed(0)
    images_nhwc = torch.randint(0, 256, (args.images, 32, 32, 3), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 10, (args.images,), generator=g).to(device)
    images = images_nhwc.permute(0, 3, 1, 2).contiguous()  # our loader's uint8 (N, C, H, W) set
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"device: {name}; torch {torch.__version__}; {args.images} random uint8 images 3x32x32; "
        f"aug flip + translate 2, fp16; reference: {source}"
    )
    print(f"rounds: {args.rounds} x (A, B) alternating, each 2 epochs after a warm-up epoch; medians")
    for batch in args.batches:

        def airbench():
            return (
                make_reference(ref_cls, images_nhwc, labels, batch)
                if ref_cls
                else TranscribedAirbenchLoader(images_nhwc, labels, batch)
            )

        loaders = {
            "airbench": airbench(),
            "ours (channels_last)": Ours(images, labels, batch, True),
            "ours (NCHW)": Ours(images, labels, batch, False),
            "ours, optbench scheme": Ours(images, labels, batch, True, scheme="optbench"),
        }
        for ld in loaders.values():
            time_epochs(ld, 1, device)  # epoch 0: the one-time set-up, and warm-up
        times = {k: [] for k in loaders}
        for _ in range(args.rounds):
            for k, ld in loaders.items():
                times[k].append(time_epochs(ld, 2, device))
        med = {k: statistics.median(v) for k, v in times.items()}
        setup = {
            "airbench": statistics.median(first_epoch_setup(airbench, device) for _ in range(3)),
            "ours": statistics.median(
                first_epoch_setup(lambda: Ours(images, labels, batch, True), device) for _ in range(3)
            ),
        }
        same = streams_match(ref_cls, images_nhwc, images, labels, batch, device)
        legacy_cls = load_reference_loader(Path(args.reference), "legacy/airbench94.py")
        same_legacy = streams_match(legacy_cls, images_nhwc, images, labels, batch, device) if legacy_cls else "n/a"
        print(f"batch {batch} ({args.images // batch} batches/epoch):")
        for k, v in med.items():
            print(f"  {k:22s} {v * 1e3:8.3f} ms/batch  (rounds: {', '.join(f'{t * 1e3:.2f}' for t in times[k])})")
        print(
            f"  ratio ours/airbench: {med['ours (channels_last)'] / med['airbench']:.3f} (channels_last), "
            f"{med['ours (NCHW)'] / med['airbench']:.3f} (NCHW), "
            f"{med['ours, optbench scheme'] / med['airbench']:.3f} (optbench scheme: random flip per batch)"
            f"   target <= 1.0"
        )
        print(
            f"  first-epoch set-up: airbench {setup['airbench'] * 1e3:.1f} ms, ours {setup['ours'] * 1e3:.1f} ms; "
            f"same seed gives the same batches as airbench's stream: {same} "
            f"(legacy/airbench94.py's loader: {same_legacy})"
        )


def step_share(args, device) -> None:
    """Pipeline time per batch beside a training step of the airbench94 network."""
    from optbench.models.cnn import AirbenchNet

    batch, gpu = args.batches[0], device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 10, (args.images,), generator=g).to(device)
    dtype = torch.bfloat16 if args.amp == "bf16" else torch.float32
    loader = DeviceImageLoader(
        images,
        labels,
        batch,
        batch,
        CIFAR_MEAN,
        CIFAR_STD,
        flip=True,
        translate=2,
        seed=0,
        channels_last=True,
        dtype=dtype,
        scheme="airbench",
    )
    batches = loader.global_batches()
    model = AirbenchNet(widths=tuple(int(w) for w in args.widths.split(",")), channels_last=True).to(device)
    model.init_from_data(next(batches)[0][0].float())
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=0.01, momentum=0.85, nesterov=True)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.amp == "bf16" else contextlib.nullcontext
    )
    fixed = next(batches)[0]

    def train_step(xy):
        with autocast():
            loss = F.cross_entropy(model(xy[0]), xy[1], label_smoothing=0.2)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(fn, n):
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        return (time.perf_counter() - start) / n

    steps = args.steps or (50 if gpu else 3)
    train_step(fixed)
    t_pipe = timed(lambda: next(batches), steps * 4)
    t_step = timed(lambda: train_step(fixed), steps)
    print(
        f"step: batch {batch}, airbench widths {args.widths}, amp {args.amp}: pipeline {t_pipe * 1e3:.3f} ms/batch, "
        f"training step {t_step * 1e3:.3f} ms; pipeline / step {t_pipe / t_step:.2%}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--reference",
        default="/work/main/reference/cifar10-airbench",
        help="cifar10-airbench checkout (airbench94_muon.py); absent: use the transcription",
    )
    p.add_argument("--batches", default="1024,2000", help="comma-separated batch sizes")
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=5, help="interleaved A/B rounds (medians)")
    p.add_argument("--step", action="store_true", help="also time a training step of the airbench network")
    p.add_argument("--steps", type=int, default=None, help="--step: timed steps (default 50 on cuda, 3 on cpu)")
    p.add_argument("--amp", default="bf16", help="--step: off | bf16")
    p.add_argument("--widths", default="64,256,256", help="--step: airbench conv-group widths")
    args = p.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    dev_name = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    device = torch.device(dev_name)
    compare(args, device)
    if args.step:
        step_share(args, device)


if __name__ == "__main__":
    main()
