"""What `optbench schedule` shows: the lr multiplier (and momentum) curves of a composed config,
built as the loop builds them, and their plot. The command line is optbench/commands/schedule.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from optbench.errors import ConfigError
from optbench.plotting import pyplot, save_figure


def schedule_curves(cfg) -> dict:
    """steps, lr multipliers, and (if configured) momentum values for the composed config."""
    from optbench.optim import validate_optimizer_config
    from optbench.schedules import (
        build_momentum_schedule,
        build_schedule_from_config,
        lr_scale,
        validate_optimizer_schedules,
        validate_schedule_config,
    )

    t = cfg.trainer
    for key in ("max_steps", "batch_size", "eval_every"):  # what the schedule is drawn over
        value = t.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"trainer.{key}={value!r} is invalid: must be a whole number >= 1")
    validate_optimizer_config(cfg.optimizer)
    validate_schedule_config(cfg.scheduler, t.max_steps, metric=cfg.task.get("metric"), eval_every=t.eval_every)
    validate_optimizer_schedules(cfg.optimizer, t.max_steps)
    schedule = build_schedule_from_config(cfg.scheduler, t.max_steps)
    steps = list(range(t.max_steps))
    curves = {
        "steps": steps,
        "multiplier": [schedule(s) for s in steps],
        "base_lr": float(cfg.optimizer.lr) * lr_scale(cfg.optimizer, t.batch_size),
        "metric_driven": hasattr(schedule, "observe"),
    }
    momentum = build_momentum_schedule(cfg.optimizer.get("momentum_schedule"))
    if momentum is not None:
        curves["momentum_key"] = momentum.key
        curves["momentum"] = [momentum.value(s) for s in steps]
    return curves


def plot_curves(curves: dict, title: str, out: Path) -> Path:
    plt = pyplot()

    rows = 2 if "momentum" in curves else 1
    fig, axes = plt.subplots(rows, 1, figsize=(7, 3.2 * rows), sharex=True, squeeze=False)
    ax = axes[0][0]
    ax.plot(curves["steps"], curves["multiplier"], color="tab:blue")
    ax.set_ylabel("lr multiplier")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    lr_axis = ax.secondary_yaxis(
        "right", functions=(lambda m: m * curves["base_lr"], lambda lr: lr / curves["base_lr"])
    )
    lr_axis.set_ylabel(f"lr (base {curves['base_lr']:.3g})")
    note = " (metric-driven: cuts when the eval metric stalls)" if curves["metric_driven"] else ""
    ax.set_title(textwrap.fill(title + note, 90), fontsize=8)
    if rows == 2:
        mx = axes[1][0]
        mx.plot(curves["steps"], curves["momentum"], color="tab:orange")
        mx.set_ylabel(curves["momentum_key"])
        mx.grid(alpha=0.3)
    axes[-1][0].set_xlabel("step")
    return save_figure(fig, out, dpi=120)
