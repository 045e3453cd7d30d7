"""`optbench report DIR --leaderboard NAME`: our rows ranked among a community leaderboard's published ones.

A leaderboard is optbench/report/leaderboards/<NAME>.csv (published facts, refreshed by
scripts/make_leaderboard_csv.py). Ranking (nanogpt_track3): valid results first, by steps to 3.28, then
by mean val loss; results that are not valid (the README's Ⓧ, or ours failing the z-rule at every
evaluation step) follow, unranked, as do ours from runs that changed what the benchmark fixes
(benchmarks.deviations). Our rows use the same rule as the README (benchmarks.track3_claim).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from optbench.errors import ConfigError, choices
from optbench.report.collect import finite

LEADERBOARD_DIR = Path(__file__).resolve().parent / "leaderboards"  # package data
FIELDS = [
    "rank",
    "number",
    "steps",
    "mean_val_loss",
    "n",
    "valid",
    "comparable",
    "description",
    "date",
    "log",
    "source",
]


@dataclass
class Entry:
    number: str  # the README's "#", or "optbench" for ours
    steps: int | None  # steps to 3.28 (ours: the earliest valid step; None if not valid)
    loss: float  # mean val loss at those steps (ours when not valid: at the end)
    n: int
    valid: bool
    description: str
    date: str
    log: str
    ours: bool
    ran_steps: int | None = None  # ours: the length of the runs
    comparable: bool = True  # ours: the benchmark's fixed setup (benchmarks.deviations)
    rank: int | None = None

    @property
    def ranked(self) -> bool:
        return self.valid and self.comparable


def available() -> list[str]:
    return sorted(p.stem for p in LEADERBOARD_DIR.glob("*.csv"))


def check_name(name: str) -> None:
    if name not in available():
        raise ConfigError(f"report: --leaderboard '{name}' is unknown; valid choices: {choices(available()) or 'none'}")


def published(name: str) -> list[Entry]:
    check_name(name)
    with open(LEADERBOARD_DIR / f"{name}.csv", newline="", encoding="utf-8") as f:
        return [
            Entry(
                number=r["number"],
                steps=int(r["steps"]),
                loss=float(r["mean_val_loss"]),
                n=int(r["n"]),
                valid=r["valid"] == "True",
                description=r["description"],
                date=r["date"],
                log=r["log"],
                ours=False,
            )
            for r in csv.DictReader(f)
        ]


def _run_date(row) -> str:
    """The day the row's newest run last wrote its summary (UTC)."""
    stamps = [(r.path / "summary.json").stat().st_mtime for r in row.runs if (r.path / "summary.json").exists()]
    return datetime.fromtimestamp(max(stamps), timezone.utc).strftime("%Y-%m-%d") if stamps else ""


def _common_dir(row) -> str:
    paths = [str(r.path) for r in row.runs]
    common = os.path.commonpath(paths) if paths else ""
    try:
        rel = os.path.relpath(common)
    except ValueError:  # another drive
        return common
    return common if rel.startswith("..") else rel


def ours(rows, name: str) -> list[Entry]:
    out = []
    for row in rows:
        c = row.stats.get("claim")
        if not c or c["benchmark"] != name:
            continue
        point = c["valid_at"] if c["valid"] else c["end"]
        out.append(
            Entry(
                number="optbench",
                steps=point["step"] if c["valid"] else None,
                loss=point["mean"],
                n=point["n"],
                valid=c["valid"],
                description=f"optbench: {row.label}",
                date=_run_date(row),
                log=_common_dir(row),
                ours=True,
                ran_steps=c["end"]["step"],
                comparable=c["comparable"],
            )
        )
    return out


def rank(entries: list[Entry]) -> list[Entry]:
    """Valid results of the benchmark's setup first by (steps, loss), a published row before ours on a
    tie; then the rest (not valid, or ours from a changed setup), unranked."""

    def key(e: Entry):
        steps = e.steps if e.steps is not None else (e.ran_steps if e.ran_steps is not None else float("inf"))
        # at the published precision: a mean of 3.27869999 ties with a published 3.2787
        loss = round(e.loss, 4) if finite(e.loss) else float("inf")
        return (not e.ranked, steps, loss, e.ours, int(e.number) if e.number.isdigit() else 0)

    ordered = sorted(entries, key=key)
    for i, e in enumerate(e for e in ordered if e.ranked):
        e.rank = i + 1
    for e in ordered:
        if not e.ranked:
            e.rank = None
    return ordered


def build(rows, name: str) -> list[Entry]:
    mine = ours(rows, name)
    if not mine:
        found = sorted({r.benchmark or "none" for row in rows for r in row.runs})
        raise ConfigError(
            f"report: --leaderboard {name}: no run here has benchmark {name} "
            f"(set by experiment={name}); the runs' benchmarks: {', '.join(found)}"
        )
    return rank(published(name) + mine)


def _steps(e: Entry) -> str:
    if e.valid:
        return str(e.steps)
    if e.ours:
        return f"not valid (ran {e.ran_steps})" if e.ran_steps is not None else "not valid"
    return f"{e.steps} (not valid)"


def _loss(v: float) -> str:
    return f"{v:.4f}" if finite(v) else "n/a"


def markdown(entries: list[Entry], name: str) -> str:
    out = [
        f"### Leaderboard {name}: our rows among the published ones",
        "",
        "| rank | # | steps to 3.28 | mean val loss (n) | valid | description | date | log |",
        "|---:|---|---:|---:|:---:|---|---|---|",
    ]
    for e in entries:
        desc = f"**{e.description}**" if e.ours else e.description
        if not e.comparable:
            desc += " (not the benchmark's setup: unranked, see the rule table)"
        rank = e.rank if e.rank is not None else "—"
        out.append(
            f"| {rank} | {e.number} | {_steps(e)} | {_loss(e.loss)} (n={e.n}) | {'✓' if e.valid else 'Ⓧ'} | "
            f"{desc.replace('|', '/')} | {e.date} | {e.log} |"
        )
    out += [
        "",
        "Ranked by steps to 3.28, then mean val loss; valid: (3.28 − mean)·√n ≥ 0.004 (one-sided "
        "z-test, σ = 0.0013, p < 0.001). Ours: the earliest evaluation step every seed shares at which "
        "the seed mean passes, every run counted in n; when not valid, the loss shown is at the end. "
        f"Published rows: optbench/report/leaderboards/{name}.csv (from the track-3 README's results history).",
        "",
    ]
    return "\n".join(out)


def csv_text(entries: list[Entry]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for e in entries:
        w.writerow(
            {
                "rank": e.rank if e.rank is not None else "",
                "number": e.number,
                "steps": e.steps if e.steps is not None else "",
                "mean_val_loss": e.loss,
                "n": e.n,
                "valid": e.valid,
                "comparable": e.comparable,
                "description": e.description,
                "date": e.date,
                "log": e.log,
                "source": "optbench" if e.ours else "published",
            }
        )
    return buf.getvalue()
