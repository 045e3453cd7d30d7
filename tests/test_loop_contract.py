"""The training loop's contract (docs/design.md): run-directory files, summary fields, timing rules,
accumulation, reproducibility."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from optbench.models import MODELS
from optbench.train.clock import TrainClock
from optbench.train.loop import Trainer

SMALL = ["trainer.max_steps=20", "trainer.eval_every=10", "trainer.log_every=5", "trainer.batch_size=64"]

SUMMARY_FIELDS = {
    "status",
    "final_metric",
    "best_metric",
    "target",
    "reached",
    "time_to_target_s",
    "steps_to_target",
    "train_time_s",
    "throughput_samples_per_s",
    "peak_memory_bytes",
    "param_count",
    "optimizer_state_bytes",
    "environment",
}
ENV_FIELDS = {"torch", "device_name", "world_size", "git_commit"}


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def linear_model():
    """A BatchNorm-free model: micro-batches then give exactly the gradient of the full batch."""
    MODELS["linear_test"] = lambda **kw: nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    yield "model.name=linear_test"
    MODELS.pop("linear_test")


def test_run_directory_contract(run_train):
    summary, run_dir = run_train(SMALL)
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.jsonl", "summary.json"}
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_FIELDS <= set(on_disk)
    assert ENV_FIELDS <= set(on_disk["environment"])
    assert on_disk["status"] == "completed" and on_disk["steps"] == 20
    assert on_disk["environment"]["torch"] == torch.__version__
    assert on_disk["param_count"] == sum(p.numel() for p in MODELS["cnn_small"]().parameters())
    # AdamW keeps two fp32 moments per parameter (+ a step counter per tensor)
    assert on_disk["optimizer_state_bytes"] >= 2 * 4 * on_disk["param_count"]

    lines = read_metrics(run_dir)
    train = [r for r in lines if r["type"] == "train"]
    evals = [r for r in lines if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20]
    assert [r["step"] for r in train] == [1, 5, 10, 15, 20]
    for r in train:
        assert {"step", "samples", "time_s", "loss", "lr", "grad_norm"} <= set(r)
        assert r["samples"] == r["step"] * 64
        assert set(r["lr"]) == {"matrix", "head", "scalar"}
    assert evals[-1]["test_acc"] == on_disk["final_metric"]
    assert on_disk["best_metric"] == max(e["test_acc"] for e in evals)

    config = (run_dir / "config.yaml").read_text()
    for key in ("seed: 0", "max_steps: 20", "name: adamw", "lr_by_role", "versions"):
        assert key in config


def test_loss_falls_and_learns(run_train):
    summary, run_dir = run_train(["trainer.max_steps=60", "trainer.eval_every=60", "trainer.log_every=10"])
    losses = [r["loss"] for r in read_metrics(run_dir) if r["type"] == "train"]
    assert losses[-1] < 0.6 * losses[0]
    assert summary["final_metric"] > 0.4  # 10 classes: chance is 0.1


def test_train_clock_excludes_evaluation(make_cfg, tmp_path, monkeypatch):
    """Each evaluation advances the clock's time source by 100 s; none of it may be counted."""
    import optbench.train.clock as clock_module

    offset = [0.0]
    real = time.perf_counter
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: real() + offset[0])
    trainer = Trainer(make_cfg(SMALL), tmp_path / "run")
    real_evaluate = trainer.task.evaluate

    def slow_evaluate(model):
        offset[0] += 100.0
        return real_evaluate(model)

    trainer.task.evaluate = slow_evaluate
    summary = trainer.run()
    assert summary["train_time_s"] < 100
    times = {(r["type"], r["step"]): r["time_s"] for r in read_metrics(tmp_path / "run")}
    assert times[("train", 15)] - times[("eval", 10)] < 100
    assert times[("eval", 10)] == pytest.approx(times[("train", 10)], abs=1.0)


def test_clock_pause_and_read():
    clock = TrainClock(torch.device("cpu"))
    clock.start()
    time.sleep(0.05)
    with clock.paused():
        time.sleep(0.2)
        assert not clock.running
    assert clock.running
    elapsed = clock.stop()
    assert 0.04 < elapsed < 0.2


def test_grad_accumulation_equals_bigger_batch(run_train, linear_model, tmp_path):
    common = [
        linear_model,
        "optimizer=sgd",
        "trainer.max_steps=6",
        "trainer.eval_every=6",
        "trainer.log_every=1",
        "trainer.batch_size=64",
        "data.augment.flip=false",
        "data.augment.translate=0",
    ]
    one, dir_one = run_train([*common, "trainer.grad_accum=1"], run_dir=tmp_path / "a")
    four, dir_four = run_train([*common, "trainer.grad_accum=4"], run_dir=tmp_path / "b")
    loss_one = [r["loss"] for r in read_metrics(dir_one) if r["type"] == "train"]
    loss_four = [r["loss"] for r in read_metrics(dir_four) if r["type"] == "train"]
    assert loss_one == pytest.approx(loss_four, rel=1e-5)
    assert one["final_metric"] == pytest.approx(four["final_metric"], abs=1e-9)


def test_same_seed_reproduces_exactly(run_train, tmp_path):
    def strip_time(lines):
        return [{k: v for k, v in r.items() if k not in ("time_s", "img_per_s")} for r in lines]

    _, a = run_train([*SMALL, "seed=3"], run_dir=tmp_path / "a")
    _, b = run_train([*SMALL, "seed=3"], run_dir=tmp_path / "b")
    _, c = run_train([*SMALL, "seed=4"], run_dir=tmp_path / "c")
    assert strip_time(read_metrics(a)) == strip_time(read_metrics(b))
    assert strip_time(read_metrics(a)) != strip_time(read_metrics(c))


def test_stop_at_target_and_time_to_target(run_train):
    summary, run_dir = run_train(
        ["trainer.max_steps=200", "trainer.eval_every=10", "task.target=0.3", "trainer.stop_at_target=true"]
    )
    evals = [r for r in read_metrics(run_dir) if r["type"] == "eval"]
    first_hit = next(r for r in evals if r["test_acc"] >= 0.3)
    assert summary["reached"] and summary["steps_to_target"] == first_hit["step"]
    assert summary["time_to_target_s"] == pytest.approx(first_hit["time_s"], abs=1e-3)
    assert summary["steps"] == first_hit["step"] < 200
    assert summary["status"] == "completed"


def test_target_not_reached_is_recorded(run_train):
    summary, _ = run_train([*SMALL, "task.target=1.01"])
    assert summary["reached"] is False
    assert summary["time_to_target_s"] is None and summary["steps_to_target"] is None


def test_gradient_clipping_bounds_the_update(make_cfg, linear_model, tmp_path):
    """With SGD (lr=1, no momentum, no decay) and clip c, one step moves the weights by exactly c."""
    cfg = make_cfg(
        [
            linear_model,
            "optimizer=sgd",
            "optimizer.lr=1.0",
            "trainer.grad_clip=0.01",
            "trainer.max_steps=1",
            "trainer.eval_every=1",
            "trainer.log_every=1",
        ]
    )
    trainer = Trainer(cfg, tmp_path / "run")
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    trainer.run()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    first = read_metrics(tmp_path / "run")[0]
    assert first["grad_norm"] > 0.01  # the logged norm is the unclipped one
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-4)
