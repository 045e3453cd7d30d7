"""Sweeps Hydra cannot enumerate (interval(), tag(log, interval())), as the Optuna sweeper draws them:
precheck validates every fixed key and both bounds of each interval, then lets the sweep through;
with hydra-optuna-sweeper installed (the `cluster` extra) a tiny `optbench train -m` runs."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from optbench.errors import ConfigError

TINY = [
    "trainer.max_steps=2",
    "trainer.eval_every=2",
    "trainer.batch_size=32",
    "data.n_train=64",
    "data.n_test=32",
    "model.widths=[4,8,8]",
    "trainer.device=cpu",
    "trainer.progress=false",
]


def test_interval_sweep_is_checked_by_its_bounds_and_let_through():
    from optbench.config import _sweep_variants, precheck

    lr = "optimizer.lr=tag(log,interval(1e-4,1e-2))"
    cfg = precheck([lr, "trainer.max_steps=3"], multirun=True)
    assert cfg.optimizer.lr == pytest.approx(1e-4)  # the first job checked: the low bound
    assert {v[0] for v in _sweep_variants([lr])} == {"optimizer.lr=0.0001", "optimizer.lr=0.01"}
    # a bound that is no valid value names itself; so does a bad fixed key beside the interval
    with pytest.raises(ConfigError, match=r"^optimizer.lr=-1.0 is invalid"):
        precheck(["optimizer.lr=interval(1e-4,-1)"], multirun=True)
    with pytest.raises(ConfigError, match=r"^trainer.max_steps=-3 is invalid"):
        precheck([lr, "trainer.max_steps=-3"], multirun=True)
    with pytest.raises(
        ConfigError,
        match=r"'optimizer.lr=tag\(log,interval\(1e-4,1e-2\)\)' lists several values: "
        r"add -m",
    ):
        precheck([lr])


def test_interval_beside_a_choice_sweep_checks_each():
    from optbench.config import precheck

    with pytest.raises(ConfigError, match=r"unknown optimizer 'nope'"):
        precheck(["optimizer=adamw,nope", "optimizer.lr=interval(1e-4,1e-2)"], multirun=True)
    with pytest.raises(ConfigError, match=r"^optimizer.weight_decay=-0.5 is invalid"):
        precheck(["seed=0,1", "optimizer.weight_decay=interval(-0.5,0.1)"], multirun=True)


def test_the_job_returns_no_objective_for_a_run_that_did_not_complete():
    from optbench.train.job import sweep_objective

    assert sweep_objective({"status": "completed", "final_metric": 0.5}) == 0.5
    assert sweep_objective({"status": "diverged", "final_metric": 0.4}) is None
    assert sweep_objective({"status": "completed", "final_metric": float("nan")}) is None
    assert sweep_objective({"status": "failed", "final_metric": None}) is None


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
    reason="hydra-optuna-sweeper is not installed (pip install optbench[cluster])",
)
def test_optuna_sweeper_runs_an_interval_sweep(tmp_path, data_root, monkeypatch):
    from optbench.commands.train import main

    sweep = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # app.main hands Hydra its own
    main(
        [
            "-m",
            "hydra/sweeper=optuna",
            "optimizer.lr=tag(log,interval(1e-4,1e-2))",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=1",
            "hydra.sweeper.direction=maximize",
            "hydra.sweeper.sampler.seed=0",
            # a study kept in sqlite (shared, resumable): what optuna 2.10 cannot do under SQLAlchemy 2
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
            "hydra.sweeper.study_name=t",
            f"hydra.sweep.dir={sweep}",
            f"data.root={data_root}",
            *TINY,
        ]
    )
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert len(summaries) == 2 and all(s["status"] == "completed" for s in summaries)
    assert all(1e-4 <= s["lr"] <= 1e-2 for s in summaries) and summaries[0]["lr"] != summaries[1]["lr"]
    best = (sweep / "optimization_results.yaml").read_text()
    assert "optimizer.lr" in best and "best_value" in best
