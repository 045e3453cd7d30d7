"""`optbench schedule [--plot] [--out FILE] scheduler=wsd trainer.max_steps=1000 ...`: see what you configured.

Composes the same config `optbench train` would (same overrides), builds the schedule the loop
would build, prints its multiplier and lr at a few steps and, with --plot, draws the whole curve
(and the momentum schedule, when the optimizer has one) to a PNG whose path is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from optbench.errors import ArgumentParser, ConfigError


def main(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog="optbench schedule", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plot", action="store_true", help="draw the curve to a PNG")
    parser.add_argument("--out", type=Path, help="PNG path (default: schedule-<name>.png)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for `optbench train`")
    args = parser.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise ConfigError(f"cannot parse override '{bad[0]}' (expected key=value)")

    from optbench.config import compose
    from optbench.schedule_plot import plot_curves, schedule_curves

    cfg = compose(args.overrides)
    curves = schedule_curves(cfg)
    name, total = cfg.scheduler.name, cfg.trainer.max_steps
    print(f"scheduler={name} over {total} steps, base lr {curves['base_lr']:.4g}")
    for s in sorted({0, total // 10, total // 4, total // 2, 3 * total // 4, 9 * total // 10, total - 1}):
        m = curves["multiplier"][s]
        extra = f"  {curves['momentum_key']}={curves['momentum'][s]:.4g}" if "momentum" in curves else ""
        print(f"  step {s:>7}  x{m:.4g}  lr={m * curves['base_lr']:.4g}{extra}")
    if args.plot:
        out = args.out or Path(f"schedule-{name}.png")
        if not out.suffix:  # matplotlib adds .png to a bare name: say the file it writes
            out = out.with_name(out.name + ".png")
        overrides = " ".join(o for o in args.overrides)
        out = plot_curves(curves, f"optbench schedule {overrides}".strip(), out)
        print(f"wrote {out}")
