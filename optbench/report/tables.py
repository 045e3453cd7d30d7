"""Render rows as Markdown (terminal + README), CSV (every number, unrounded) and LaTeX (booktabs)."""

from __future__ import annotations

import csv
import io
import math

from optbench.report.benchmarks import CLAIM_FIELDS, claim_fields, claims_markdown

MIB = 2**20


def _num(v, fmt: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "not reached"
    return format(v, fmt)


def _pm(d: dict) -> str:
    if d.get("nonfinite"):  # counted, not dropped: the mean of a row with a NaN run is NaN
        return f"NaN ({d['nonfinite']}/{d['n']} runs NaN)"
    if d["n"] == 0:
        return "n/a"
    if d["n"] == 1:  # one run has no spread to show
        return f"{d['mean']:.4f}"
    return f"{d['mean']:.4f} ± {d['std']:.4f}"


def _ci(d: dict) -> str:
    if d["n"] < 2:
        return "n/a"
    return f"[{d['ci_low']:.4f}, {d['ci_high']:.4f}]"


def _p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return ("<0.001" if p < 1e-3 else f"{p:.3f}") + (" ✓" if p < 0.01 else "")


def _x(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}x"


def display_rows(rows) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the Markdown and LaTeX tables."""
    s0 = rows[0].stats
    metric, tu = s0["metric"], s0["throughput_unit"]
    target = s0["target"]
    header = [
        "config",
        "runs",
        "seeds",
        f"final {metric}",
        "95% CI",
        f"best {metric}",
        f"reached {target}" if target is not None else "reached",
        "steps→target",
        "time→target (s)",
        "p (beats target)",
        "speedup (steps)",
        "speedup (time)",
        tu,
        "peak mem (MiB)",
        "opt state (MiB)",
        "diverged",
        "failed",
    ]
    cells = []
    for r in rows:
        s = r.stats
        seeds = ",".join(str(x) for x in s["seeds"])
        cells.append(
            [
                s["label"],
                str(s["runs"]),
                seeds,
                _pm(s["final"]),
                _ci(s["final"]),
                _pm(s["best"]),
                f"{s['reached']}/{s['runs']}" if s["target"] is not None else "n/a",
                _num(s["steps_to_target"], ".0f"),
                _num(s["time_to_target_s"], ".2f"),
                _p(s["p_beats_target"]),
                _x(s["speedup_steps"]),
                _x(s["speedup_time"]),
                _num(s["throughput"], ",.0f"),
                _num(s["peak_memory_bytes"] / MIB, ".1f"),
                _num(s["optimizer_state_bytes"] / MIB, ".3f"),
                str(s["diverged"]),
                str(s["failed"] + s["interrupted"]),
            ]
        )
    return header, cells


NOTES = (
    "final/best: mean ± std over completed runs, 95% t-interval; a completed run ending in NaN makes it NaN "
    "(counted, not dropped). reached and steps/time→target: a run that missed the target or did not complete "
    "(diverged after reaching it, too) counts as never reaching it; the median is over all runs (so a median is 'not "
    "reached' unless more than half the runs reached it); time is the train clock. p: one-sided t-test that the "
    "mean final metric beats the target (✓: p < 0.01, the speedrun rule); n/a when a run of the row diverged, "
    "failed or stopped at the target. speedup: baseline median / "
    "row median. diverged/failed runs are counted here and as misses, never dropped."
)


def duplicates_markdown(rows) -> list[str]:
    """Runs of one configuration repeated (`-m seed=0,0`) are one result, not independent seeds."""
    lines = []
    for r in rows:
        for dup, orig in getattr(r, "duplicates", []):
            lines.append(
                f"- duplicate: `{dup.path}` has the same configuration as `{orig.path}` "
                f"(seed {dup.summary.get('seed')})"
            )
    if lines:
        lines.insert(
            0,
            f"\n{len(lines)} duplicate run{'s' if len(lines) > 1 else ''} (identical configuration, "
            "run dir aside): each configuration is counted once in the statistics above.",
        )
    return lines


def problems_markdown(rows) -> list[str]:
    """What could not be read, with the path: a damaged run is listed, never a silent gap."""
    notes = [n for row in rows for r in [*row.runs, *(d for d, _ in getattr(row, "duplicates", []))] for n in r.notes]
    if not notes:
        return []
    return ["", "Files that could not be read:", *(f"- {n}" for n in notes)]


def markdown(rows, title: str | None = None) -> str:
    out = []
    for task in dict.fromkeys(r.task for r in rows):
        same = [r for r in rows if r.task == task]
        header, cells = display_rows(same)
        s0 = same[0].stats
        target = "no target" if s0["target"] is None else f"target {s0['target']}"
        out.append(f"### {task}: {s0['metric']} ({s0['mode']}), {target}, baseline {s0['baseline']}")
        out.append("")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        out += ["| " + " | ".join(c) + " |" for c in cells]
        out += claims_markdown(same)  # a community benchmark's own rule, under its task's table
        out += duplicates_markdown(same)
        out.append("")
    out.append(NOTES)
    out += problems_markdown(rows)
    if any(r.summary.get("peak_memory_kind") == "cpu_peak_rss" for row in rows for r in row.runs):
        out.append(
            "peak mem on a CPU is the run's peak resident memory of the whole process (Python, torch, "
            "data), not tensor memory alone."
        )
    if any(r.summary.get("peak_memory_kind") == "cpu_max_rss" for row in rows for r in row.runs):
        out.append(
            "peak mem on a CPU is the process's lifetime max RSS here (no per-run reset on this OS), "
            "which the runs of one multirun process share."
        )
    if title:
        out.insert(0, f"## {title}\n")
    return "\n".join(out) + "\n"


CSV_FIELDS = [
    "task",
    "label",
    "metric",
    "mode",
    "target",
    "runs",
    "seeds",
    "completed",
    "diverged",
    "failed",
    "interrupted",
    "final_mean",
    "final_std",
    "final_ci_low",
    "final_ci_high",
    "best_mean",
    "best_std",
    "best_ci_low",
    "best_ci_high",
    "reached",
    "reached_fraction",
    "steps_to_target_median",
    "time_to_target_s_median",
    "p_beats_target",
    "baseline",
    "speedup_steps",
    "speedup_time",
    "throughput",
    "throughput_unit",
    "peak_memory_bytes",
    "optimizer_state_bytes",
    "train_time_s",
    "steps",
    "lr",
    "final_nonfinite",
    *CLAIM_FIELDS,
    "duplicates",
]


def csv_text(rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        s = r.stats
        flat = {k: s.get(k) for k in CSV_FIELDS if k in s}
        for part in ("final", "best"):
            for k in ("mean", "std", "ci_low", "ci_high"):
                flat[f"{part}_{k}"] = s[part][k]
        flat["final_nonfinite"] = s["final"]["nonfinite"]
        flat["seeds"] = " ".join(str(x) for x in s["seeds"])
        flat["steps_to_target_median"] = s["steps_to_target"]
        flat["time_to_target_s_median"] = s["time_to_target_s"]
        flat.update(claim_fields(s.get("claim")))
        w.writerow(flat)
    return buf.getvalue()


_LATEX_ESCAPES = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def latex_escape(text: str) -> str:
    text = "".join(_LATEX_ESCAPES.get(c, c) for c in text)
    return text.replace("±", r"$\pm$").replace("→", r"$\to$").replace("✓", r"$^\ast$").replace("<0.001", r"$<$0.001")


def latex(rows, caption: str = "") -> str:
    out = []
    for task in dict.fromkeys(r.task for r in rows):
        same = [r for r in rows if r.task == task]
        header, cells = display_rows(same)
        out += [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
            r"\toprule",
            " & ".join(latex_escape(h) for h in header) + r" \\",
            r"\midrule",
        ]
        out += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in cells]
        t = same[0].stats["target"]
        cap = latex_escape(
            f"{caption} {task}: {same[0].stats['metric']}, {'no target' if t is None else f'target {t}'}.".strip()
        )
        cap += r" Mean $\pm$ std over seeds; $^\ast$: one-sided $t$-test $p<0.01$ that the mean beats the target."
        out += [r"\bottomrule", r"\end{tabular}", r"\caption{" + cap + "}", r"\end{table}", ""]
    return "\n".join(out)
