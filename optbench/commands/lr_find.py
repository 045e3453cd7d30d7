"""`optbench lr-find task=... optimizer=... [overrides] [--start 1e-6 --end 10 --steps 100]`:
the learning-rate range test (Smith 2017, "Cyclical learning rates"; popularised by fastai).

The lr grows exponentially from --start to --end, one optimizer step per value, on the task's
own batches, model and optimizer (the trainer's build path, param-group ratios kept). The loss is
smoothed with a bias-corrected moving average, the ramp stops once the smoothed loss exceeds
--diverge x its minimum, and two suggestions are reported: the lr of steepest descent of the
smoothed loss (vs log lr) and the lr at its minimum divided by 10. The model and optimizer are
restored afterwards, so the function can run on a model you go on training.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from optbench.errors import ArgumentParser, ConfigError


def main(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog="optbench lr-find", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--start", type=float, default=1e-6, help="first lr (default 1e-6)")
    parser.add_argument("--end", type=float, default=10.0, help="last lr (default 10)")
    parser.add_argument("--steps", type=int, default=100, help="ramp length in steps (default 100)")
    parser.add_argument("--smoothing", type=float, default=0.98, help="moving-average factor (default 0.98)")
    parser.add_argument(
        "--diverge", type=float, default=4.0, help="stop when the smoothed loss exceeds this x its minimum (default 4)"
    )
    parser.add_argument("--out", type=Path, help="PNG path (default outputs/lr_find/<task>-<optimizer>.png)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for `optbench train`")
    args = parser.parse_args(argv)
    if not 0 < args.start < args.end < math.inf:
        raise ConfigError(f"--start {args.start:g} --end {args.end:g} is invalid: need 0 < start < end, finite")
    if args.steps < 3:
        raise ConfigError(f"--steps {args.steps} is invalid: must be >= 3")
    if not 0 <= args.smoothing < 1:
        raise ConfigError(f"--smoothing {args.smoothing:g} is invalid: must be in [0, 1)")
    if not args.diverge > 1:
        raise ConfigError(f"--diverge {args.diverge:g} is invalid: must be > 1")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise ConfigError(f"cannot parse override '{bad[0]}' (expected key=value)")

    from optbench.config import compose, validate
    from optbench.lr_find import lr_range_test, plot
    from optbench.optim import build_optimizer_from_config
    from optbench.schedules import lr_scale
    from optbench.tasks import build_task
    from optbench.train.distributed import select_device
    from optbench.train.loop import seed_everything, set_optimizer_mode
    from optbench.train.rundir import write_json

    cfg = compose(args.overrides)
    validate(cfg)
    device = select_device(cfg.trainer.device)
    seed_everything(cfg.seed)
    task = build_task(cfg, device)
    model = task.model.to(device)
    optimizer = build_optimizer_from_config(cfg.optimizer, model)
    set_optimizer_mode(optimizer, "train")  # Schedule-Free optimizers step in train mode
    spec = getattr(optimizer, "optbench_spec", None)
    result = lr_range_test(
        model,
        optimizer,
        task.train_batches,
        task.loss,
        start=args.start,
        end=args.end,
        steps=args.steps,
        smoothing=args.smoothing,
        diverge=args.diverge,
        reference_lr=float(cfg.optimizer.lr),
        needs_closure=bool(getattr(spec, "needs_closure", False)),
    )
    name = f"{cfg.task.name}-{cfg.optimizer.name}"
    out = args.out or Path("outputs") / "lr_find" / f"{name}.png"
    if not out.suffix:  # matplotlib adds .png to a bare name: say the file it writes
        out = out.with_name(out.name + ".png")
    title = (
        f"lr range test: task={cfg.task.name} optimizer={cfg.optimizer.name} "
        f"batch {cfg.trainer.batch_size}, {len(result.lrs)} steps"
    )
    plot(result, title, out)
    write_json(
        out.with_suffix(".json"),
        {
            "task": cfg.task.name,
            "optimizer": cfg.optimizer.name,
            "batch_size": cfg.trainer.batch_size,
            **result.as_dict(),
        },
    )
    stop = f"stopped at lr {result.lrs[-1]:.3g} (loss diverged)" if result.stopped_early else "ran the full range"
    print(f"lr-find {name}: {len(result.lrs)} steps from {args.start:g}; {stop}")
    if result.steepest is None:
        print("no suggestion: the loss diverged within the first steps; lower --start")
    else:
        print(
            f"suggested lr at batch size {cfg.trainer.batch_size}: {result.steepest:.3g} (steepest descent), "
            f"{result.min_over_10:.3g} (minimum / 10)"
        )
        scale = lr_scale(cfg.optimizer, cfg.trainer.batch_size)
        if scale != 1:  # the trainer multiplies optimizer.lr by the batch-size scale
            print(
                f"  with optimizer.lr_scaling={cfg.optimizer.lr_scaling} (x{scale:.3g}) set "
                f"optimizer.lr={result.steepest / scale:.3g}"
            )
    print(f"plot: {out}")
