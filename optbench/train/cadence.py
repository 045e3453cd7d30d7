"""When to evaluate (trainer.eval_every, eval_every_late, eval_late_fraction, eval_at_start).

`step` counts the optimizer steps done. Evaluate at the last step, and whenever step is a multiple
of the period: eval_every, or eval_every_late once step / max_steps >= eval_late_fraction (the
Modded-NanoGPT benchmark: 125, then 25 in the last 10%, so the earliest step that reaches the
target is known to 25 steps near the end). eval_at_start also scores the initial weights (step 0).
"""

from __future__ import annotations

from dataclasses import dataclass


def eval_period(
    step: int, max_steps: int, every: int, every_late: int | None = None, late_fraction: float = 0.9
) -> int:
    if every_late and not step / max_steps < late_fraction:
        return int(every_late)
    return int(every)


def eval_due(
    step: int,
    max_steps: int,
    every: int,
    every_late: int | None = None,
    late_fraction: float = 0.9,
    at_start: bool = False,
) -> bool:
    if step == 0:
        return bool(at_start)
    return step == max_steps or step % eval_period(step, max_steps, every, every_late, late_fraction) == 0


@dataclass(frozen=True)
class Cadence:
    """The trainer's per-step knobs as plain numbers, read from the config once. The loop consults
    them every step, and each OmegaConf lookup costs microseconds: about 0.1 ms a step in all, a
    quarter of a diagnostic problem's step (measured), so they are not read from the config there."""

    max_steps: int
    log_every: int
    eval_every: int
    eval_every_late: int | None = None
    eval_late_fraction: float = 0.9
    eval_at_start: bool = False
    checkpoint_every: int = 0
    stop_at_target: bool = False

    @classmethod
    def of(cls, t) -> Cadence:
        return cls(
            max_steps=int(t.max_steps),
            log_every=int(t.log_every),
            eval_every=int(t.eval_every),
            eval_every_late=t.get("eval_every_late"),
            eval_late_fraction=float(t.get("eval_late_fraction", 0.9)),
            eval_at_start=bool(t.get("eval_at_start", False)),
            checkpoint_every=int(t.get("checkpoint_every") or 0),
            stop_at_target=bool(t.get("stop_at_target", False)),
        )

    def eval_due(self, step: int) -> bool:
        return eval_due(step, self.max_steps, self.eval_every, self.eval_every_late, self.eval_late_fraction,
                        self.eval_at_start)  # fmt: skip

    def log_due(self, step: int) -> bool:
        """Log after the step that makes `step` + 1 done: every log_every, the last, and the first."""
        return (step + 1) % self.log_every == 0 or step + 1 == self.max_steps or step == 0

    def checkpoint_due(self, step: int) -> bool:
        """A periodic checkpoint at `step` done (the final one is the end of the run's business)."""
        return bool(self.checkpoint_every) and step % self.checkpoint_every == 0 and step < self.max_steps
