"""task.kind=image_classification: CIFAR-10 (real or synthetic) with a CNN, accuracy as the metric."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from optbench.errors import ConfigError
from optbench.tasks import register_task_kind
from optbench.tasks.base import Task, _dist_sum, loss_reduction


def tta_level(value) -> int:
    """data.tta: 0/false = none, 1/true = mirror, 2 = mirror + 1-pixel translations (airbench)."""
    if isinstance(value, bool) or value is None:
        return int(bool(value))
    return int(value)


def tta_logits(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """Logits averaged over test-time views, weighted as airbench94 does: level 1 averages the
    image and its mirror; level 2 gives that pair weight 1/2 and the mirror pairs of the image
    shifted by one pixel up-left and down-right (reflect-padded) 1/4 each."""

    def mirror(v):
        return 0.5 * model(v).float() + 0.5 * model(v.flip(-1)).float()

    if level <= 0:
        return model(x).float()
    if level == 1:
        return mirror(x)
    from optbench.data.image_pipeline import translate

    n, fmt = (
        len(x),
        torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format,
    )
    up_left, down_right = (
        translate(x, torch.full((n,), s, device=x.device), torch.full((n,), s, device=x.device)).contiguous(
            memory_format=fmt
        )
        for s in (-1, 1)
    )
    return 0.5 * mirror(x) + 0.25 * mirror(up_left) + 0.25 * mirror(down_right)


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean,
    std,
    batch_size: int = 1000,
    tta: int | bool = 0,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    normaliser=None,
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of uint8 images, with test-time augmentation level `tta`
    (see tta_logits). Ranks split the set and the sums are all-reduced. `normaliser` (an
    image_pipeline.Normaliser, made once by the task) fixes the input dtype and formula; without
    it one is made from mean/std once per call, never per batch."""
    from optbench.data.image_pipeline import Normaliser

    norm = normaliser or Normaliser(mean, std, images.device)
    level = tta_level(tta)
    correct = torch.zeros((), device=images.device, dtype=torch.float64)
    loss_sum = torch.zeros((), device=images.device, dtype=torch.float64)
    share = torch.arange(rank, len(images), world_size, device=images.device)
    for start in range(0, len(share), batch_size):
        idx = share[start : start + batch_size]
        x = norm(images[idx])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = tta_logits(model, x, level)
        y = labels[idx]
        correct += (logits.argmax(1) == y).sum()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
    totals = _dist_sum(torch.stack([correct, loss_sum]))
    n = len(images)
    return (totals[0] / n).item(), (totals[1] / n).item()


# the dtype images are handed to the model in: its compute dtype
_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def input_dtype(cfg: DictConfig, model_dtype: str | None = None) -> torch.dtype:
    """bf16/fp16 under trainer.amp, or the model's own dtype (model.dtype, for an fp16 model
    as airbench's), else fp32: batches made in the dtype the first layer computes in spare a
    cast pass per batch."""
    from optbench.config import amp_mode

    amp = amp_mode(cfg.trainer.get("amp", "off"))
    if amp in _DTYPES:
        return _DTYPES[amp]
    # model_dtype: the model's dtype once `auto` is resolved for the device
    return _DTYPES.get(str(model_dtype or cfg.model.get("dtype", "fp32")), torch.float32)


def image_classification(cfg: DictConfig, device: torch.device, rank: int, world_size: int) -> Task:
    """CIFAR-10 arrays on the device, a DeviceImageLoader, cross-entropy, test (and val) accuracy."""
    from optbench.data.cifar10 import read_cifar10
    from optbench.data.image_pipeline import CIFAR_MEAN, CIFAR_STD, DeviceImageLoader, Normaliser, normalise
    from optbench.data.synthetic import read_synthetic_cifar10
    from optbench.models import build_model

    d, t = cfg.data, cfg.trainer
    arrays = (
        read_synthetic_cifar10(d.root, n_train=d.n_train, n_test=d.n_test, noise=d.noise)
        if d.get("synthetic")
        else read_cifar10(d.root)
    )
    train_x, train_y = arrays.train_images, arrays.train_labels
    val_x = val_y = None
    if d.val_split >= len(train_x):
        raise ConfigError(
            f"data.val_split={d.val_split} is invalid: must be below the {len(train_x)} training images in {d.root}"
        )
    if d.val_split:
        # a fixed held-out split (independent of the run seed) keeps tuning off the test set
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))
        val_idx, train_idx = order[: d.val_split], order[d.val_split :]
        val_x, val_y = train_x[val_idx].to(device), train_y[val_idx].to(device)
        train_x, train_y = train_x[train_idx], train_y[train_idx]
    train_x, train_y = train_x.to(device), train_y.to(device)
    test_x, test_y = arrays.test_images.to(device), arrays.test_labels.to(device)

    if t.batch_size > len(train_x):
        raise ConfigError(
            f"trainer.batch_size={t.batch_size} exceeds the {len(train_x)} training images "
            f"in {d.root}; choose a batch size of at most {len(train_x)}"
        )
    channels_last = bool(cfg.model.get("channels_last", False))
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if model_cfg.get("dtype") == "auto":
        # the airbench scripts' fp16 weights on a GPU; fp32 on a CPU, where fp16 convolutions crawl
        model_cfg["dtype"] = "fp16" if device.type == "cuda" else "fp32"
    model = build_model(model_cfg)
    scheme, dtype = d.get("loader", "optbench"), input_dtype(cfg, model_cfg.get("dtype"))
    norm = Normaliser(CIFAR_MEAN, CIFAR_STD, device, dtype, style=scheme)  # made once, for eval too
    data_init_s = 0.0
    if hasattr(model, "init_from_data"):
        # data-dependent init (airbench's whitening layer): the same first training images every
        # run, independent of the seed, as airbench does (its first 5,000); with data.loader=airbench
        # the same pixels as the reference's, normalised as it does. Timed, normalisation included,
        # for trainer.clock_includes=[data_init] (airbench's clock counts it)
        import time

        from optbench.train.clock import synchronize

        synchronize(device)
        start = time.perf_counter()
        model.init_from_data(
            norm(train_x[:5000]) if scheme == "airbench" else normalise(train_x[:5000], CIFAR_MEAN, CIFAR_STD)
        )
        synchronize(device)
        data_init_s = time.perf_counter() - start
    micro = t.batch_size // (t.grad_accum * world_size)
    aug = d.augment

    def make_loader(seed: int) -> DeviceImageLoader:
        return DeviceImageLoader(
            train_x,
            train_y,
            t.batch_size,
            micro,
            CIFAR_MEAN,
            CIFAR_STD,
            flip=aug.flip,
            alternating_flip=aug.alternating_flip,
            translate=aug.translate,
            cutout=aug.cutout,
            seed=seed,
            rank=rank,
            world_size=world_size,
            channels_last=channels_last,
            dtype=dtype,
            scheme=scheme,
        )

    loader = make_loader(cfg.seed)
    smoothing = float(cfg.task.get("label_smoothing", 0.0))
    reduction = loss_reduction(cfg)

    def loss(model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y, label_smoothing=smoothing, reduction=reduction)

    def evaluate(model: nn.Module) -> dict:
        kw = dict(
            mean=CIFAR_MEAN,
            std=CIFAR_STD,
            rank=rank,
            world_size=world_size,
            channels_last=channels_last,
            batch_size=int(cfg.task.get("eval_batch_size", 1000)),
            normaliser=norm,
        )
        acc, nll = evaluate_classifier(model, test_x, test_y, tta=d.tta, **kw)
        out = {"test_acc": acc, "test_loss": nll}
        if val_x is not None:
            out["val_acc"], out["val_loss"] = evaluate_classifier(model, val_x, val_y, tta=d.tta, **kw)
        return out

    return Task(
        name=cfg.task.name,
        model=model,
        train_batches=loader.global_batches(),
        loss=loss,
        evaluate=evaluate,
        metric=cfg.task.metric,
        mode=cfg.task.mode,
        target=cfg.task.target,
        samples_per_step=t.batch_size,
        state_dict=loader.state_dict,
        load_state_dict=loader.load_state_dict,
        make_train_batches=lambda seed: make_loader(seed).global_batches(),
        loss_reduction=reduction,
        summary_extra={
            "train_images": len(train_x),
            "test_images": len(test_x),
            "val_images": 0 if val_x is None else len(val_x),
            "data_init_s": data_init_s,
            **({"model_dtype": model_cfg["dtype"]} if "dtype" in model_cfg else {}),
        },
    )


def validate_image_data(cfg: DictConfig) -> None:
    from pathlib import Path

    d = cfg.data
    if not d.get("synthetic") and not Path(d.root).exists():
        raise ConfigError(
            f"data.root={d.root!r} does not exist; run `optbench data cifar10 --root "
            f"{d.root}` first (or pass data.root=DIR where CIFAR-10 lives)"
        )
    aug = d.augment
    for key in ("translate", "cutout"):
        if not isinstance(aug.get(key), int) or isinstance(aug.get(key), bool):
            raise ConfigError(f"data.augment.{key}={aug.get(key)!r} is invalid: must be a whole number of pixels")
    if not 0 <= aug.translate <= 8:
        raise ConfigError(f"data.augment.translate={aug.translate} is invalid: must be in [0, 8] pixels")
    if not 0 <= aug.cutout <= 32:
        raise ConfigError(f"data.augment.cutout={aug.cutout} is invalid: must be in [0, 32] pixels")
    from optbench.data.image_pipeline import LOADER_SCHEMES

    scheme = d.get("loader", "optbench")
    if scheme not in LOADER_SCHEMES:
        raise ConfigError(f"data.loader={scheme!r} is invalid; valid choices: {', '.join(LOADER_SCHEMES)}")
    if scheme == "airbench" and aug.cutout:
        raise ConfigError(
            f"data.augment.cutout={aug.cutout} is invalid with data.loader=airbench: airbench has no cutout (use 0)"
        )
    for key in ("flip", "alternating_flip"):
        if not isinstance(aug.get(key), bool):
            raise ConfigError(f"data.augment.{key}={aug.get(key)!r} is invalid: must be true or false")
    if d.tta not in (False, True, 0, 1, 2):
        raise ConfigError(f"data.tta={d.tta!r} is invalid; valid choices: 0 (none), 1 (mirror), 2 (mirror + translate)")
    if d.get("synthetic"):  # the generated set's sizes (before val_split, which is checked against them)
        for key in ("n_train", "n_test"):
            v = d.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"data.{key}={v!r} is invalid: must be a whole number >= 1")
    if d.val_split < 0 or (d.get("n_train") and d.val_split >= d.n_train):
        raise ConfigError(f"data.val_split={d.val_split} is invalid: must be >= 0 and below the training-set size")
    smoothing = cfg.task.get("label_smoothing", 0.0)
    if not 0 <= smoothing < 1:
        raise ConfigError(f"task.label_smoothing={smoothing} is invalid: must be in [0, 1)")


register_task_kind(
    "image_classification",
    image_classification,
    validate=validate_image_data,
    models=("airbench", "cnn_small", "resnet18"),
    description="CIFAR-10 image classification (real or synthetic), test accuracy",
)
