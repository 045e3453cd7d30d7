"""When to evaluate (trainer.eval_every, eval_every_late, eval_late_fraction, eval_at_start).

`step` counts the optimizer steps done. Evaluate at the last step, and whenever step is a multiple
of the period: eval_every, or eval_every_late once step / max_steps >= eval_late_fraction (the
Modded-NanoGPT benchmark: 125, then 25 in the last 10%, so the earliest step that reaches the
target is known to 25 steps near the end). eval_at_start also scores the initial weights (step 0).
"""

from __future__ import annotations


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
