"""Running again: a finished run is left as it was, a changed config is refused, and a multirun
job leaves nothing behind for the next one (found in review: R3 #1, #2, #10)."""
from __future__ import annotations

import gc
import weakref

import pytest

from optbench.errors import ConfigError
from optbench.train.loop import Trainer

QUICK = ["trainer.batch_size=32", "trainer.eval_every=10", "model.widths=[8,16,16]", "trainer.save_final=true"]


def test_finished_stop_at_target_run_is_not_retrained(run_train, tmp_path):
    args = [*QUICK, "trainer.max_steps=200", "task.target=0.2", "trainer.stop_at_target=true"]
    first, run_dir = run_train(args, run_dir=tmp_path / "run")
    assert first["steps"] < 200
    before = (run_dir / "summary.json").read_bytes()
    second, _ = run_train(args, run_dir=run_dir)
    assert second["steps"] == first["steps"]
    assert (run_dir / "summary.json").read_bytes() == before


def test_resume_under_changed_hyperparameters_is_refused(run_train, tmp_path):
    run_train([*QUICK, "trainer.max_steps=10"], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="optimizer.lr=0.001, this run has optimizer.lr=0.002"):
        run_train([*QUICK, "trainer.max_steps=20", "optimizer.lr=0.002"], run_dir=tmp_path / "run")
    extended, _ = run_train([*QUICK, "trainer.max_steps=20"], run_dir=tmp_path / "run")  # longer is fine
    assert extended["steps"] == 20


def test_the_next_job_starts_after_the_previous_one_is_freed(make_cfg, tmp_path):
    """A multirun's jobs share a process: the previous job's model, optimizer state and on-device data
    must be gone before the next job starts measuring its peak memory (R3 #1: a lambda over self kept
    them alive until the cycle collector happened to run)."""
    gc.disable()  # as if the collector had not run between the jobs
    try:
        first = Trainer(make_cfg([*QUICK, "trainer.max_steps=2", "trainer.amp=bf16"]), tmp_path / "a")
        first.run()
        alive = weakref.ref(first.optimizer)
        del first
        Trainer(make_cfg([*QUICK, "trainer.max_steps=2"]), tmp_path / "b")
        assert alive() is None
    finally:
        gc.enable()
