"""The run's budgets: trainer.max_steps (also the schedule's horizon) and trainer.max_time_s (train
clock seconds, AlgoPerf-style wall-clock budgets per hardware class), and which one ended the run.

The time budget is tested at each step boundary, after that step's evaluation and checkpoint: the
run stops at the first boundary where the train clock (train/clock.py: steps only, evaluation and
checkpointing excluded) has reached max_time_s, is evaluated there (the final evaluation of a run
its clock ended), and completes. The clock is checkpointed, so a resumed run spends what is left of
the budget, not a new one; a larger max_time_s on resume continues a run the budget stopped.
"""

from __future__ import annotations

from optbench.errors import ConfigError

STOP_REASON_PREFIX = "max_time_s"


def validate_max_time(value) -> None:
    """trainer.max_time_s: null (no time budget) or a positive number of seconds."""
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or value != value
        or value == float("inf")
    ):
        raise ConfigError(
            f"trainer.max_time_s={value!r} is invalid: must be a finite number of seconds > 0, or null (no time budget)"
        )


def time_spent(clock_s: float, max_time_s) -> bool:
    return max_time_s is not None and clock_s >= float(max_time_s)


def out_of_time(trainer) -> bool:
    """At a step boundary: has the train clock reached trainer.max_time_s (on any rank: every rank
    stops at the same step)? Then evaluate the weights the budget ended with, unless this step's
    evaluation already did, and say so in stop_reason. Reads the clock (a device sync) only when a
    time budget is set."""
    limit = trainer.t.get("max_time_s")
    if limit is None:
        return False
    from optbench.train.distributed import broadcast_flag

    if not broadcast_flag(time_spent(trainer.clock.read(), limit), trainer.device):
        return False
    trainer.stop_reason = (
        f"{STOP_REASON_PREFIX}={limit:g} reached at step {trainer.step} of max_steps={trainer.t.max_steps}"
    )
    if not trainer.eval_due(trainer.step):
        trainer.log({**trainer.progress_record("eval"), **trainer.evaluate()})
    return True


def stopped_by(status: str, stop_reason: str | None) -> str | None:
    """Which budget or event ended the run: max_steps | max_time_s | target | diverged |
    interrupted | failed (None while it runs)."""
    if status == "running":
        return None
    if status != "completed":
        return status
    if stop_reason == "target reached":
        return "target"
    if (stop_reason or "").startswith(STOP_REASON_PREFIX):
        return "max_time_s"
    return "max_steps"
