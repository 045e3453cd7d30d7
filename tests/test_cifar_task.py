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
TINY = ["model=cnn_small", "model.widths=[8,16]", "trainer.batch_size=32", "trainer.max_steps=4",
        "trainer.eval_every=4", "trainer.device=cpu", "trainer.amp=off"]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """A small dataset in the official layout (the reader does not care about the size)."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(1)
    write_cifar10(root, rng.integers(0, 256, (200, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 200),
                  rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 60))
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
    again, _ = run_train(["task=cifar10", f"data.root={cache_only}", "data.val_split=40", *TINY],
                         run_dir=tmp_path / "run2")
    assert again["final_eval"] == summary["final_eval"]


def test_small_cnn_learns_synthetic_cifar_well_above_chance(run_train, tmp_path):
    # a smaller synthetic set of its own (same generator and format) keeps this fast on 2 cores
    summary, _ = run_train(["trainer.max_steps=60", "trainer.eval_every=60", "trainer.device=cpu",
                            "trainer.batch_size=32", "model.widths=[8,16,32]", "optimizer.lr=3e-3",
                            f"data.root={tmp_path / 'synthetic'}", "data.n_train=2000", "data.n_test=500"])
    assert summary["status"] == "completed"
    assert summary["final_metric"] > 0.4   # chance is 0.1 (this run: ~0.5)


def test_task_initialises_the_whitening_layer_from_training_images(make_cfg, cifar_root):
    from optbench.data.image_pipeline import CIFAR_MEAN, CIFAR_STD, normalise
    from optbench.models.cnn import AirbenchNet
    from optbench.tasks import build_task

    cfg = make_cfg(["task=cifar10", f"data.root={cifar_root}", "model.widths=[8,8,8]",
                    "model.channels_last=false", "trainer.batch_size=32", "data.tta=2"])
    task = build_task(cfg, torch.device("cpu"))
    train_x = read_cifar10(cfg.data.root).train_images
    ref = AirbenchNet(widths=(8, 8, 8))
    ref.init_from_data(normalise(train_x[:5000], CIFAR_MEAN, CIFAR_STD))
    assert torch.allclose(task.model.whiten.weight, ref.whiten.weight, atol=1e-6)
    (x, y), = next(task.train_batches)
    task.loss(task.model, (x, y)).backward()
    task.model.eval()
    metrics = task.evaluate(task.model)
    assert 0 <= metrics["test_acc"] <= 1


@pytest.mark.parametrize("override, message", [
    ("data.augment.translate=9", r"data.augment.translate=9 is invalid: must be in \[0, 8\]"),
    ("data.augment.cutout=33", r"data.augment.cutout=33 is invalid"),
    ("data.augment.translate=2.5", r"data.augment.translate=2.5 is invalid: must be a whole number"),
    ("data.augment.flip=2", r"data.augment.flip=2 is invalid: must be true or false"),
    ("data.tta=3", r"data.tta=3 is invalid; valid choices: 0 \(none\), 1 \(mirror\), 2"),
    ("task.label_smoothing=1.5", r"task.label_smoothing=1.5 is invalid"),
    ("data.loader=torchvision", r"data.loader='torchvision' is invalid; valid choices: optbench, airbench"),
    ("data.loader=airbench data.augment.cutout=8", r"data.augment.cutout=8 is invalid with data.loader=airbench"),
])
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
        build_task(make_cfg(["task=cifar10", f"data.root={cifar_root}", "trainer.batch_size=256"]),
                   torch.device("cpu"))


def test_cli_reports_a_missing_dataset_in_one_line(tmp_path):
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("optbench")   # the console script, as a user runs it
    r = subprocess.run([str(exe), "train", "task=cifar10", f"data.root={tmp_path / 'absent'}",
                        "trainer.device=cpu"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("optbench: error: data.root=")
    assert "optbench data cifar10" in r.stderr


@pytest.mark.parametrize("preset, checks", [
    ("cifar10_speedrun", {"model.name": "airbench", "optimizer.name": "nesterov", "trainer.batch_size": 1024,
                          "task.label_smoothing": 0.2, "task.target": 0.94, "data.tta": 2,
                          "trainer.stop_at_target": False, "trainer.max_steps": 476}),
    ("cifar10_speedrun_muon", {"model.name": "airbench", "optimizer.name": "muon", "trainer.batch_size": 2000,
                               "optimizer.fallback": {"name": "nesterov", "lr": 106.0, "momentum": 0.85,
                                                      "weight_decay": 3.77e-5},
                               "task.label_smoothing": 0.2, "data.tta": 2, "trainer.max_steps": 200}),
    ("cifar10_resnet18", {"model.name": "resnet18", "optimizer.name": "nesterov", "trainer.batch_size": 128,
                          "scheduler.name": "cosine", "trainer.max_steps": 78000}),
])
def test_presets_compose_and_validate(make_cfg, data_root, preset, checks):
    from omegaconf import OmegaConf

    from optbench.config import validate

    if checks["optimizer.name"] == "muon" and not (REPO / "conf/optimizer/muon.yaml").exists():
        pytest.skip("conf/optimizer/muon.yaml has not landed yet")
    (data_root / "cifar10").mkdir(exist_ok=True)   # the default data.root must exist to validate
    cfg = make_cfg([f"experiment={preset}"])
    for key, value in checks.items():
        assert OmegaConf.select(cfg, key) == value, key
    validate(cfg)
    # the recipe's epochs: steps x batch / 50,000 training images
    epochs = cfg.trainer.max_steps * cfg.trainer.batch_size / 50_000
    assert {"cifar10_speedrun": 9.7, "cifar10_speedrun_muon": 8.0, "cifar10_resnet18": 199.7}[preset] == \
        pytest.approx(epochs, abs=0.1)


@pytest.mark.parametrize("overrides, dtype", [
    (["trainer.amp=bf16"], torch.bfloat16),
    (["trainer.amp=fp16", "data.loader=airbench"], torch.float16),
    (["data.loader=airbench"], torch.float32),
])
def test_batches_and_evaluation_inputs_come_in_the_compute_dtype(make_cfg, cifar_root, overrides, dtype):
    from optbench.tasks import build_task, input_dtype

    cfg = make_cfg(["task=cifar10", f"data.root={cifar_root}", *TINY, *overrides])
    assert input_dtype(cfg) == dtype
    task = build_task(cfg, torch.device("cpu"))
    (x, y), = next(task.train_batches)
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

    cfg = make_cfg(["task=cifar10", f"data.root={cifar_root}", "model.widths=[8,8,8]", "trainer.batch_size=32",
                    "trainer.device=cpu", "trainer.amp=fp16", "data.loader=airbench"])
    task = build_task(cfg, torch.device("cpu"))
    train_x = read_cifar10(cfg.data.root).train_images
    pixels = Normaliser(CIFAR_MEAN, CIFAR_STD, "cpu", torch.float16, style="airbench")(train_x[:5000])
    ref = AirbenchNet(widths=(8, 8, 8))
    ref.init_from_data(pixels)
    assert torch.equal(task.model.whiten.weight, ref.whiten.weight)
