"""The AlgoPerf performance profile over workloads and its normalised area, the suite's single score.

Transcribed from the AlgoPerf documentation ("Benchmark score using performance profiles",
mlcommons/algorithmic-efficiency docs/DOCUMENTATION.md; Dahl et al. 2023, "Benchmarking Neural
Network Training Algorithms", which take performance profiles from Dolan & Moré 2002):

- t_{o,w}: optimizer o's time to the target on workload w; a workload it did not solve has t = inf;
- performance ratio r_{o,w} = t_{o,w} / min_o' t_{o',w}, in [1, inf];
- rho_o(tau) = (1/n) * #{workloads w : r_{o,w} <= tau}, n = ALL workloads;
- benchmark score B_o = 1/(r_max - 1) * integral_1^{r_max} rho_o(tau) dtau, in [0, 1], r_max = 4: beyond
  four times the best an optimizer gets no more credit on a workload than one that failed it.

What t is here: the median over the chosen configuration's seed runs of the STEPS to target (default)
or of the train-clock seconds (`--profile-by time`, AlgoPerf's choice), a seed that missed counting as
inf, so t is finite only when more than half the seeds reached the target (AlgoPerf's scoring code
likewise scores a workload as missed unless at least 3 of its 5 trials reach the target). Steps are
the default because on a CPU shared by other jobs the train clock measures the machine's load as much as
the optimizer, and the diagnostic problems are too small for per-step cost to matter; time is the
measure that charges an expensive step (SOAP, Shampoo) its cost.

A workload that no optimizer solved has r = inf for all (inf/inf is no ratio: AlgoPerf's pandas code
gives NaN, which counts as a miss) and stays in n. A workload without a target is left out of the
profile and named. Ties: every optimizer at the best time gets r = 1.

The integral of the step function rho is computed exactly: each workload with r <= r_max adds
(r_max - r) / (r_max - 1) / n. (AlgoPerf's scoring/performance_profile.py approximates it with the
trapezoid rule on 100 evenly spaced points; the documented definition is the integral.)
"""

from __future__ import annotations

import math

import numpy as np

TAU_MAX = 4.0
MEASURES = {"steps": "steps_to_target", "time": "time_to_target_s"}


def performance_ratios(times: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    """times[workload][optimizer] -> per optimizer its ratio on each workload (report.plots' rule)."""
    from optbench.report.plots import profile_ratios

    return profile_ratios(times)


def rho(ratios: list[float], taus) -> np.ndarray:
    """rho(tau) for each tau: the fraction of workloads with ratio <= tau."""
    from optbench.report.plots import profile_curve

    return profile_curve(ratios, np.atleast_1d(np.asarray(taus, dtype=float)))


def area(ratios: list[float], tau_max: float = TAU_MAX) -> float:
    """B = 1/(tau_max - 1) * integral_1^tau_max rho(tau) dtau, exactly (rho is a step function)."""
    if not ratios:
        return math.nan
    if tau_max <= 1:
        raise ValueError(f"tau_max={tau_max} must be > 1")
    return float(sum(max(0.0, tau_max - max(1.0, r)) for r in ratios if r <= tau_max) / (tau_max - 1) / len(ratios))


def profile(scores: list[dict], by: str = "steps", tau_max: float = TAU_MAX) -> dict:
    """The profile of a suite's per-cell scores: ratios, each optimizer's area, what was left out."""
    key = MEASURES[by]
    optimizers = list(dict.fromkeys(s["optimizer"] for s in scores))
    workloads = list(dict.fromkeys(s["workload"] for s in scores))
    excluded = [w for w in workloads if all(s["target"] is None for s in scores if s["workload"] == w)]
    kept = [w for w in workloads if w not in excluded]
    times = {
        w: {s["optimizer"]: (s[key] if not math.isnan(s[key]) else math.inf) for s in scores if s["workload"] == w}
        for w in kept
    }
    ratios = performance_ratios(times) if kept else {o: [] for o in optimizers}
    return {
        "by": by,
        "measure": key,
        "tau_max": tau_max,
        "workloads": kept,
        "excluded": excluded,
        "ratios": {o: dict(zip(kept, ratios.get(o, []))) for o in optimizers},
        "score": {o: area(ratios.get(o, []), tau_max) for o in optimizers},
    }
