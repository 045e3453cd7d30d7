"""How much of a training step the CIFAR-10 data pipeline costs.

Times, on one device: (1) the pipeline alone (shuffle, flip, translate, normalise; images/s),
(2) a training step of the airbench94 network (forward, backward, Nesterov SGD) on a
ready batch, (3) both together as the trainer runs them; prints pipeline time / step time.
Issue 5's bar: under 5% of the step on a GPU.

    .venv/bin/python scripts/bench_cifar_pipeline.py                    # CPU, small batch
    .venv/bin/python scripts/bench_cifar_pipeline.py --device cuda      # batch 1024, 50k images
    .venv/bin/python scripts/bench_cifar_pipeline.py --root data/cifar10  # real images
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from optbench.data.image_pipeline import CIFAR_MEAN, CIFAR_STD, DeviceImageLoader
from optbench.models.cnn import AirbenchNet


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, n: int, device: torch.device) -> float:
    """Seconds per call, the device synchronised around the n calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - start) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch", type=int, default=None, help="default: 1024 on cuda, 128 on cpu")
    p.add_argument("--images", type=int, default=None, help="dataset size; default 50000 on cuda, 5000 on cpu")
    p.add_argument("--root", default=None, help="read real CIFAR-10 from here instead of random pixels")
    p.add_argument("--steps", type=int, default=None, help="timed steps; default 50 on cuda, 5 on cpu")
    p.add_argument("--amp", default="bf16", help="off | bf16 (autocast for the training step)")
    p.add_argument("--widths", default="64,256,256", help="airbench conv-group widths")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    args = p.parse_args()

    dev_name = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    device = torch.device(dev_name)
    gpu = device.type == "cuda"
    batch = args.batch or (1024 if gpu else 128)
    steps = args.steps or (50 if gpu else 5)
    if gpu:
        torch.backends.cudnn.benchmark = True

    if args.root:
        from optbench.data.cifar10 import read_cifar10
        arrays = read_cifar10(args.root)
        images, labels = arrays.train_images, arrays.train_labels
    else:  # the pipeline's cost does not depend on the pixel values
        n = args.images or (50_000 if gpu else 5_000)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (n,), generator=g)
    images, labels = images.to(device), labels.to(device)

    loader = DeviceImageLoader(images, labels, batch, batch, CIFAR_MEAN, CIFAR_STD, flip=True,
                               alternating_flip=True, translate=2, seed=0, channels_last=True)
    batches = loader.global_batches()

    model = AirbenchNet(widths=tuple(int(w) for w in args.widths.split(",")), channels_last=True).to(device)
    model.init_from_data(next(batches)[0][0])
    trainable = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.01, momentum=0.85, nesterov=True)
    net = torch.compile(model) if args.compile else model
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.amp == "bf16" \
        else contextlib.nullcontext

    def pipeline():
        return next(batches)[0]

    def train_step(xy):
        x, y = xy
        with autocast():
            loss = F.cross_entropy(net(x), y, label_smoothing=0.2)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    fixed = pipeline()
    for _ in range(3 if gpu else 1):  # warm-up: cudnn autotuning, compilation, allocator
        pipeline()
        train_step(fixed)

    t_pipe = timed(pipeline, steps * 4, device)
    t_step = timed(lambda: train_step(fixed), steps, device)
    t_both = timed(lambda: train_step(pipeline()), steps, device)

    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; batch {batch}; dataset {len(images)} images; "
          f"airbench widths {args.widths}; amp {args.amp}; compile {args.compile}")
    print(f"pipeline alone:           {t_pipe * 1e3:9.3f} ms/batch  {batch / t_pipe:14,.0f} images/s")
    print(f"training step alone:      {t_step * 1e3:9.3f} ms/step   {batch / t_step:14,.0f} images/s")
    print(f"pipeline + training step: {t_both * 1e3:9.3f} ms/step   {batch / t_both:14,.0f} images/s")
    print(f"pipeline time / step time: {t_pipe / t_step:.2%} (alone); "
          f"{(t_both - t_step) / t_step:+.2%} measured beside the step")


if __name__ == "__main__":
    main()
