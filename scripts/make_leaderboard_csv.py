"""Refresh optbench/report/leaderboards/nanogpt_track3.csv from the track-3 README's "Notable results history".

    python scripts/make_leaderboard_csv.py --reference PATH_TO_MODDED_NANOGPT_CHECKOUT [--out optbench/report/leaderboards]

PATH is a KellerJordan/modded-nanogpt checkout (or its records/track_3_optimization folder, or the README
itself). The table is read at run time and only its facts are kept: number, steps to 3.28, whether the
steps were a new record ("(!)"), the published mean val loss and n, valid (the README's check mark versus
its crossed circle), the description as plain text (link targets dropped), date and the log's path.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

TRACK3 = Path("records/track_3_optimization")
SECTION = "## Notable results history"
FIELDS = ["number", "steps", "record", "mean_val_loss", "n", "valid", "description", "date", "log"]
EVIDENCE = re.compile(r"^(?P<loss>\d+\.\d+)\s*\(n=(?P<n>\d+)\)\s*(?P<mark>✓|Ⓧ)$")
STEPS = re.compile(r"^(?P<steps>\d+)\s*(?P<record>\(!\))?$")
LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")


def readme_path(reference: Path) -> Path:
    for p in (reference, reference / "README.md", reference / TRACK3 / "README.md"):
        if p.is_file():
            return p
    raise SystemExit(f"make_leaderboard_csv: no track-3 README under {reference} (expected {TRACK3}/README.md)")


def split_row(line: str) -> list[str]:
    """Cells of a Markdown table row; a backslash-escaped pipe stays inside its cell."""
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [c.strip() for c in cells[1:-1]]


def plain(text: str) -> str:
    """Markdown cell -> plain text: links keep their text, escapes and code ticks go."""
    text = LINK.sub(lambda m: m.group(1), text)
    return re.sub(r"\\(.)", r"\1", text).replace("`", "").strip()


def parse_table(text: str) -> list[dict]:
    if SECTION not in text:
        raise SystemExit(f"make_leaderboard_csv: the README has no '{SECTION}' section")
    lines = text.split(SECTION, 1)[1].splitlines()
    rows, header = [], None
    for line in lines:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if header and rows:
                break  # the table ended
            continue
        cells = split_row(line)
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("- :"):
            continue  # the alignment row
        cell = dict(zip(header, cells))
        steps, evidence = STEPS.match(cell["Steps to 3.28"]), EVIDENCE.match(cell["Evidence"])
        if not steps or not evidence:
            raise SystemExit(
                f"make_leaderboard_csv: row {cell.get('#')}: cannot read steps "
                f"{cell['Steps to 3.28']!r} or evidence {cell['Evidence']!r}"
            )
        log = LINK.search(cell.get("Log", ""))
        rows.append(
            {
                "number": int(cell["#"]),
                "steps": int(steps["steps"]),
                "record": bool(steps["record"]),
                "mean_val_loss": evidence["loss"],
                "n": int(evidence["n"]),
                "valid": evidence["mark"] == "✓",
                "description": plain(cell["Description"]),
                "date": cell["Date"].replace("/", "-"),
                "log": str(TRACK3 / log.group(2)) if log else "",
            }
        )
    if not rows:
        raise SystemExit("make_leaderboard_csv: the results table has no rows")
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path, help="modded-nanogpt checkout (or the track-3 README)")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "optbench" / "report" / "leaderboards"
    )
    args = ap.parse_args(argv)
    rows = parse_table(readme_path(args.reference).read_text(encoding="utf-8"))
    out = args.out / "nanogpt_track3.csv"
    write_csv(rows, out)
    print(f"{len(rows)} rows ({sum(r['valid'] for r in rows)} valid) -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
