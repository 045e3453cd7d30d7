"""`optbench suite`: score optimizers across many workloads.

    optbench suite --optimizers adamw,muon,soap,lion --workloads diagnostics,digits,nqm
                   [--budget 8] [--seeds 3] [--search sobol|random|grid] [--profile-by steps|time]
                   [--jobs N] [--out DIR] [--results DIR] [hydra/launcher=...] [key=value ...]

For every workload (a task; a group of them from conf/suite/<group>.yaml) every optimizer gets the
same tuning budget through `optbench tune` (--budget trials, chosen by the final validation metric),
then --seeds fresh seeds of its choice. DIR/leaderboard.{md,csv,tex}: per workload the success rate,
steps and time to target, final metric ± 95% CI, attempts needed and every diverged or failed run;
overall, the area under the AlgoPerf performance profile. DIR/heatmap.png, DIR/profile.png (--results:
the leaderboard files go there instead). Runs live under DIR/runs/<workload>/; the same command again
reads finished runs back. --jobs N: N workloads at once, each in its own process.

    optbench suite batch-scaling --optimizers sgd,momentum,adam --batch-sizes 16,64,256,1024,4096
                   [--task nqm] [--budget 5 | --lrs 0.1,0.3,1] [--seeds 1] [--max-steps 5000]
                   [--out DIR] [--results DIR] [hydra/launcher=...] [key=value ...]

Steps to target against batch size (Shallue et al. 2019; Zhang et al. 2019 on the noisy quadratic
model): per optimizer and batch size the lr with the fewest steps to the task's target, the perfect-
scaling line and McCandlish et al.'s critical batch size; DIR/batch_scaling.{md,csv,json,png}.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from optbench.errors import ArgumentParser, ConfigError, choices
from optbench.tune import split_launcher  # the launcher overrides go to tune's rounds


def optimizer_list(text: str, prog: str) -> list[str]:
    """--optimizers a,b,c: each a name `optbench list optimizers` knows (a user's folder included)."""
    from optbench.confdir import group_options

    optimizers = list(dict.fromkeys(o.strip() for o in text.split(",") if o.strip()))
    known = group_options("optimizer")
    if not optimizers:
        raise ConfigError(f"{prog}: --optimizers names nothing; valid choices: {choices(known)}")
    for o in optimizers:
        if o not in known:
            raise ConfigError(f"{prog}: unknown optimizer '{o}'; valid choices: {choices(known)}")
    return optimizers


def main(argv: list[str]) -> None:
    if argv and argv[0] == "batch-scaling":
        return batch_scaling(argv[1:])
    from optbench.suite.run import SEARCHES

    parser = ArgumentParser(
        prog="optbench suite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--optimizers", required=True, help="comma-separated, e.g. adamw,muon,soap,lion")
    parser.add_argument("--workloads", required=True, help="comma-separated groups (conf/suite/) or task names")
    parser.add_argument("--budget", type=int, default=8, help="tuning trials per optimizer and workload (default 8)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of each chosen configuration (default 3)")
    parser.add_argument(
        "--search",
        default="sobol",
        choices=SEARCHES,
        help="how tune draws the trials (default sobol: AlgoPerf's quasi-random search)",
    )
    parser.add_argument(
        "--profile-by",
        default="steps",
        choices=("steps", "time"),
        help="the profile's time to target: steps (default) or train-clock seconds",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="workloads run at once, each in its own process (default 1)"
    )
    parser.add_argument(
        "--out", default="suite", help="runs (DIR/runs/, DIR/suite.json) and leaderboard (default: suite)"
    )
    parser.add_argument("--results", help="write the leaderboard files here instead of --out (e.g. results/suite)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides for every run; hydra/launcher=... runs trials in parallel",
    )
    args = parser.parse_args(argv)

    from optbench.confdir import use_overrides
    from optbench.suite.leaderboard import write_leaderboard
    from optbench.suite.run import run_suite
    from optbench.suite.workloads import resolve

    overrides, launcher = split_launcher(list(args.overrides))
    use_overrides(overrides)  # a user's config folder (hydra.searchpath) adds optimizers, tasks, groups
    optimizers = optimizer_list(args.optimizers, "suite")
    if args.budget < 1:
        raise ConfigError(
            f"suite: --budget={args.budget} is invalid: must be >= 1 (tuning trials per optimizer and workload)"
        )
    if args.seeds < 1:
        raise ConfigError(f"suite: --seeds={args.seeds} is invalid: must be >= 1")
    if args.jobs < 1:
        raise ConfigError(f"suite: --jobs={args.jobs} is invalid: must be >= 1")
    workloads = resolve([w.strip() for w in args.workloads.split(",") if w.strip()])
    out = Path(args.out)
    record = run_suite(
        optimizers,
        workloads,
        out,
        budget=args.budget,
        seeds=args.seeds,
        search=args.search,
        overrides=overrides,
        launcher=launcher,
        jobs=args.jobs,
    )
    board = Path(args.results) if args.results else out
    md, _ = write_leaderboard(
        board, record, by=args.profile_by, command="optbench suite " + " ".join(shlex.quote(a) for a in argv)
    )
    print(md)
    print(
        f"suite: {len(optimizers)} optimizers x {len(workloads)} workloads, runs in {out}/ -> "
        f"{board}/leaderboard.md, "
        f"leaderboard.csv, leaderboard.tex, heatmap.png, profile.png"
    )


def _numbers(text: str, what: str, kind=float) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"suite batch-scaling: {what}={text!r} is invalid: must be comma-separated numbers") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"suite batch-scaling: {what}={text!r} is invalid: must be numbers > 0")
    return values


def batch_scaling(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog="optbench suite batch-scaling", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--optimizers", required=True, help="comma-separated, e.g. sgd,momentum,adam")
    parser.add_argument("--batch-sizes", required=True, help="comma-separated, e.g. 16,64,256,1024,4096")
    parser.add_argument("--task", default="nqm", help="the task (default nqm: the noisy quadratic model)")
    parser.add_argument("--budget", type=int, default=5, help="learning rates per optimizer (default 5: its lr_grid)")
    parser.add_argument("--search", default="grid", choices=("grid", "random", "sobol"), help="how they are drawn")
    parser.add_argument("--lrs", help="the same learning rates for every optimizer, e.g. 0.01,0.1,1 (instead)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per learning rate (default 1; median)")
    parser.add_argument("--max-steps", type=int, default=5000, help="step budget of each run (default 5000)")
    parser.add_argument("--eval-every", type=int, default=25, help="evaluation cadence: the steps' resolution")
    parser.add_argument(
        "--out", default="suite/batch_scaling", help="runs under DIR/runs/ (default suite/batch_scaling)"
    )
    parser.add_argument("--results", help="write the figure and tables here instead of --out")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    args = parser.parse_args(argv)

    from optbench.confdir import group_options, use_overrides
    from optbench.suite.batch_scaling import run_batch_scaling, write_outputs

    overrides, launcher = split_launcher(list(args.overrides))
    use_overrides(overrides)
    optimizers = optimizer_list(args.optimizers, "suite batch-scaling")
    if args.task not in group_options("task"):
        raise ConfigError(
            f"suite batch-scaling: unknown task {args.task!r}; valid choices: {choices(group_options('task'))}"
        )
    for name in ("budget", "seeds", "max_steps", "eval_every"):
        if getattr(args, name) < 1:
            raise ConfigError(
                f"suite batch-scaling: --{name.replace('_', '-')}={getattr(args, name)} is invalid: must be >= 1"
            )
    batch_sizes = sorted(set(_numbers(args.batch_sizes, "--batch-sizes", int)))
    lrs = _numbers(args.lrs, "--lrs") if args.lrs else None
    out = Path(args.out)
    record, results = run_batch_scaling(
        optimizers,
        batch_sizes,
        out,
        task=args.task,
        lrs=lrs,
        budget=args.budget,
        search=args.search,
        seeds=args.seeds,
        max_steps=args.max_steps,
        eval_every=args.eval_every,
        overrides=overrides,
        launcher=launcher,
    )
    board = Path(args.results) if args.results else out
    md = write_outputs(board, record, results, "optbench suite batch-scaling " + " ".join(shlex.quote(a) for a in argv))
    print(md)
    print(f"suite batch-scaling: {record['runs']} runs in {out}/runs/ -> {board}/batch_scaling.md, .csv, .json, .png")
