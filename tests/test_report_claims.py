"""The report's claims cover every run of a row (found in review: R3 #5)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy import stats as sps

from optbench.report.collect import Run
from optbench.report.stats import Row, row_stats


def run(final, status="completed", reached=True, steps=50, stop_reason=None) -> Run:
    return Run(
        Path("/x"),
        {
            "status": status,
            "final_metric": final,
            "best_metric": final,
            "target": 0.94,
            "mode": "max",
            "metric": "test_acc",
            "reached": reached,
            "steps_to_target": steps if reached else None,
            "time_to_target_s": 1.0 if reached else None,
            "stop_reason": stop_reason,
            "seed": 0,
        },
        {},
    )


def test_p_value_over_completed_runs_matches_scipy():
    finals = [0.951, 0.948, 0.953]
    s = row_stats(Row(("a",), "a", [run(v) for v in finals]))
    assert s["p_beats_target"] == pytest.approx(sps.ttest_1samp(finals, 0.94, alternative="greater").pvalue)


def test_a_diverged_run_voids_the_claim_that_the_mean_beats_the_target():
    runs = [run(0.951), run(0.952), run(0.953), run(None, status="diverged", reached=False)]
    s = row_stats(Row(("a",), "a", runs))
    assert math.isnan(s["p_beats_target"]) and s["diverged"] == 1


def test_runs_stopped_at_the_target_give_no_p_value():
    runs = [run(0.941, stop_reason="target reached"), run(0.945, stop_reason="target reached")]
    assert math.isnan(row_stats(Row(("a",), "a", runs))["p_beats_target"])


def test_a_run_that_reached_the_target_then_diverged_counts_as_a_miss():
    runs = [run(0.95, steps=40), run(None, status="diverged", reached=True, steps=10), run(0.95, steps=60)]
    assert row_stats(Row(("a",), "a", runs))["steps_to_target"] == 60  # median of 40, inf, 60
