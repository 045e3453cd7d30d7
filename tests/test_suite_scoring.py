"""`optbench suite` scoring on hand-made inputs with known answers: the AlgoPerf profile area, ratios
with ties and failures, and the per-workload numbers (success rate, medians, attempts needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from optbench.report.collect import Run
from optbench.suite.collect import Cell
from optbench.suite.profile import area, performance_ratios, profile, rho
from optbench.suite.score import attempts_needed, cell_scores

INF = math.inf


def test_area_known_values():
    assert area([1.0, 1.0, 1.0]) == 1.0  # best everywhere: the whole area
    assert area([INF, INF]) == 0.0  # failed everywhere: none
    assert area([2.5]) == pytest.approx(0.5)  # (4 - 2.5) / (4 - 1)
    assert area([1.0, INF]) == pytest.approx(0.5)
    assert area([4.0]) == 0.0 and area([5.0]) == 0.0  # at or beyond tau_max: no credit, as a failure
    assert area([2.0], tau_max=3.0) == pytest.approx(0.5)


def test_area_is_the_integral_of_rho():
    """The exact area against a fine numerical integral of the step function rho over [1, 4]."""
    ratios = [1.0, 1.3, 2.0, 3.7, INF, 6.0]
    taus = np.linspace(1.0, 4.0, 300001)
    numeric = np.trapezoid(rho(ratios, taus), taus) / 3.0
    assert area(ratios) == pytest.approx(numeric, abs=1e-4)


def test_rho_counts_workloads_within_tau():
    assert list(rho([1.0, 2.0, INF], [1.0, 1.5, 2.0, 4.0])) == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])


def test_ratios_ties_and_failures():
    r = performance_ratios({"w": {"a": 10.0, "b": 10.0, "c": 20.0, "d": INF}})
    assert r == {"a": [1.0], "b": [1.0], "c": [2.0], "d": [INF]}  # a tie: both at the best, ratio 1


def test_a_workload_nobody_solved_stays_in_n():
    r = performance_ratios({"w1": {"a": 1.0, "b": 2.0}, "w2": {"a": INF, "b": INF}})
    assert r == {"a": [1.0, INF], "b": [2.0, INF]}
    assert area(r["a"]) == pytest.approx(0.5) and area(r["b"]) == pytest.approx((4 - 2) / 3 / 2)


def _s(w, o, steps, target=0.5):
    return {"workload": w, "optimizer": o, "steps_to_target": steps, "time_to_target_s": steps / 10, "target": target}


def test_profile_of_scores_by_steps_or_time_and_no_target_left_out():
    scores = [
        _s("w1", "a", 10),
        _s("w1", "b", 30),
        _s("w2", "a", INF),
        _s("w2", "b", 5),
        _s("w3", "a", math.nan, None),
        _s("w3", "b", math.nan, None),
    ]
    p = profile(scores)
    assert p["workloads"] == ["w1", "w2"] and p["excluded"] == ["w3"]
    assert p["ratios"]["a"] == {"w1": 1.0, "w2": INF} and p["ratios"]["b"] == {"w1": 3.0, "w2": 1.0}
    assert p["score"]["a"] == pytest.approx(0.5) and p["score"]["b"] == pytest.approx((1 + 1 / 3) / 2)
    assert profile(scores, by="time")["measure"] == "time_to_target_s"
    # a seed median that is NaN where the task has a target (no seed finished) is a failure
    assert profile([_s("w", "a", 1), _s("w", "b", math.nan)])["ratios"]["b"] == {"w": INF}


def run(status="completed", reached=False, steps=None, final=0.9, i=0) -> Run:
    return Run(
        path=Path(f"/x/{i}"),
        config={},
        summary={
            "status": status,
            "reached": reached,
            "steps_to_target": steps,
            "time_to_target_s": steps and steps / 100,
            "final_metric": final,
            "metric": "acc",
            "mode": "max",
            "target": 0.8,
        },
    )


def test_cell_scores_success_medians_attempts_and_counts():
    trials = [
        run("diverged", reached=True, steps=5, i=1),  # reached, then diverged: a miss
        run("completed", reached=False, i=2),
        run("completed", reached=True, steps=40, i=3),
    ]
    seeds = [
        run(reached=True, steps=10, final=0.85, i=4),
        run(reached=True, steps=30, final=0.87, i=5),
        run("diverged", final=math.nan, i=6),
    ]
    cell = Cell("w", "a", trials, chosen=2, seeds=seeds, points=[{"lr": 1.0}, {"lr": 0.1}, {"lr": 0.01}])
    s = cell_scores(cell)
    assert attempts_needed(cell) == 3 and s["attempts"] == 3 and s["trials"] == 3
    assert s["reached"] == 2 and s["success_rate"] == pytest.approx(2 / 3)
    assert s["steps_to_target"] == 30.0  # median of 10, 30 and inf (the miss)
    assert s["final"]["n"] == 2 and s["final"]["mean"] == pytest.approx(0.86)  # over the completed seeds
    assert s["status"] == {"completed": 4, "diverged": 2, "failed": 0, "interrupted": 0}
    assert s["chosen"] == {"lr": 0.01}


def test_cell_scores_misses_and_unreadable_runs():
    seeds = [run(reached=True, steps=10, i=1), run(i=2), run("unreadable", i=3)]
    cell = Cell("w", "a", [run(i=4)], chosen=0, seeds=seeds, points=[{"lr": 1.0}])
    s = cell_scores(cell)
    assert s["attempts"] is None  # no trial reached the target
    assert s["steps_to_target"] == INF  # one of three seeds reached it: the median is a miss
    assert s["status"]["failed"] == 1  # unreadable counts as failed, not as absent
