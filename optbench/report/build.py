"""What `optbench report` writes: results/<name>/ from run directories (build_report), and the
pieces of it that are not tables or plots (runs.csv, the tuning budget, the plots manifest, W&B).

The command line is optbench/commands/report.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from optbench.report import leaderboard as lb
from optbench.report import tables
from optbench.report.collect import load_runs
from optbench.report.stats import build_rows

RUN_FIELDS = [
    "path",
    "task",
    "optimizer",
    "lr",
    "seed",
    "status",
    "stop_reason",
    "final_metric",
    "best_metric",
    "reached",
    "steps_to_target",
    "time_to_target_s",
    "steps",
    "train_time_s",
    "throughput_samples_per_s",
    "peak_memory_bytes",
    "optimizer_state_bytes",
    "duplicate_of",
]


def runs_csv(runs, duplicate_of: dict | None = None) -> str:
    """One line per run; duplicate_of names the run a repeated configuration repeats (counted once)."""
    duplicate_of = duplicate_of or {}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RUN_FIELDS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in runs:
        w.writerow(
            {
                **{k: r.summary.get(k) for k in RUN_FIELDS},
                "path": str(r.path),
                "duplicate_of": str(duplicate_of[r.path]) if r.path in duplicate_of else "",
            }
        )
    return buf.getvalue()


def tuning_budget(dirs: list[str]) -> list[dict]:
    """tune.json files (written by `optbench tune`) in or above the named directories."""
    found = {}
    for d in map(Path, dirs):
        for p in [d, *list(d.resolve().parents)[:2]]:
            f = p / "tune.json"
            if f.is_file():
                found[f.resolve()] = json.loads(f.read_text())
    return list(found.values())


def budget_markdown(budgets: list[dict]) -> str:
    lines = []
    for b in budgets:
        lines.append(
            f"Tuning budget ({b.get('search')} search, selected by {b.get('select_metric')} at the end "
            f"of the schedule): {b.get('trials_per_optimizer')} trials per optimizer x "
            f"{b.get('steps_per_run')} steps, then the best of each rerun with {len(b.get('seeds') or [])} "
            f"seeds ({', '.join(map(str, b.get('seeds') or []))}); total steps {b.get('total_steps')}."
        )
        for opt, best in (b.get("best") or {}).items():
            value = best.get("value")
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"- {opt}: best {best.get('overrides')} ({b.get('select_metric')}={shown})")
    return "\n".join(lines) + ("\n" if lines else "")


def build_report(
    dirs: list[str],
    name: str,
    by: list[str] | None = None,
    baseline: str | None = None,
    out: str | Path = "results",
    plots: bool = True,
    command: str | None = None,
    leaderboard: str | None = None,
):
    """Write results/<name>/ and return (out_dir, rows, markdown, plots); with a leaderboard its
    ranked table is appended to the markdown and written as leaderboard_<name>.md/.csv."""
    if leaderboard is not None:
        lb.check_name(leaderboard)  # before reading any run: a typo costs nothing
    runs = load_runs(dirs)
    rows, keys = build_rows(runs, by, baseline)
    entries = lb.build(rows, leaderboard) if leaderboard is not None else None  # may refuse: before writing
    out_dir = Path(out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    md = tables.markdown(rows)
    if plots:
        from optbench.report.plots import profile_skipped

        why = profile_skipped(rows)
        if why:  # said in the report, since the figure is missing on purpose
            md += "\n" + why + "\n"
    budgets = tuning_budget(dirs)
    if budgets:
        md += "\n" + budget_markdown(budgets)
    for stale in (*out_dir.glob("leaderboard_*.md"), *out_dir.glob("leaderboard_*.csv")):
        stale.unlink()  # an earlier report's ranking must not pass for this one's
    if entries is not None:
        board = lb.markdown(entries, leaderboard)
        (out_dir / f"leaderboard_{leaderboard}.md").write_text(board)
        (out_dir / f"leaderboard_{leaderboard}.csv").write_text(lb.csv_text(entries))
        md += "\n" + board
    (out_dir / "table.md").write_text(md)
    (out_dir / "table.csv").write_text(tables.csv_text(rows))
    (out_dir / "table.tex").write_text(tables.latex(rows, caption=name))
    (out_dir / "runs.csv").write_text(runs_csv(runs, {d.path: o.path for row in rows for d, o in row.duplicates}))
    if command:
        (out_dir / "command.txt").write_text(command + "\n")
    written = []
    # the plots of an earlier report into the same folder must not pass for this one's; files
    # someone else put there are theirs, so only what the manifest says we wrote goes
    remove_our_plots(out_dir / "plots")
    if plots:
        from optbench.report.plots import all_plots

        written = all_plots(rows, out_dir / "plots")
        write_manifest(out_dir / "plots", written)
    return out_dir, rows, md, written


PLOTS_MANIFEST = ".optbench-plots.json"  # the PNGs a report of ours wrote into plots/


def remove_our_plots(plots_dir: Path) -> list[Path]:
    """Delete the files a previous report listed in its manifest (plain names in plots_dir only)."""
    manifest = plots_dir / PLOTS_MANIFEST
    try:
        names = json.loads(manifest.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):  # none yet, or damaged: delete nothing we cannot vouch for
        return []
    removed = []
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            continue  # a manifest entry never reaches outside plots/
        f = plots_dir / name
        if f.is_file():
            f.unlink()
            removed.append(f)
    manifest.unlink()
    return removed


def write_manifest(plots_dir: Path, written: list[Path]) -> None:
    from optbench.train.rundir import write_json

    plots_dir.mkdir(parents=True, exist_ok=True)
    write_json(plots_dir / PLOTS_MANIFEST, {"written_by": "optbench report", "files": sorted(p.name for p in written)})


def log_to_wandb(rows, name: str, project: str, mode: str) -> None:
    from optbench.extras import require
    from optbench.train.wandb_sink import resolve_mode

    wandb = require("wandb", "report --wandb")

    mode = resolve_mode(mode)
    header, cells = tables.display_rows(rows)
    # WANDB_DIR is read per call: wandb caches its settings per process (tests, `optbench tune`)
    run = wandb.init(
        project=project,
        name=f"report-{name}",
        job_type="report",
        mode=mode,
        dir=os.environ.get("WANDB_DIR"),
        reinit="finish_previous",
        settings=wandb.Settings(console="off", silent=True),
    )
    run.log(
        {
            "report/table": wandb.Table(columns=header, data=cells),
            "report/stats": wandb.Table(
                dataframe=None, columns=tables.CSV_FIELDS, data=list(csv.reader(io.StringIO(tables.csv_text(rows))))[1:]
            ),
        }
    )
    run.finish()
