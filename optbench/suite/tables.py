"""The leaderboard as Markdown (terminal, README), CSV (every number, unrounded) and LaTeX (booktabs):
the overall score per optimizer, then each workload's results."""

from __future__ import annotations

import csv
import io
import math

from optbench.report.tables import _num, latex_escape


def _g(v, fmt: str = ".4g") -> str:
    """A number as the report writes one (n/a, not reached), in the suite's general format."""
    return _num(v, fmt)


def final_text(d: dict) -> str:
    """mean ± half-width of the 95% t-interval (one run: its value; a NaN run: said)."""
    if d.get("nonfinite"):
        return f"NaN ({d['nonfinite']}/{d['n']} runs)"
    if d["n"] == 0:
        return "n/a"
    if d["n"] == 1:
        return _g(d["mean"])
    return f"{_g(d['mean'])} ± {_g((d['ci_high'] - d['ci_low']) / 2, '.2g')}"


def _point(p: dict) -> str:
    return " ".join(f"{k}={v:.3g}" for k, v in sorted(p.items()))


def _ratio(r) -> str:
    return "∞" if r is None or math.isinf(r) else f"{r:.2f}"


def overall_rows(scores: list[dict], prof: dict) -> list[dict]:
    """One row per optimizer, best score first (ties: the order given)."""
    rows = []
    for o, b in prof["score"].items():
        mine = [s for s in scores if s["optimizer"] == o]
        rates = [s["success_rate"] for s in mine if not math.isnan(s["success_rate"])]
        status = {k: sum(s["status"][k] for s in mine) for k in ("completed", "diverged", "failed", "interrupted")}
        rows.append(
            {
                "optimizer": o,
                "score": b,
                "solved": sum(math.isfinite(r) for r in prof["ratios"][o].values()),
                "workloads": len(prof["workloads"]),
                "success_rate": sum(rates) / len(rates) if rates else math.nan,
                "runs": sum(s["runs"] for s in mine),
                **status,
            }
        )
    return sorted(rows, key=lambda r: -r["score"] if not math.isnan(r["score"]) else math.inf)


def protocol_line(record: dict, prof: dict) -> str:
    n_w = len(record["workloads"])
    line = (
        f"{len(record['optimizers'])} optimizers x {n_w} workload{'s' if n_w != 1 else ''}: "
        f"{record['budget']} tuning trial{'s' if record['budget'] != 1 else ''} per optimizer and workload "
        f"({record['search']} search), then {record['seeds']} seed{'s' if record['seeds'] != 1 else ''} of the "
        f"chosen configuration. Score: area under the performance profile over [1, {prof['tau_max']:g}] "
        f"(AlgoPerf), ratio of the median {prof['measure'].replace('_', ' ')} to the best optimizer's; "
        "a workload not reached by more than half the seeds counts as infinity."
    )
    if prof["excluded"]:
        line += f" Left out of the profile (no target): {', '.join(prof['excluded'])}."
    nobody = [w for w in prof["workloads"] if not any(math.isfinite(r[w]) for r in prof["ratios"].values())]
    if nobody:
        line += f" Reached by no optimizer (0 for all, still counted): {', '.join(nobody)}."
    return line


def markdown(record: dict, scores: list[dict], prof: dict, command: str | None = None) -> str:
    out = ["# optbench suite leaderboard", ""]
    if command:
        out += [f"`{command}`", ""]
    out += [
        protocol_line(record, prof),
        "",
        (
            "| rank | optimizer | score | workloads reached | mean success rate | runs | diverged | failed "
            "| interrupted |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(overall_rows(scores, prof), start=1):
        out.append(
            f"| {i} | {r['optimizer']} | {_g(r['score'], '.3f')} | {r['solved']}/{r['workloads']} | "
            f"{_g(r['success_rate'], '.2f')} | {r['runs']} | {r['diverged']} | {r['failed']} | "
            f"{r['interrupted']} |"
        )
    legend = (
        "success: seed runs that reached the target and completed; steps/time: medians over the seeds (a miss "
        "= not reached); final: mean ± 95% CI half-width over the seeds that completed; attempts: tuning trials "
        "tried up to the first that reached the target; ratio: the profile's; diverged/failed: over all the "
        "cell's runs (trials and seeds)."
    )
    out += ["", "## Per workload", "", legend, ""]
    for w in dict.fromkeys(s["workload"] for s in scores):
        same = [s for s in scores if s["workload"] == w]
        s0 = same[0]
        header = (
            f"| optimizer | success | steps→target | time→target (s) | final {s0['metric']} | attempts "
            "| chosen | ratio | diverged | failed |"
        )
        out += [
            f"### {w}",
            "",
            f"metric {s0['metric']} ({s0['mode']}), target {_g(s0['target'])}",
            "",
            header,
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for s in same:
            ratio = prof["ratios"].get(s["optimizer"], {}).get(w)
            out.append(
                f"| {s['optimizer']} | {s['reached']}/{s['seeds']} | {_g(s['steps_to_target'], '.0f')} | "
                f"{_g(s['time_to_target_s'], '.3g')} | {final_text(s['final'])} | "
                f"{s['attempts'] if s['attempts'] is not None else 'not reached'}/{s['trials']} | "
                f"{_point(s['chosen'])} | {_ratio(ratio) if w in prof['workloads'] else 'n/a'} | "
                f"{s['status']['diverged']} | {s['status']['failed'] + s['status']['interrupted']} |"
            )
        out.append("")
    return "\n".join(out)


CSV_FIELDS = [
    "workload",
    "optimizer",
    "metric",
    "mode",
    "target",
    "seeds",
    "reached",
    "success_rate",
    "steps_to_target",
    "time_to_target_s",
    "final_mean",
    "final_std",
    "final_ci_low",
    "final_ci_high",
    "final_n",
    "attempts",
    "trials",
    "chosen",
    "ratio",
    "score",
    "runs",
    "completed",
    "diverged",
    "failed",
    "interrupted",
]


def csv_text(scores: list[dict], prof: dict) -> str:
    """One row per (workload, optimizer); `score` repeats the optimizer's overall score on each row."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for s in scores:
        row = {k: s.get(k) for k in CSV_FIELDS if k in s}
        row.update(
            {f"final_{k}": s["final"][k] for k in ("mean", "std", "ci_low", "ci_high")},
            final_n=s["final"]["n"],
            chosen=_point(s["chosen"]),
            **s["status"],
            ratio=prof["ratios"].get(s["optimizer"], {}).get(s["workload"], math.nan),
            score=prof["score"].get(s["optimizer"], math.nan),
        )
        w.writerow(row)
    return buf.getvalue()


def latex(record: dict, scores: list[dict], prof: dict) -> str:
    workloads = list(dict.fromkeys(s["workload"] for s in scores))
    out = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{rlrrr}",
        r"\toprule",
        r"rank & optimizer & score & reached & success \\",
        r"\midrule",
    ]
    for i, r in enumerate(overall_rows(scores, prof), start=1):
        out.append(
            f"{i} & {latex_escape(r['optimizer'])} & {_g(r['score'], '.3f')} & {r['solved']}/{r['workloads']} & "
            f"{latex_escape(_g(r['success_rate'], '.2f'))} \\\\"
        )
    out += [
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{" + latex_escape(protocol_line(record, prof)) + "}",
        r"\end{table}",
        "",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{ll" + "r" * 5 + "}",
        r"\toprule",
        r"workload & optimizer & success & steps$\to$target & final (95\% CI) & attempts & ratio \\",
        r"\midrule",
    ]
    for w in workloads:
        for s in (s for s in scores if s["workload"] == w):
            ratio = prof["ratios"].get(s["optimizer"], {}).get(w)
            cells = [
                w,
                s["optimizer"],
                f"{s['reached']}/{s['seeds']}",
                _g(s["steps_to_target"], ".0f"),
                final_text(s["final"]),
                f"{s['attempts'] if s['attempts'] is not None else 'not reached'}/{s['trials']}",
                _ratio(ratio) if w in prof["workloads"] else "n/a",
            ]
            out.append(" & ".join(latex_escape(c).replace("∞", r"$\infty$") for c in cells) + r" \\")
        out.append(r"\midrule" if w != workloads[-1] else r"\bottomrule")
    out += [r"\end{tabular}", r"\caption{Per-workload results of the suite.}", r"\end{table}", ""]
    return "\n".join(out)
