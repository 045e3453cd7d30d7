"""AMP and torch.compile paths of the loop, on the CPU (CUDA variants skip without a GPU)."""

from __future__ import annotations

import json

import pytest
import torch

from optbench.train.loop import Trainer

QUICK = ["trainer.eval_every=100", "trainer.log_every=1", "trainer.batch_size=32"]


def train_losses(run_dir):
    return [
        json.loads(line)["loss"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "train"
    ]


@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_runs_the_forward_in_low_precision(make_cfg, tmp_path, amp, dtype):
    trainer = Trainer(make_cfg([*QUICK, f"trainer.amp={amp}", "trainer.max_steps=4"]), tmp_path / "run")
    x, _ = next(trainer.task.train_batches)[0]
    with trainer.autocast():
        assert trainer.model(x).dtype == dtype
    assert trainer.scaler.is_enabled() == (amp == "fp16")  # fp16 needs loss scaling, bf16 does not
    summary = trainer.run()
    assert summary["status"] == "completed"
    losses = train_losses(tmp_path / "run")
    assert all(map(lambda v: v == v and v < 10, losses))  # finite, no overflow


def test_fp16_grad_scaler_state_survives_in_the_checkpoint(make_cfg, tmp_path):
    from optbench.train.checkpoint import checkpoint_path, read_checkpoint

    cfg = make_cfg([*QUICK, "trainer.amp=fp16", "trainer.max_steps=3", "trainer.save_final=true"])
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.run()
    state = read_checkpoint(checkpoint_path(tmp_path / "run"), torch.device("cpu"))
    assert state["scaler"]["scale"] == trainer.scaler.get_scale()
    assert state["scaler"]["_growth_tracker"] == 3  # three steps without an overflow


@pytest.mark.slow
def test_compile_warmup_is_untimed_and_leaves_no_trace(run_train, tmp_path):
    """The compiled run's losses equal the eager run's: the warm-up pass changed neither the weights,
    the BatchNorm statistics nor the data stream; and its seconds are not on the train clock."""
    common = [*QUICK, "trainer.max_steps=3", "optimizer=sgd"]
    eager, eager_dir = run_train(common, run_dir=tmp_path / "eager")
    compiled, compiled_dir = run_train([*common, "trainer.compile=true"], run_dir=tmp_path / "compiled")
    assert compiled["compile_warmup_s"] > 0 and eager["compile_warmup_s"] == 0
    assert compiled["train_time_s"] < compiled["compile_warmup_s"]
    assert train_losses(compiled_dir) == pytest.approx(train_losses(eager_dir), rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_run(run_train):
    summary, _ = run_train([*QUICK, "trainer.device=cuda", "trainer.amp=bf16", "trainer.max_steps=20"])
    assert summary["status"] == "completed"
    assert summary["peak_memory_kind"] == "cuda_max_allocated"
    assert "cuda" in summary["environment"]["device"]
