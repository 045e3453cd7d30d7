"""From a suite's record to its leaderboard files: collect -> score -> profile -> tables, plots."""

from __future__ import annotations

import json
from pathlib import Path

from optbench.suite import plots, tables
from optbench.suite.collect import collect
from optbench.suite.profile import TAU_MAX, profile
from optbench.suite.score import all_scores

FILES = ("leaderboard.md", "leaderboard.csv", "leaderboard.tex", "heatmap.png", "profile.png", "scores.json")


def write_leaderboard(
    out_dir: Path, record: dict, by: str = "steps", tau_max: float = TAU_MAX, command: str | None = None
) -> tuple[str, dict]:
    """Write FILES into out_dir; return (the Markdown, the profile)."""
    scores = all_scores(collect(record))
    prof = profile(scores, by=by, tau_max=tau_max)
    md = tables.markdown(record, scores, prof, command)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "leaderboard.md").write_text(md + "\n")
    (out_dir / "leaderboard.csv").write_text(tables.csv_text(scores, prof))
    (out_dir / "leaderboard.tex").write_text(tables.latex(record, scores, prof))
    from optbench.train.rundir import write_json

    write_json(out_dir / "scores.json", {"profile": prof, "scores": scores})
    plots.heatmap(scores, prof, out_dir / "heatmap.png")
    plots.profile_plot(prof, out_dir / "profile.png")
    return md, json.loads((out_dir / "scores.json").read_text())["profile"]
