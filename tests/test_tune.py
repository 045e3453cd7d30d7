"""`optbench tune`: equal trials per optimizer, choice by the final validation metric, seeds,
budget recorded, and a second call that reruns nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

TINY = [
    "trainer.max_steps=4",
    "trainer.eval_every=2",
    "trainer.batch_size=32",
    "data.n_train=160",
    "data.n_test=64",
    "data.noise=0.3",
    "model.widths=[4,8,8]",
    "trainer.device=cpu",
]


def final_val(run_dir: Path) -> float:
    """The validation metric of the LAST evaluation line, i.e. at the end of the schedule."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["type"] == "eval"][-1]["val_acc"]


def test_tune_protocol_and_resume(tmp_path, monkeypatch, capsys):
    import optbench.train as train_pkg
    from optbench.commands.tune import main

    argv = [
        "--optimizers",
        "adamw,sgd",
        "--trials",
        "2",
        "--seeds",
        "1",
        "--name",
        "t",
        "--out",
        str(tmp_path / "tune"),
        "--results",
        str(tmp_path / "results"),
        *TINY,
        f"data.root={tmp_path}/data",
    ]
    main(argv)
    out = tmp_path / "tune" / "t"
    record = json.loads((out / "tune.json").read_text())
    assert record["trials_per_optimizer"] == 2 and record["select_metric"] == "val_acc"
    assert "data.val_split=16" in record["overrides"]  # a validation split was added: 10% of n_train
    for name, grid_ends in (("adamw", (1e-4, 1e-2)), ("sgd", (0.01, 1.0))):
        trials = sorted((out / "trials" / name).iterdir())
        assert len(trials) == 2  # the same number of trials for every optimizer
        # grid search with 2 trials takes both ends of the optimizer's own lr_grid
        lrs = sorted(json.loads((d / "summary.json").read_text())["lr"] for d in trials)
        assert lrs == pytest.approx(list(grid_ends))
        # the choice is the best final validation metric, read here from metrics.jsonl
        vals = {
            d: final_val(d) for d in trials if json.loads((d / "summary.json").read_text())["status"] == "completed"
        }
        best_dir = max(vals, key=vals.get)
        best_lr = json.loads((best_dir / "summary.json").read_text())["lr"]
        assert record["best"][name]["value"] == pytest.approx(vals[best_dir])
        assert record["best"][name]["point"]["lr"] == pytest.approx(best_lr)
        # the best configuration reran with a fresh seed, and that run used the chosen lr
        final = json.loads((out / "final" / name / "seed=1" / "summary.json").read_text())
        assert final["seed"] == 1 and final["lr"] == pytest.approx(best_lr)
    # budget: 2 optimizers x (2 trials + 1 seed) x 4 steps, all completed here or counted as run
    assert record["steps_per_run"] == 4 and record["planned_steps"] == 2 * 3 * 4
    assert record["total_steps"] <= record["planned_steps"]
    md = (tmp_path / "results" / "t" / "table.md").read_text()
    assert "2 trials per optimizer" in md and "| adamw |" in md and "| sgd |" in md

    # resumable: a second call trains nothing and gives the same record
    calls = []
    monkeypatch.setattr(train_pkg, "train", lambda *a, **k: calls.append(a) or pytest.fail("reran a run"))
    capsys.readouterr()
    main(argv)
    assert calls == []
    assert capsys.readouterr().out.count("done already") == 6
    again = json.loads((out / "tune.json").read_text())
    assert again["best"] == record["best"] and again["total_steps"] == record["total_steps"]


def test_sampled_points_are_log_uniform_in_the_grid_range():
    from optbench.tune import sampled_points

    space = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}
    for method in ("random", "sobol"):
        pts = sampled_points(space, 64, method, seed=0)
        logs = [math.log10(p["lr"]) for p in pts]
        assert min(logs) >= -4 and max(logs) <= -2
        assert abs(sum(logs) / len(logs) + 3) < 0.15  # centred on the log-midpoint
    # quasi-random points fill the range evenly: each quarter of the log range gets 16 +- 1 of 64
    logs = [math.log10(p["lr"]) for p in sampled_points(space, 64, "sobol", seed=1)]
    counts = [sum(-4 + 0.5 * i <= v < -4 + 0.5 * (i + 1) for v in logs) for i in range(4)]
    assert all(15 <= c <= 17 for c in counts), counts


def test_grid_points_and_bad_input():
    from optbench.errors import ConfigError
    from optbench.tune import grid_points, tune

    grid = [1, 2, 3, 4, 5]
    assert [p["lr"] for p in grid_points(grid, 3)] == [1, 3, 5]
    assert [p["lr"] for p in grid_points(grid, 5)] == grid
    with pytest.raises(ConfigError, match="more than the lr_grid"):
        grid_points(grid, 6)
    with pytest.raises(ConfigError, match="valid choices: grid, random, sobol"):
        tune(["adamw"], [], Path("unused"), search="bayes")
    with pytest.raises(ConfigError, match="chosen by the protocol"):
        tune(["adamw"], ["optimizer.lr=0.1"], Path("unused"))


def test_bad_override_is_reported_before_any_run(data_root, tmp_path):
    """A bad value used to surface only as 'made with other settings' from an earlier tune dir."""
    from optbench.errors import ConfigError
    from optbench.tune import tune

    with pytest.raises(ConfigError, match=r"trainer.max_steps=-1 is invalid"):
        tune(["adamw"], ["trainer.max_steps=-1"], tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_selection_mode_follows_the_selection_metric(data_root):
    """--select-metric val_loss on an accuracy task (mode max) used to pick the HIGHEST loss."""
    from optbench.tune import base_settings, metric_mode

    assert base_settings([], None)[1:] == ("val_acc", "max")
    assert base_settings([], "val_loss")[1:] == ("val_loss", "min")
    assert base_settings(["task=fineweb_synthetic"], None)[2] == "min"
    assert metric_mode("test_acc", "test_acc", "max") == "max"
    assert metric_mode("val_acc", "val_loss", "min") == "max"


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "nesterov"])
def test_sweep_lr_preset_takes_each_optimizers_own_grid(optimizer):
    from optbench.confdir import load_option
    from optbench.config import compose, validate

    grid = load_option("optimizer", optimizer)["lr_grid"]
    for i in (0, len(grid) - 1):
        cfg = compose(["experiment=sweep_lr", f"optimizer={optimizer}", f"lr_index='{i}'"])
        validate(cfg)
        assert cfg.optimizer.lr == pytest.approx(float(grid[i]))
    cfg = compose(["experiment=sweep_lr", f"optimizer={optimizer}"])
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.sweeper.params.lr_index == "'0','1','2','3','4'"


def test_sweep_optimizers_preset_is_an_optimizer_by_seed_grid():
    from optbench.config import compose

    params = compose(["experiment=sweep_optimizers"]).hydra.sweeper.params
    assert "adamw" in params.optimizer.split(",") and params.seed == "0,1,2"


def test_real_cifar_gets_a_validation_split_before_any_trial(data_root):
    """R3 #8: without one, the first trial trained fully and then failed for want of val_acc."""
    from optbench.tune import base_settings

    overrides, metric, mode = base_settings(["task=cifar10", f"data.root={data_root}"], None)
    assert "data.val_split=5000" in overrides and (metric, mode) == ("val_acc", "max")


def test_one_grid_trial_is_the_default_lr():
    from optbench.confdir import load_option
    from optbench.tune import grid_points

    cfg = load_option("optimizer", "adamw")
    assert grid_points(cfg["lr_grid"], 1) == [{"lr": cfg["lr"]}]


@pytest.mark.parametrize("names", ["", ",", " , "])
def test_no_optimizer_named_is_one_line_exit_2(names, tmp_path, capsys):
    """Used to end in a StopIteration traceback."""
    from optbench.cli import main as cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(["tune", "--optimizers", names, "--out", str(tmp_path / "t")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--optimizers names no optimizer" in err[0] and "adamw" in err[0]
    assert not (tmp_path / "t").exists()


def test_bad_select_metric_is_refused_before_any_trial(tmp_path, monkeypatch, data_root):
    import optbench.train as train_pkg
    from optbench.errors import ConfigError
    from optbench.tune import tune

    monkeypatch.setattr(train_pkg, "train", lambda *a, **k: pytest.fail("a trial trained"))
    with pytest.raises(ConfigError, match=r"--select-metric val_accc is invalid.*val_acc, val_loss"):
        tune(["adamw"], TINY, tmp_path / "t", trials=1, seeds=1, select_metric="val_accc")
    with pytest.raises(ConfigError, match=r"--select-metric val_acc is invalid.*gives val_loss, excess_loss"):
        tune(["adamw"], ["task=fineweb_synthetic"], tmp_path / "t", trials=1, seeds=1, select_metric="val_acc")
    assert not (tmp_path / "t").exists()
