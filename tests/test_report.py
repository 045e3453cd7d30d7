"""`optbench report` over a real (tiny) multirun with a deliberately diverged run.

Every number the report prints is recomputed here from the runs' own files (metrics.jsonl
and summary.json) with independent code: statistics.*, scipy.stats.t.interval and the
t statistic written out by hand.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from scipy import stats as sps

TARGET = 0.2
TINY = [
    "trainer.max_steps=8",
    "trainer.eval_every=2",
    "trainer.log_every=1",
    "trainer.batch_size=32",
    "data.n_train=128",
    "data.n_test=64",
    "data.noise=0.3",
    "model.widths=[4,8,8]",
    "trainer.device=cpu",
    "trainer.progress=false",
    f"task.target={TARGET}",
]
JOBS = [  # (job dir as Hydra names it, overrides)
    ("0-optimizer=adamw,seed=0", ["optimizer=adamw", "seed=0"]),
    ("1-optimizer=adamw,seed=1", ["optimizer=adamw", "seed=1"]),
    ("2-optimizer=sgd,seed=0", ["optimizer=sgd", "seed=0"]),
    ("3-optimizer=sgd,seed=1", ["optimizer=sgd", "seed=1"]),
    # lr 1e6 blows the loss past divergence_factor x the initial loss within a step or two
    ("4-optimizer=sgd,optimizer.lr=1e6,seed=0", ["optimizer=sgd", "optimizer.lr=1e6", "seed=0"]),
]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory) -> Path:
    from omegaconf import open_dict

    from optbench.config import compose
    from optbench.train import train

    root = tmp_path_factory.mktemp("multirun")
    data = tmp_path_factory.mktemp("report_data")
    for job, overrides in JOBS:
        ov = [*TINY, f"data.root={data}", *overrides]
        cfg = compose(ov)
        with open_dict(cfg):
            cfg.pop("hydra", None)
            cfg.overrides = ov
        train(cfg, root / job)
    return root


def read_run(d: Path) -> dict:
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    return {"summary": json.loads((d / "summary.json").read_text()), "evals": [x for x in lines if x["type"] == "eval"]}


def expected_row(dirs: list[Path]) -> dict:
    """The row's numbers from the files, by the rules the report states."""
    runs = [read_run(d) for d in dirs]
    completed = [r for r in runs if r["summary"]["status"] == "completed"]
    finals = [r["evals"][-1]["test_acc"] for r in completed]  # the last evaluation, at the end
    steps, times = [], []
    for r in runs:
        hit = next((e for e in r["evals"] if e["test_acc"] >= TARGET), None)
        ok = hit is not None and r["summary"]["status"] == "completed"
        steps.append(hit["step"] if ok else math.inf)
        times.append(hit["time_s"] if ok else math.inf)
    out = {
        "runs": len(runs),
        "completed": len(completed),
        "diverged": sum(r["summary"]["status"] == "diverged" for r in runs),
        "reached": sum(s != math.inf for s in steps),
        "steps_median": statistics.median(steps),
        "time_median": statistics.median(times),
        "finals": finals,
    }
    if len(finals) >= 2:
        mean, sd = statistics.mean(finals), statistics.stdev(finals)
        out.update(mean=mean, std=sd)
        out["ci"] = (
            sps.t.interval(0.95, len(finals) - 1, loc=mean, scale=sd / math.sqrt(len(finals)))
            if sd > 0
            else (mean, mean)
        )
        if sd > 0:
            t = (mean - TARGET) / (sd / math.sqrt(len(finals)))
            out["p"] = sps.t.sf(t, df=len(finals) - 1)
    return out


def load_csv(path: Path) -> dict:
    with open(path) as f:
        return {r["label"]: r for r in csv.DictReader(f)}


def approx(v):
    return pytest.approx(v, rel=1e-9, abs=1e-12)


def test_diverged_run_is_a_diverged_run(multirun):
    s = json.loads((multirun / JOBS[4][0] / "summary.json").read_text())
    assert s["status"] == "diverged"


def test_report_rows_and_numbers_match_the_files(multirun, tmp_path, capsys):
    from optbench.commands.report import main

    main([str(multirun), "--name", "t", "--out", str(tmp_path), "--baseline", "adamw"])
    printed = capsys.readouterr().out
    out = tmp_path / "t"
    rows = load_csv(out / "table.csv")
    # optimizer by default, plus lr because it varies among the sgd runs; the diverged run stays
    assert list(rows) == ["adamw lr=0.001", "sgd lr=0.1", "sgd lr=1e+06"]
    for label in rows:
        assert f"| {label} |" in printed  # the Markdown table went to the terminal
    groups = {"adamw lr=0.001": [0, 1], "sgd lr=0.1": [2, 3], "sgd lr=1e+06": [4]}
    exp = {label: expected_row([multirun / JOBS[i][0] for i in idx]) for label, idx in groups.items()}

    bad = rows["sgd lr=1e+06"]
    assert (bad["runs"], bad["completed"], bad["diverged"], bad["reached"]) == ("1", "0", "1", "0")
    assert float(bad["steps_to_target_median"]) == math.inf
    md_line = next(x for x in (out / "table.md").read_text().splitlines() if x.startswith("| sgd lr=1e+06 |"))
    assert md_line.endswith("| 1 | 0 |")  # diverged 1, failed 0: the last two columns

    for label in ("adamw lr=0.001", "sgd lr=0.1"):
        r, e = rows[label], exp[label]
        assert int(r["runs"]) == e["runs"] == 2 and int(r["diverged"]) == e["diverged"] == 0
        assert float(r["final_mean"]) == approx(e["mean"])
        assert float(r["final_std"]) == approx(e["std"])
        assert (float(r["final_ci_low"]), float(r["final_ci_high"])) == (approx(e["ci"][0]), approx(e["ci"][1]))
        assert int(r["reached"]) == e["reached"]
        assert float(r["reached_fraction"]) == approx(e["reached"] / 2)
        assert float(r["steps_to_target_median"]) == approx(e["steps_median"])
        # the eval line's time_s is rounded to 1 us and read a moment after the summary's clock read
        assert float(r["time_to_target_s_median"]) == pytest.approx(e["time_median"], abs=1e-3)
        if "p" in e:
            assert float(r["p_beats_target"]) == approx(e["p"])
    base = exp["adamw lr=0.001"]
    sgd = rows["sgd lr=0.1"]
    if math.isfinite(base["steps_median"]) and math.isfinite(exp["sgd lr=0.1"]["steps_median"]):
        assert float(sgd["speedup_steps"]) == approx(base["steps_median"] / exp["sgd lr=0.1"]["steps_median"])
    else:
        assert math.isnan(float(sgd["speedup_steps"]))
    assert float(rows["adamw lr=0.001"]["speedup_steps"]) in (1.0,) or math.isnan(
        float(rows["adamw lr=0.001"]["speedup_steps"])
    )

    # per-run table: one line per run directory, statuses as recorded
    with open(out / "runs.csv") as f:
        per_run = list(csv.DictReader(f))
    assert sorted(r["status"] for r in per_run) == ["completed"] * 4 + ["diverged"]

    tex = (out / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\toprule" in tex and "sgd lr=1e+06" in tex
    assert tex.count(r"\\") >= 4  # header + three rows
    assert "optbench report" in (out / "command.txt").read_text()


def test_plots_are_valid_pngs(multirun, tmp_path):
    import matplotlib.image as mpimg
    import numpy as np

    from optbench.report.build import build_report

    _, _, _, plots = build_report([str(multirun)], "p", out=tmp_path)
    names = {p.name for p in plots}
    assert {
        "eval_test_acc_vs_step.png",
        "eval_test_acc_vs_time.png",
        "train_loss_vs_step.png",
        "train_loss_vs_time.png",
        "lr_sensitivity.png",
    } <= names
    for p in plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert np.ptp(img[..., :3]) > 0  # something was drawn


def test_by_merges_rows_and_keeps_the_failure(multirun, tmp_path):
    from optbench.report.build import build_report

    _, rows, md, _ = build_report([str(multirun)], "by", by=["optimizer"], out=tmp_path, plots=False)
    assert [r.label for r in rows] == ["adamw", "sgd"]
    sgd = rows[1].stats
    assert (sgd["runs"], sgd["completed"], sgd["diverged"]) == (3, 2, 1)
    assert sgd["reached_fraction"] == pytest.approx(
        expected_row([multirun / JOBS[i][0] for i in (2, 3, 4)])["reached"] / 3
    )


def test_several_tasks_give_per_task_tables_and_a_performance_profile(multirun, tmp_path):
    """A copy of the runs relabelled as a second task stands in for a second benchmark."""
    from omegaconf import OmegaConf

    from optbench.report.build import build_report

    other = tmp_path / "other"
    for job, _ in JOBS[:4]:
        dst = other / job
        shutil.copytree(multirun / job, dst)
        s = json.loads((dst / "summary.json").read_text())
        s["task"] = "task_b"
        (dst / "summary.json").write_text(json.dumps(s))
        c = OmegaConf.load(dst / "config.yaml")
        c.task.name = "task_b"
        OmegaConf.save(c, dst / "config.yaml")
    _, rows, md, plots = build_report([str(multirun), str(other)], "multi", out=tmp_path / "res")
    assert {r.task for r in rows} == {"cifar10_synthetic", "task_b"}
    assert "### cifar10_synthetic" in md and "### task_b" in md
    assert "performance_profile.png" in {p.name for p in plots}


def test_performance_profile_formula():
    import numpy as np

    from optbench.report.plots import profile_curve, profile_ratios

    times = {"t1": {"a": 10.0, "b": 20.0}, "t2": {"a": 30.0, "b": 15.0}, "t3": {"a": math.inf, "b": 5.0}}
    r = profile_ratios(times)
    assert r["a"] == [1.0, 2.0, math.inf] and r["b"] == [2.0, 1.0, 1.0]
    assert list(profile_curve(r["a"], np.array([1.0, 1.5, 2.0, 100.0]))) == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert list(profile_curve(r["b"], np.array([1.0, 2.0]))) == pytest.approx([2 / 3, 1.0])


def test_unknown_baseline_and_missing_dir_are_config_errors(multirun, tmp_path):
    from optbench.commands.report import main
    from optbench.errors import ConfigError

    with pytest.raises(ConfigError, match="--baseline 'lion' matches no row; valid choices: adamw"):
        main([str(multirun), "--out", str(tmp_path), "--baseline", "lion", "--no-plots"])
    with pytest.raises(ConfigError, match="--by key 'optimiser' is in no run; valid keys include: .*optimizer"):
        main([str(multirun), "--out", str(tmp_path), "--by", "optimiser", "--no-plots"])
    with pytest.raises(ConfigError, match="does not exist"):
        main([str(tmp_path / "nope"), "--out", str(tmp_path)])


def test_a_varying_group_choice_names_the_rows(tmp_path):
    """Runs that differ in scheduler: rows are 'adamw scheduler=cosine', not every scheduler key."""
    from optbench.report.collect import Run
    from optbench.report.stats import build_rows, default_group_keys

    def run(sched: dict, seed: int) -> Run:
        cfg = {
            "optimizer.name": "adamw",
            "optimizer.lr": 1e-3,
            "task.name": "t",
            "seed": seed,
            **{f"scheduler.{k}": v for k, v in sched.items()},
        }
        summary = {
            "status": "completed",
            "task": "t",
            "optimizer": "adamw",
            "metric": "acc",
            "mode": "max",
            "target": 0.5,
            "final_metric": 0.4 + seed / 10,
            "seed": seed,
            "reached": False,
        }
        return Run(path=tmp_path / f"{sched['name']}{seed}", summary=summary, config=cfg)

    runs = [run({"name": "cosine", "min_ratio": 0.0}, s) for s in (0, 1)] + [
        run({"name": "constant", "warmup_steps": 0}, s) for s in (0, 1)
    ]
    assert default_group_keys(runs) == ["optimizer", "scheduler.name"]
    rows, _ = build_rows(runs)
    assert [r.label for r in rows] == ["adamw scheduler=constant", "adamw scheduler=cosine"]
    assert rows[0].stats["final"]["mean"] == pytest.approx(0.45)


def _fake_runs(tmp_path, specs):
    """Runs from (status, final_metric, reached, steps_to_target) tuples: one row, seeds 0.."""
    from optbench.report.collect import Run

    runs = []
    for seed, (status, final, reached, steps) in enumerate(specs):
        summary = {
            "status": status,
            "task": "t",
            "optimizer": "adamw",
            "metric": "acc",
            "mode": "max",
            "target": 0.5,
            "final_metric": final,
            "seed": seed,
            "reached": reached,
            "steps_to_target": steps,
            "time_to_target_s": steps,
        }
        runs.append(
            Run(
                path=tmp_path / str(seed),
                summary=summary,
                config={"optimizer.name": "adamw", "task.name": "t", "seed": seed},
            )
        )
    return runs


def test_a_completed_run_ending_in_nan_is_counted_not_dropped(tmp_path):
    from optbench.report.stats import build_rows
    from optbench.report.tables import csv_text, markdown

    rows, _ = build_rows(
        _fake_runs(
            tmp_path, [("completed", 0.6, True, 10), ("completed", 0.7, True, 20), ("completed", math.nan, False, None)]
        )
    )
    final = rows[0].stats["final"]
    assert final["n"] == 3 and final["nonfinite"] == 1 and math.isnan(final["mean"])  # not 0.65
    assert math.isnan(rows[0].stats["p_beats_target"])
    assert "NaN (1/3 runs NaN)" in markdown(rows)
    line = csv_text(rows).splitlines()
    assert line[1].split(",")[line[0].split(",").index("final_nonfinite")] == "1"
    # without the NaN run the row is the plain mean
    rows, _ = build_rows(_fake_runs(tmp_path, [("completed", 0.6, True, 10), ("completed", 0.7, True, 20)]))
    assert rows[0].stats["final"]["mean"] == pytest.approx(0.65) and rows[0].stats["final"]["nonfinite"] == 0


def test_a_run_that_diverged_after_the_target_is_a_miss_in_reached_and_the_median(tmp_path):
    from optbench.report.stats import build_rows

    specs = [("completed", 0.6, True, 10), ("diverged", None, True, 12), ("completed", 0.4, False, None)]
    s = build_rows(_fake_runs(tmp_path, specs))[0][0].stats
    # the diverged run reached 0.5 at step 12 and then blew up: not reached, inf in the median
    assert s["reached"] == 1 and s["reached_fraction"] == pytest.approx(1 / 3)
    assert s["steps_to_target"] == math.inf  # median of (10, inf, inf)
    s = build_rows(_fake_runs(tmp_path, [("completed", 0.6, True, 10), ("diverged", None, True, 12)]))[0][0].stats
    assert s["reached"] == 1 and s["steps_to_target"] == math.inf  # median of (10, inf)
