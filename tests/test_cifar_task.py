"""task=cifar10 end to end on CPU: real-format files (batches or cache) through the same reader,
pipeline and loop; the data-dependent init; bad input refused before training; the presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from optbench.data.cifar10 import CACHE_FILE, read_cifar10, write_cache, write_cifar10
from optbench.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "model=cnn_small",
    "model.widths=[8,16]",
    "trainer.batch_size=32",
    "trainer.max_steps=4",
    "trainer.eval_every=4",
    "trainer.device=cpu",
    "trainer.amp=off",
]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """A small dataset in the official layout (the reader does not care about the size)."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(1)
    write_cifar10(
        root,
        rng.integers(0, 256, (200, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, 200),
        rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, 60),
    )
    return root


def test_cifar10_task_reads_the_standard_layout_and_the_cache(run_train, cifar_root, tmp_path):
    summary, run_dir = run_train(["task=cifar10", f"data.root={cifar_root}", "data.val_split=40", *TINY])
    assert summary["status"] == "completed"
    assert (summary["train_images"], summary["val_images"], summary["test_images"]) == (160, 40, 60)
    assert {"test_acc", "val_acc"} <= set(summary["final_eval"])
    # the same data from the cache alone gives the identical run
    cache_only = tmp_path / "cache_only"
    cache_only.mkdir()
    write_cache(read_cifar10(cifar_root), cache_only / CACHE_FILE)
    again, _ = run_train(
        ["task=cifar10", f"data.root={cache_only}", "data.val_split=40", *TINY], run_dir=tmp_path / "run2"
    )
    assert again["final_eval"] == summary["final_eval"]


def test_small_cnn_learns_synthetic_cifar_well_above_chance(run_train, tmp_path):
    # a smaller synthetic set of its own (same generator and format) keeps this fast on 2 cores
    summary, _ = run_train(
        [
            "trainer.max_steps=60",
            "trainer.eval_every=60",
            "trainer.device=cpu",
            "trainer.batch_size=32",
            "model.widths=[8,16,32]",
            "optimizer.lr=3e-3",
            f"data.root={tmp_path / 'synthetic'}",
            "data.n_train=2000",
            "data.n_test=500",
        ]
    )
    assert summary["status"] == "completed"
    assert summary["final_metric"] > 0.4  # chance is 0.1 (this run: ~0.5)


def test_task_initialises_the_whitening_layer_from_training_images(make_cfg, cifar_root):
    from optbench.data.image_pipeline import CIFAR_MEAN, CIFAR_STD, normalise
    from optbench.models.cnn import AirbenchNet
    from optbench.tasks import build_task

    cfg = make_cfg(
        [
            "task=cifar10",
            f"data.root={cifar_root}",
            "model.widths=[8,8,8]",
            "model.channels_last=false",
            "trainer.batch_size=32",
            "data.tta=2",
        ]
    )
    task = build_task(cfg, torch.device("cpu"))
    train_x = read_cifar10(cfg.data.root).train_images
    ref = AirbenchNet(widths=(8, 8, 8))
    ref.init_from_data(normalise(train_x[:5000], CIFAR_MEAN, CIFAR_STD))
    assert torch.allclose(task.model.whiten.weight, ref.whiten.weight, atol=1e-6)
    ((x, y),) = next(task.train_batches)
    task.loss(task.model, (x, y)).backward()
    task.model.eval()
    metrics = task.evaluate(task.model)
    assert 0 <= metrics["test_acc"] <= 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.augment.translate=9", r"data.augment.translate=9 is invalid: must be in \[0, 8\]"),
        ("data.augment.cutout=33", r"data.augment.cutout=33 is invalid"),
        ("data.augment.translate=2.5", r"data.augment.translate=2.5 is invalid: must be a whole number"),
        ("data.augment.flip=2", r"data.augment.flip=2 is invalid: must be true or false"),
        ("data.tta=3", r"data.tta=3 is invalid; valid choices: 0 \(none\), 1 \(mirror\), 2"),
        ("task.label_smoothing=1.5", r"task.label_smoothing=1.5 is invalid"),
        ("data.loader=torchvision", r"data.loader='torchvision' is invalid; valid choices: optbench, airbench"),
        ("data.loader=airbench data.augment.cutout=8", r"data.augment.cutout=8 is invalid with data.loader=airbench"),
    ],
)
def test_bad_augmentation_is_refused_before_training(make_cfg, override, message):
    from optbench.config import validate

    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(override.split()))


def test_missing_data_root_says_how_to_download(make_cfg, tmp_path):
    from optbench.config import validate

    with pytest.raises(ConfigError, match=r"data.root=.*does not exist; run `optbench data cifar10 --root"):
        validate(make_cfg(["task=cifar10", f"data.root={tmp_path / 'nowhere'}"]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"no CIFAR-10 files in .*optbench data cifar10 --root DIR"):
        from optbench.tasks import build_task

        build_task(make_cfg(["task=cifar10", f"data.root={empty}"]), torch.device("cpu"))


def test_batch_larger_than_the_training_set_is_refused(make_cfg, cifar_root):
    from optbench.tasks import build_task

    with pytest.raises(ConfigError, match=r"trainer.batch_size=256 exceeds the 200 training images"):
        build_task(make_cfg(["task=cifar10", f"data.root={cifar_root}", "trainer.batch_size=256"]), torch.device("cpu"))


def test_cli_reports_a_missing_dataset_in_one_line(tmp_path):
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("optbench")  # the console script, as a user runs it
    r = subprocess.run(
        [str(exe), "train", "task=cifar10", f"data.root={tmp_path / 'absent'}", "trainer.device=cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("optbench: error: data.root=")
    assert "optbench data cifar10" in r.stderr


@pytest.mark.parametrize(
    "preset, checks",
    [
        (
            "airbench94",
            {
                "model.name": "airbench",
                "model.output_scale": 1 / 9,
                "model.whiten_order": "descending",
                "model.whiten_bias_init": "zero",
                "model.head_unit_std": False,
                "model.dtype": "auto",
                "optimizer.name": "nesterov",
                "trainer.batch_size": 1024,
                "optimizer.momentum": 0.85,
                "task.label_smoothing": 0.2,
                "task.loss_reduction": "sum",
                "task.target": 0.94,
                "task.benchmark": "airbench94",
                "data.tta": 2,
                "data.augment.alternating_flip": True,
                "trainer.stop_at_target": False,
                "trainer.max_steps": 476,
                "trainer.averaging.kind": "lookahead",
                "trainer.clock_includes": ["data_init", "final_eval"],
                "scheduler.name": "piecewise_linear",
                "optimizer.groups.whiten_bias.freeze_after_steps": 144,
            },
        ),
        (
            "airbench94_muon",
            {
                "model.name": "airbench",
                "model.output_scale": "inverse_width",
                "model.whiten_order": "ascending",
                "model.whiten_bias_init": "default",
                "model.head_unit_std": True,
                "optimizer.name": "muon",
                "trainer.batch_size": 2000,
                "optimizer.fallback": {
                    "name": "nesterov",
                    "lr": 0.053,
                    "momentum": 0.85,
                    "weight_decay": 0.004 / 0.053,
                },
                "optimizer.groups.head.lr": 0.67,
                "optimizer.groups.head.weight_decay_value": 0.004 / 0.67,
                "optimizer.groups.whiten_bias.freeze_after_steps": 75,
                "task.label_smoothing": 0.2,
                "task.loss_reduction": "sum",
                "task.benchmark": "airbench94_muon",
                "data.tta": 2,
                "trainer.max_steps": 200,
                "trainer.averaging.kind": "none",
                "trainer.clock_includes": ["data_init", "final_eval"],
            },
        ),
        (
            "cifar10_resnet18",
            {
                "model.name": "resnet18",
                "optimizer.name": "nesterov",
                "trainer.batch_size": 128,
                "scheduler.name": "cosine",
                "trainer.max_steps": 78000,
            },
        ),
    ],
)
def test_presets_compose_and_validate(make_cfg, data_root, preset, checks):
    from omegaconf import OmegaConf

    from optbench.config import validate

    (data_root / "cifar10").mkdir(exist_ok=True)  # the default data.root must exist to validate
    cfg = make_cfg([f"experiment={preset}"])
    for key, value in checks.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, key
    validate(cfg)
    # the recipe's epochs: steps x batch / 50,000 training images
    epochs = cfg.trainer.max_steps * cfg.trainer.batch_size / 50_000
    assert {"airbench94": 9.7, "airbench94_muon": 8.0, "cifar10_resnet18": 199.7}[preset] == pytest.approx(
        epochs, abs=0.1
    )


@pytest.mark.parametrize(
    "overrides, dtype",
    [
        (["trainer.amp=bf16"], torch.bfloat16),
        (["trainer.amp=fp16", "data.loader=airbench"], torch.float16),
        (["data.loader=airbench"], torch.float32),
    ],
)
def test_batches_and_evaluation_inputs_come_in_the_compute_dtype(make_cfg, cifar_root, overrides, dtype):
    from optbench.tasks import build_task
    from optbench.tasks.image_classification import input_dtype

    cfg = make_cfg(["task=cifar10", f"data.root={cifar_root}", *TINY, *overrides])
    assert input_dtype(cfg) == dtype
    task = build_task(cfg, torch.device("cpu"))
    ((x, y),) = next(task.train_batches)
    assert x.dtype == dtype and len(x) == 32
    seen = []
    handle = task.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype != torch.float32):
        task.evaluate(task.model)
    handle.remove()
    assert set(seen) == {dtype}


def test_airbench_loader_whitens_from_the_references_fp16_pixels(make_cfg, cifar_root):
    from optbench.data.image_pipeline import CIFAR_MEAN, CIFAR_STD, Normaliser
    from optbench.models.cnn import AirbenchNet
    from optbench.tasks import build_task

    cfg = make_cfg(
        [
            "task=cifar10",
            f"data.root={cifar_root}",
            "model.widths=[8,8,8]",
            "trainer.batch_size=32",
            "trainer.device=cpu",
            "trainer.amp=fp16",
            "data.loader=airbench",
        ]
    )
    task = build_task(cfg, torch.device("cpu"))
    train_x = read_cifar10(cfg.data.root).train_images
    pixels = Normaliser(CIFAR_MEAN, CIFAR_STD, "cpu", torch.float16, style="airbench")(train_x[:5000])
    ref = AirbenchNet(widths=(8, 8, 8))
    ref.init_from_data(pixels)
    assert torch.equal(task.model.whiten.weight, ref.whiten.weight)


def test_airbench_presets_lengths_and_lrs_are_the_scripts_arithmetic(make_cfg, data_root):
    """My transcription of the scripts' arithmetic: steps = ceil(50,000 // batch x epochs); airbench94's
    decoupled hyperparameters -> torch SGD's (lr, coupled weight_decay = wd / lr) per group."""
    import math

    legacy = make_cfg(["experiment=airbench94"])
    assert legacy.trainer.max_steps == math.ceil(50_000 // 1024 * 9.9)
    kilostep = 1024 * (1 + 1 / (1 - 0.85))
    lr, wd = 11.5 / kilostep, 0.0153 * 1024 / kilostep
    o = legacy.optimizer
    assert (o.lr, o.weight_decay) == (lr, wd / lr)
    assert (o.groups.scalar.lr, o.groups.scalar.weight_decay_value) == (lr * 64, wd / (lr * 64))
    assert (o.groups.whiten_bias.lr, o.groups.whiten_bias.weight_decay_value) == (lr, wd / lr)
    assert o.groups.whiten_bias.freeze_after_steps == 3 * (50_000 // 1024)
    muon = make_cfg(["experiment=airbench94_muon"])
    assert muon.trainer.max_steps == math.ceil(8 * (50_000 // 2000))
    w = muon.optimizer.groups.whiten_bias
    assert w.freeze_after_steps == w.lr_schedule.steps == math.ceil(3 * (50_000 // 2000))
    assert (w.lr, w.weight_decay_value) == (0.053, 2e-6 * 2000 / 0.053)


AIRBENCH_TINY = [
    "task=cifar10_synthetic",
    "model.widths=[8,8,8]",
    "trainer.batch_size=100",
    "trainer.max_steps=6",
    "trainer.eval_every=3",
    "trainer.device=cpu",
    "data.n_train=400",
    "data.n_test=100",
    "trainer.log_every=1",
    "optimizer.groups.whiten_bias.freeze_after_steps=2",
]


def test_airbench94_trains_and_its_clock_counts_the_init_and_the_final_eval(make_cfg, tmp_path):
    import json
    import time

    from optbench.train.loop import Trainer

    cfg = make_cfg(["experiment=airbench94", *AIRBENCH_TINY, f"data.root={tmp_path / 'syn'}"])
    trainer = Trainer(cfg, tmp_path / "run")
    evaluate = trainer.task.evaluate

    def slow_evaluate(model):  # every evaluation takes >= 0.5 s: visible on the clock only if timed
        time.sleep(0.5)
        return evaluate(model)

    trainer.task.evaluate = slow_evaluate
    summary = trainer.run()
    assert summary["status"] == "completed" and summary["model_dtype"] == "fp32"  # auto on a CPU
    assert summary["clock_includes"] == ["data_init", "final_eval"] and summary["data_init_s"] > 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in lines if r["type"] == "train"}
    evals = {r["step"]: r for r in lines if r["type"] == "eval"}
    assert set(train[1]["lr"]) == {"matrix", "head", "scalar", "whiten_bias"}
    assert evals[3]["time_s"] - train[3]["time_s"] < 0.5  # a per-epoch evaluation: untimed
    assert evals[6]["time_s"] - train[6]["time_s"] >= 0.5  # the final evaluation: timed
    assert train[1]["time_s"] > summary["data_init_s"]  # the clock starts with the whitening init
    assert summary["train_time_s"] == pytest.approx(evals[6]["time_s"], abs=1e-3)


def test_a_frozen_group_stops_moving_in_the_loop(make_cfg, tmp_path):
    """The loop drops a frozen group's gradients: its tensor is the same after every later step."""
    from optbench.train.loop import Trainer

    cfg = make_cfg(
        [
            "experiment=airbench94",
            *AIRBENCH_TINY,
            f"data.root={tmp_path / 'syn'}",
            "trainer.max_steps=4",
            "trainer.averaging.kind=none",
        ]
    )
    trainer = Trainer(cfg, tmp_path / "run")
    bias = trainer.model.whiten.bias
    seen = []
    batches = trainer.task.train_batches
    for step in range(4):
        trainer.step = step
        trainer.set_lr(step)
        trainer.train_step(next(batches), want_grad_norm=False)
        seen.append(bias.detach().clone())
    assert not torch.equal(seen[0], seen[1])  # steps 0, 1 train it
    assert torch.equal(seen[1], seen[2]) and torch.equal(seen[2], seen[3])  # frozen after 2 steps


def test_airbench94_resumes_exactly_across_lookahead_and_the_freeze(run_train, tmp_path):
    """Resumed at step 6 of 8: the Lookahead slow copy (updated at step 5, final update at 8) and the
    whitening-bias freeze (from step 7) come back, so the final weights equal an uninterrupted run's."""
    import shutil

    from optbench.train import checkpoint as ckpt

    base = [
        "experiment=airbench94",
        *AIRBENCH_TINY,
        f"data.root={tmp_path / 'syn'}",
        "trainer.max_steps=8",
        "trainer.eval_every=4",
        "optimizer.groups.whiten_bias.freeze_after_steps=7",
        "trainer.save_final=true",
    ]
    whole, whole_dir = run_train([*base], tmp_path / "whole")
    _, with_ckpt = run_train([*base, "trainer.checkpoint_every=3"], tmp_path / "with_ckpt")
    step6 = tmp_path / "step6.pt"
    shutil.copy(ckpt.previous_path(with_ckpt), step6)  # checkpoints at 3, 6 and the final one at 8
    assert ckpt.read_checkpoint(step6, torch.device("cpu"))["bookkeeping"]["step"] == 6
    resumed, resumed_dir = run_train([*base, f"trainer.resume={step6}"], tmp_path / "resumed")
    assert resumed["steps"] == 8 and resumed["final_eval"] == whole["final_eval"]
    ours = ckpt.read_checkpoint(ckpt.checkpoint_path(resumed_dir), torch.device("cpu"))["model"]
    theirs = ckpt.read_checkpoint(ckpt.checkpoint_path(whole_dir), torch.device("cpu"))["model"]
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
