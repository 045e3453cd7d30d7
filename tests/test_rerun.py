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
    with pytest.raises(ConfigError, match="trainer.extend=true"):  # longer splices two schedules
        run_train([*QUICK, "trainer.max_steps=20"], run_dir=tmp_path / "run")
    extended, _ = run_train([*QUICK, "trainer.max_steps=20", "trainer.extend=true"], run_dir=tmp_path / "run")
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


LEN = [*QUICK, "scheduler=cosine", "trainer.log_every=1", "data.n_train=256", "data.n_test=64"]


def test_another_max_steps_is_refused_with_nothing_written(run_train, tmp_path):
    """Issue 12 #6: max_steps=20 on a finished 10-step cosine run spliced a second schedule onto it."""
    first, run_dir = run_train([*LEN, "trainer.max_steps=10"], run_dir=tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"trainer.max_steps=10 at step 10; trainer.max_steps=20") as e:
        run_train([*LEN, "trainer.max_steps=20"], run_dir=run_dir)
    assert "\n" not in str(e.value)
    for extend in ("false", "true"):  # shorter than the run already is: refused even when asked
        with pytest.raises(ConfigError, match="trainer.max_steps=5 is below step 10"):
            run_train([*LEN, "trainer.max_steps=5", f"trainer.extend={extend}"], run_dir=run_dir)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_extension_is_recorded_with_the_schedule_change(run_train, tmp_path):
    import json

    from omegaconf import OmegaConf

    _, run_dir = run_train([*LEN, "trainer.max_steps=10"], run_dir=tmp_path / "run")
    summary, _ = run_train([*LEN, "trainer.max_steps=20", "trainer.extend=true"], run_dir=run_dir)
    assert summary["steps"] == 20 and summary["status"] == "completed"
    (ext,) = summary["extensions"]
    assert (ext["from_step"], ext["old_max_steps"], ext["new_max_steps"]) == (10, 10, 20)
    # cosine over 10 steps is at its end at step 10; over 20 it is half way: the jump is recorded
    assert ext["lr_mult_old_schedule"] < 0.05 and ext["lr_mult_new_schedule"] == pytest.approx(0.5, abs=0.05)
    assert OmegaConf.load(run_dir / "config.yaml").extensions[0].new_max_steps == 20
    assert json.loads((run_dir / "summary.json").read_text())["extensions"] == summary["extensions"]
    # a later resume keeps the record (it is in the checkpoint) and adds the next one
    again, _ = run_train([*LEN, "trainer.max_steps=25", "trainer.extend=true"], run_dir=run_dir)
    assert [e["new_max_steps"] for e in again["extensions"]] == [20, 25]
    same, _ = run_train([*LEN, "trainer.max_steps=25"], run_dir=run_dir)  # the same length: nothing to do
    assert same["extensions"] == again["extensions"]


def test_another_max_steps_is_refused_before_hydra_writes(run_train, tmp_path):
    """The command line's check (precheck): one line, exit 2, .hydra/ of the finished run untouched."""
    from tests.conftest import optbench_cli

    _, run_dir = run_train([*LEN, "trainer.max_steps=4"], run_dir=tmp_path / "run")
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- trainer.max_steps=4\n")
    r = optbench_cli("train", *LEN, "trainer.max_steps=6", f"hydra.run.dir={run_dir}")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "trainer.extend=true" in r.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == "- trainer.max_steps=4\n"
    # a finished run without a checkpoint cannot be extended: said so, nothing retrained over it
    _, bare = run_train([*QUICK[:-1], "trainer.max_steps=4"], run_dir=tmp_path / "bare")
    r = optbench_cli("train", *QUICK[:-1], "trainer.max_steps=6", "trainer.extend=true", f"hydra.run.dir={bare}")
    assert r.returncode == 2 and "no checkpoint to continue from" in r.stderr, r.stderr


def test_interrupted_run_under_another_max_steps(make_cfg, tmp_path):
    """An interrupted run resumed with another max_steps: refused; with trainer.extend=true it goes on and
    the change is recorded; shorter than its checkpoint's step: refused even so."""
    import signal

    first = Trainer(make_cfg([*LEN, "trainer.max_steps=10"]), tmp_path / "run")
    real_step = first.train_step

    def stop_after_4(micro_batches, want_grad_norm):
        out = real_step(micro_batches, want_grad_norm)
        if first.step == 3:
            first.signals.received = signal.SIGTERM
        return out

    first.train_step = stop_after_4
    assert first.run()["status"] == "interrupted" and first.step == 4
    with pytest.raises(ConfigError, match="trainer.max_steps=10 at step 4; trainer.max_steps=8"):
        Trainer(make_cfg([*LEN, "trainer.max_steps=8"]), tmp_path / "run").run()
    with pytest.raises(ConfigError, match="trainer.max_steps=3 is below step 4"):
        Trainer(make_cfg([*LEN, "trainer.max_steps=3", "trainer.extend=true"]), tmp_path / "run").run()
    done = Trainer(make_cfg([*LEN, "trainer.max_steps=8", "trainer.extend=true"]), tmp_path / "run").run()
    assert done["status"] == "completed" and done["steps"] == 8
    assert [(e["from_step"], e["old_max_steps"], e["new_max_steps"]) for e in done["extensions"]] == [(4, 10, 8)]
