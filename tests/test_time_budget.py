"""trainer.max_time_s (K2): a train-clock budget beside the step budget; summary.json says which one
ended the run (stopped_by), and a resumed run spends what is left of the budget."""

from __future__ import annotations

import json

import pytest

TINY = [
    "trainer.device=cpu",
    "trainer.batch_size=32",
    "model.widths=[4,8,8]",
    "data.n_train=128",
    "data.n_test=64",
    "trainer.max_steps=6",
    "trainer.eval_every=4",
    "trainer.log_every=1",
]


def test_tiny_time_budget_stops_early_evaluated_and_says_so(run_train):
    # a nanosecond: spent by the first step, whatever the machine
    summary, run_dir = run_train([*TINY, "trainer.max_time_s=1e-9"])
    assert summary["status"] == "completed" and summary["stopped_by"] == "max_time_s"
    assert summary["steps"] == 1 and summary["max_steps"] == 6
    assert "max_time_s=1e-09 reached at step 1" in summary["stop_reason"]
    evals = [
        json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(x)["type"] == "eval"
    ]
    # the weights the budget ended with are evaluated (step 1 is no eval_every step)
    assert [e["step"] for e in evals] == [1] and summary["final_metric"] == evals[0]["test_acc"]


def test_step_budget_and_an_ample_time_budget_say_max_steps(run_train):
    summary, _ = run_train([*TINY, "trainer.max_time_s=3600"])
    assert summary["steps"] == 6 and summary["stopped_by"] == "max_steps"


def test_resume_keeps_the_train_clock_so_the_budget_is_not_renewed(run_train, tmp_path):
    run_dir = tmp_path / "r"
    first, _ = run_train([*TINY, "trainer.max_time_s=1e-9", "trainer.save_final=true"], run_dir)
    assert first["steps"] == 1
    # the same command: the checkpoint's clock has spent the budget, so nothing more is trained
    again, _ = run_train([*TINY, "trainer.max_time_s=1e-9", "trainer.save_final=true"], run_dir)
    assert again["steps"] == 1 and again["stopped_by"] == "max_time_s"
    # no time budget now: the run goes on to max_steps, its clock continuing from the checkpoint's
    more, _ = run_train([*TINY, "trainer.save_final=true"], run_dir)
    assert more["steps"] == 6 and more["stopped_by"] == "max_steps"
    assert more["train_time_s"] >= first["train_time_s"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "true", "inf"])
def test_bad_max_time_is_one_line(value, make_cfg):
    from optbench.config import validate
    from optbench.errors import ConfigError

    # a wrong type is the trainer schema's line, a bad number the budget's own; both name key and value
    with pytest.raises(
        ConfigError,
        match=r"^trainer.max_time_s=.* is invalid: must be a (finite )?number"
        r"( of seconds > 0)?,? \(?or null",
    ):
        validate(make_cfg([f"trainer.max_time_s={value}"]))


def test_stopped_by_names_every_ending():
    from optbench.train.budget import stopped_by

    assert stopped_by("running", None) is None
    assert stopped_by("completed", None) == "max_steps"
    assert stopped_by("completed", "target reached") == "target"
    assert stopped_by("diverged", "loss nan at step 3") == "diverged"
    assert stopped_by("interrupted", "signal SIGTERM") == "interrupted"
    assert stopped_by("failed", "RuntimeError: x") == "failed"
