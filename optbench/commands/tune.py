"""`optbench tune`: equal-budget tuning of several optimizers, then seeds (the library: optbench/tune.py).

    optbench tune --optimizers adamw,sgd,nesterov [--search grid|random|sobol] [--trials N]
                  [--seeds 3] [--name NAME] [key=value ...] [hydra/launcher=local|slurm hydra.launcher.KEY=...]

Every optimizer gets the same number of trials over its own search space (its yaml's lr_grid, or
draws over that range and its search_space); the best by the final validation metric is rerun
with fresh seeds and reported on the test metric. `hydra/launcher=local` runs each round's runs
in parallel processes (submitit), `hydra/launcher=slurm` as SLURM jobs; without one, every run
trains in this process, one after another. Running it again reads finished runs back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from optbench.errors import ArgumentParser, ConfigError
from optbench.tune import SEARCHES, run_tune, split_launcher


def main(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog="optbench tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--optimizers", required=True, help="comma-separated, e.g. adamw,sgd,nesterov")
    parser.add_argument("--search", default="grid", help=f"{' | '.join(SEARCHES)} (default: grid over lr_grid)")
    parser.add_argument("--trials", type=int, help="trials per optimizer (default: the lr_grid size; 8 if sampled)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the best configuration (default: 3)")
    parser.add_argument("--trial-seed", type=int, default=0, help="seed of the trials; final seeds follow it")
    parser.add_argument("--select-metric", help="validation metric for the choice (default: val_<test metric>)")
    parser.add_argument("--name", default="tune", help="tune/<name>/ and results/<name>/ (default: tune)")
    parser.add_argument("--out", default="tune", help="parent folder of the runs (default: tune)")
    parser.add_argument("--results", default="results", help="parent folder of the report (default: results)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides for every run; hydra/launcher=... and hydra.launcher.* choose where the runs go",
    )
    args = parser.parse_args(argv)
    optimizers = list(dict.fromkeys(o.strip() for o in args.optimizers.split(",") if o.strip()))
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials={args.trials} is invalid: must be >= 1")
    overrides, launcher = split_launcher(list(args.overrides))
    out_dir = Path(args.out) / args.name
    record = run_tune(
        optimizers,
        overrides,
        search=args.search,
        trials=args.trials,
        seeds=args.seeds,
        out_dir=out_dir,
        name=args.name,
        launcher=launcher,
        trial_seed=args.trial_seed,
        select_metric=args.select_metric,
    )
    from optbench.report.build import build_report

    _, _, md, _ = build_report(
        [str(out_dir / "final")], args.name, out=args.results, command="optbench tune " + " ".join(argv)
    )
    print(md)
    print(
        f"tune: {record['trials_per_optimizer']} trials x {len(optimizers)} optimizers, "
        f"{len(record['seeds'])} seeds each; {record['total_steps']} steps in all -> {out_dir}/tune.json, "
        f"{Path(args.results) / args.name}/"
    )
