"""`optbench suite` end to end on a tiny workload of a suite group of our own (a config folder on
OPTBENCH_CONFIG_PATH): leaderboard files, a forced divergence counted, resume, and bad input."""

from __future__ import annotations

import csv
import json

import pytest

TINY = [
    "trainer.max_steps=4",
    "trainer.eval_every=2",
    "trainer.batch_size=32",
    "data.n_train=160",
    "data.n_test=64",
    "data.noise=0.3",
    "'model.widths=[4,8,8]'",
    "trainer.device=cpu",
    "task.target=0.05",
]  # below chance (0.1): adamw reaches it at the first evaluation


@pytest.fixture
def conf(tmp_path, monkeypatch, data_root):
    """A suite group `tiny` (synthetic CIFAR, 4 steps) and an optimizer whose every lr diverges."""
    from optbench import CONF_DIR

    d = tmp_path / "conf"
    (d / "suite").mkdir(parents=True)
    (d / "optimizer").mkdir()
    (d / "suite" / "tiny.yaml").write_text(
        "description: one tiny workload\ntasks: [cifar10_synthetic]\nselect_metric: val_loss\n"
        "overrides: [" + ", ".join(TINY) + "]\n"
    )
    (d / "suite" / "two.yaml").write_text(
        "description: two tiny workloads\ntasks: [cifar10_synthetic, cifar_tiny2]\n"
        "overrides: [" + ", ".join(TINY) + "]\n"
    )
    (d / "task").mkdir()
    task = (CONF_DIR / "task" / "cifar10_synthetic.yaml").read_text()
    task = task.replace("name: cifar10_synthetic", "name: cifar_tiny2")
    (d / "task" / "cifar_tiny2.yaml").write_text(task)
    (d / "suite" / "broken.yaml").write_text("description: names a task that is not there\ntasks: [nope]\n")
    sgd = (CONF_DIR / "optimizer" / "sgd.yaml").read_text()
    wild = sgd.replace("name: sgd\n", "name: sgd_wild\n").replace(
        "lr_grid: [0.01, 0.03, 0.1, 0.3, 1.0]", "lr_grid: [1.0e+4, 1.0e+5]"
    )
    assert wild != sgd
    (d / "optimizer" / "sgd_wild.yaml").write_text("# SGD at learning rates that diverge (tests)\n" + wild)
    monkeypatch.setenv("OPTBENCH_CONFIG_PATH", str(d))
    return d


def test_suite_end_to_end_counts_divergence_and_resumes(conf, tmp_path, monkeypatch, capsys):
    import optbench.train as train_pkg
    from optbench.commands.suite import main
    from optbench.suite.leaderboard import FILES, write_leaderboard
    from optbench.suite.run import read_record

    runs, out = tmp_path / "s", tmp_path / "board"
    argv = [
        "--optimizers",
        "adamw,sgd_wild",
        "--workloads",
        "tiny",
        "--budget",
        "2",
        "--seeds",
        "1",
        "--out",
        str(runs),
        "--results",
        str(out),
    ]
    main(argv)
    assert not (runs / "leaderboard.md").exists() and (runs / "suite.json").exists()  # --results: the board there
    for f in FILES:
        assert (out / f).stat().st_size > 0, f
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["optimizer"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    # every run of sgd_wild (2 trials + 1 seed) diverged, and is counted
    assert rows["sgd_wild"]["diverged"] == "3" and rows["sgd_wild"]["reached"] == "0"
    assert rows["sgd_wild"]["ratio"] == "inf" and float(rows["sgd_wild"]["score"]) == 0.0
    assert rows["adamw"]["reached"] == "1" and float(rows["adamw"]["score"]) == 1.0  # the only one to reach it
    assert rows["adamw"]["attempts"] == "1" and rows["adamw"]["trials"] == "2"
    md = (out / "leaderboard.md").read_text()
    assert "| 1 | adamw | 1.000 | 1/1 |" in md and "| 2 | sgd_wild | 0.000 | 0/1 |" in md
    assert r"\begin{tabular}" in (out / "leaderboard.tex").read_text()
    record = read_record(runs)
    assert record["workloads"]["cifar10_synthetic"]["select_metric"] == "val_loss"  # the group's choice
    assert record["budget"] == 2 and len(record["workloads"]["cifar10_synthetic"]["optimizers"]["adamw"]["trials"]) == 2

    # --profile-by time: the same runs, the profile over train-clock seconds
    _, prof = write_leaderboard(tmp_path / "by_time", record, by="time")
    assert prof["measure"] == "time_to_target_s" and prof["score"]["adamw"] == 1.0

    # resumable: the same command again trains nothing and writes the same table
    monkeypatch.setattr(train_pkg, "train", lambda *a, **k: pytest.fail("reran a run"))
    capsys.readouterr()
    main(argv)
    assert (out / "leaderboard.md").read_text() == md


def test_jobs_run_workloads_in_parallel_processes(conf, tmp_path):
    from optbench.commands.suite import main

    out = tmp_path / "s"
    argv = [
        "--optimizers",
        "adamw",
        "--workloads",
        "two",
        "--budget",
        "1",
        "--seeds",
        "1",
        "--jobs",
        "2",
        "--out",
        str(out),
    ]
    main(argv)
    record = json.loads((out / "suite.json").read_text())
    assert list(record["workloads"]) == ["cifar10_synthetic", "cifar_tiny2"]
    summaries = sorted((out / "runs").rglob("summary.json"))
    assert len(summaries) == 4  # 2 workloads x (1 trial + 1 seed)
    md = (out / "leaderboard.md").read_text()
    assert "### cifar10_synthetic" in md and "### cifar_tiny2" in md
    # (resume is tune_workload's, the same in a worker: tested sequentially above, to keep this one short)


def test_launcher_overrides_are_split_off_and_go_to_run_tune(conf, tmp_path):
    from optbench.commands.suite import main, split_launcher
    from optbench.errors import ConfigError

    assert split_launcher(["a=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]) == (
        ["a=1"],
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    )
    # the launcher goes to run_tune, which refuses one that does not exist
    with pytest.raises(ConfigError, match="nosuchlauncher"):
        main(
            [
                "--optimizers",
                "adamw",
                "--workloads",
                "tiny",
                "--budget",
                "1",
                "--seeds",
                "1",
                "--out",
                str(tmp_path / "s"),
                "hydra/launcher=nosuchlauncher",
            ]
        )


def test_workloads_groups_and_tasks(conf):
    from optbench.errors import ConfigError
    from optbench.suite.workloads import resolve

    ws = resolve(["tiny", "cifar10_synthetic", "fineweb_synthetic"])
    assert [w.task for w in ws] == ["cifar10_synthetic", "fineweb_synthetic"]  # a task once: its group's
    assert ws[0].group == "tiny" and ws[0].overrides[0] == "task=cifar10_synthetic"
    assert "trainer.max_steps=4" in ws[0].overrides
    assert ws[1].overrides == ("task=fineweb_synthetic",)
    with pytest.raises(ConfigError, match="names unknown task 'nope'"):
        resolve(["broken"])


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--optimizers", "adamw,nosuch", "--workloads", "tiny"],
            "unknown optimizer 'nosuch'; valid choices: adafactor",
        ),
        (["--optimizers", "adamw", "--workloads", "nosuch"], "unknown workload 'nosuch'; valid choices: "),
        (["--optimizers", "adamw", "--workloads", "tiny", "--budget", "0"], "--budget=0 is invalid: must be >= 1"),
        (["--optimizers", "adamw", "--workloads", "tiny", "--seeds", "0"], "--seeds=0 is invalid"),
        (["--optimizers", "adamw", "--workloads", "tiny", "--search", "bayes"], "invalid choice: 'bayes'"),
        (["--optimizers", "adamw", "--workloads", "tiny", "--jobs", "0"], "--jobs=0 is invalid"),
    ],
)
def test_bad_input_is_one_line_and_status_2(conf, tmp_path, capsys, args, message):
    from optbench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["suite", *args, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()  # refused before anything ran
