"""Schedule-Free in checkpoints: saved at the evaluation point x, resumed at the training point y."""

from __future__ import annotations

import pytest
import torch

from optbench.train.checkpoint import checkpoint_path, read_checkpoint
from optbench.train.loop import Trainer

COMMON = [
    "optimizer=sf_adamw",
    "trainer.batch_size=32",
    "trainer.eval_every=100",
    "trainer.log_every=1",
    "model.widths=[8,16,16]",
]


def test_checkpoint_holds_the_evaluation_point(make_cfg, tmp_path):
    trainer = Trainer(make_cfg([*COMMON, "trainer.max_steps=6", "trainer.save_final=true"]), tmp_path / "run")
    trainer.run()
    saved = read_checkpoint(checkpoint_path(tmp_path / "run"), torch.device("cpu"))
    y = {k: v.clone() for k, v in trainer.model.state_dict().items()}  # the loop left it in train mode
    trainer.optimizer.eval()
    x = trainer.model.state_dict()
    weight = "features.0.weight"
    assert not torch.equal(x[weight], y[weight])  # x and y differ after a few steps
    torch.testing.assert_close(saved["model"][weight], x[weight], rtol=0, atol=1e-7)
    assert all(not g["train_mode"] for g in saved["optimizer"]["param_groups"])


def test_resume_from_a_checkpoint_continues_the_run(run_train, tmp_path):
    full, _ = run_train([*COMMON, "trainer.max_steps=8"], run_dir=tmp_path / "full")
    run_train([*COMMON, "trainer.max_steps=4", "trainer.save_final=true"], run_dir=tmp_path / "split")
    resumed, _ = run_train([*COMMON, "trainer.max_steps=8", "trainer.extend=true"], run_dir=tmp_path / "split")
    assert resumed["steps"] == 8
    # y -> x -> y at the checkpoint is a float round trip: equal to rounding, not bit for bit
    assert resumed["final_eval"]["test_loss"] == pytest.approx(full["final_eval"]["test_loss"], rel=1e-4)
