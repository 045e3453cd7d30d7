"""`optbench report DIR... [--name N] [--by keys] [--baseline X] [--out results/] [--leaderboard L] [--wandb]`

Reads run directories (single runs and multiruns in any mix) and writes results/<name>/:
table.md, table.csv, table.tex, runs.csv (one line per run), plots/*.png and command.txt (how
the report was made). The Markdown table is printed to the terminal. Rows of a community benchmark
(summary.json "benchmark") also get that benchmark's own rule under the table; --leaderboard L ranks
them among the published results of optbench/report/leaderboards/L.csv (leaderboard_L.md/.csv).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from optbench.errors import ArgumentParser, ConfigError
from optbench.report import leaderboard as lb
from optbench.report.build import build_report, log_to_wandb


def main(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog="optbench report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run directories and/or multirun directories")
    parser.add_argument("--name", help="results/<name>/ (default: the first DIR's folder name)")
    parser.add_argument(
        "--by",
        help="comma-separated grouping keys, e.g. optimizer,optimizer.lr "
        "(default: optimizer + every key that varies within an optimizer)",
    )
    parser.add_argument("--baseline", help="row label or optimizer name for speedups (default: adamw, else row 1)")
    parser.add_argument("--out", default="results", help="parent folder of the report (default: results)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument(
        "--leaderboard",
        metavar="NAME",
        help=f"rank the benchmark rows among a published leaderboard ({', '.join(lb.available())})",
    )
    parser.add_argument("--wandb", action="store_true", help="also log the table to W&B as a wandb.Table")
    parser.add_argument("--wandb-project", default="optbench")
    parser.add_argument("--wandb-mode", default="online", choices=["online", "offline", "disabled"])
    args = parser.parse_args(argv)
    name = args.name or Path(args.dirs[0]).resolve().name
    if not name or "/" in name:
        raise ConfigError(f"report: --name '{name}' is invalid: must be a plain folder name")
    by = [k.strip() for k in args.by.split(",") if k.strip()] if args.by else None
    command = "optbench report " + " ".join(shlex.quote(a) for a in argv)
    out_dir, rows, md, plots = build_report(
        args.dirs,
        name,
        by,
        args.baseline,
        args.out,
        plots=not args.no_plots,
        command=command,
        leaderboard=args.leaderboard,
    )
    print(md)
    board = f", leaderboard_{args.leaderboard}.md/.csv" if args.leaderboard else ""
    print(
        f"-> {out_dir}/ (table.md, table.csv, table.tex, runs.csv{board}"
        + (f", {len(plots)} plots" if plots else "")
        + ")"
    )
    if args.wandb:
        log_to_wandb(rows, name, args.wandb_project, args.wandb_mode)
    sys.stdout.flush()
