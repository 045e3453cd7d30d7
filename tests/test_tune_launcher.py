"""`tune` through Hydra's launcher plugins: each round's runs are handed to the launcher as one list of
override lists; where each ran is recorded; finished runs are read back, never relaunched; a failed
run is a status, not an abort."""

from __future__ import annotations

import json
import os

import pytest

TINY = [
    "trainer.max_steps=2",
    "trainer.eval_every=2",
    "trainer.batch_size=32",
    "data.n_train=160",
    "data.n_test=64",
    "model.widths=[4,8,8]",
    "trainer.device=cpu",
]


def test_rounds_go_through_hydras_launcher_and_resume_reads_back(tmp_path, monkeypatch, data_root):
    import socket

    import optbench.tune as tune_lib
    from optbench.tune import run_tune

    kw = dict(trials=2, seeds=1, out_dir=tmp_path / "t", launcher=["hydra/launcher=basic"])
    record = run_tune(["adamw"], [*TINY, f"data.root={data_root}"], **kw)
    assert record["launcher"] == {"name": "basic", "overrides": ["hydra/launcher=basic"]}
    assert [(r["kind"], r["runs"], r["reused"], r["launcher"]) for r in record["rounds"]] == [
        ("trials", 2, 0, "basic"),
        ("final", 1, 0, "basic"),
    ]
    trials = record["trials"]["adamw"]
    assert [t["status"] for t in trials] == ["completed", "completed"]
    for t in [*trials, *record["final"]["adamw"]]:
        assert t["where"]["launcher"] == "basic" and t["where"]["host"] == socket.gethostname()
        assert t["where"]["job_id"] is None and t["reused"] is False  # the basic launcher has no job ids
        # Hydra made the job's directory: its own .hydra/ record is there, and ours of where it ran
        assert (tmp_path / "t" / t["run_dir"] / ".hydra" / "overrides.yaml").is_file()
        assert json.loads((tmp_path / "t" / t["run_dir"] / "tune_job.json").read_text()) == t["where"]
    assert record["best"]["adamw"]["run_dir"] == trials[record["best"]["adamw"]["trial"]]["run_dir"]
    assert json.loads((tmp_path / "t" / "tune.json").read_text())["best"] == record["best"]

    monkeypatch.setattr(tune_lib, "launch_round", lambda *a, **k: pytest.fail("relaunched a finished run"))
    again = run_tune(["adamw"], [*TINY, f"data.root={data_root}"], **kw)
    assert [(r["reused"], r["launcher"]) for r in again["rounds"]] == [(2, None), (1, None)]
    assert all(t["reused"] and t["where"]["launcher"] == "basic" for t in again["trials"]["adamw"])
    assert again["best"] == record["best"]


@pytest.mark.slow  # a fresh Python (torch import) per job: ~10 s on 2 shared cores
def test_local_launcher_runs_jobs_in_other_processes_and_a_failure_is_recorded(tmp_path, data_root):
    """submitit's local executor (hydra/launcher=local): a job per run, in its own process; a job
    whose run fails does not make the round raise."""
    from optbench.tune import run_round

    out = tmp_path / "r"
    good = [*TINY, f"data.root={data_root}", "trainer.progress=false", "optimizer=adamw", "seed=0"]
    bad = [*good[:-1], "optimizer.lr=-1"]  # refused by validation inside the job
    results = run_round(
        [(good, out / "good"), (bad, out / "bad")], out, ["hydra/launcher=local", "hydra.launcher.timeout_min=5"]
    )
    ok, failed = results
    assert ok["summary"]["status"] == "completed" and ok["reused"] is False
    assert ok["where"]["launcher"] == "local" and ok["where"]["pid"] != os.getpid()
    assert ok["where"]["job_id"]  # submitit's job id
    assert failed["summary"]["status"] == "failed" and failed["where"]["launcher"] == "local"


def test_bad_launcher_is_one_line_before_any_run(tmp_path, monkeypatch):
    import optbench.tune as tune_lib
    from optbench.errors import ConfigError

    monkeypatch.setattr(tune_lib, "run_round", lambda *a, **k: pytest.fail("a round ran"))
    with pytest.raises(ConfigError, match=r"hydra/launcher=nope is invalid; valid choices: basic, local, slurm"):
        tune_lib.run_tune(["adamw"], TINY, out_dir=tmp_path / "t", launcher=["hydra/launcher=nope"])
    with pytest.raises(ConfigError, match=r"unknown key 'hydra.launcher.nokey'"):
        tune_lib.run_tune(
            ["adamw"], TINY, out_dir=tmp_path / "t", launcher=["hydra/launcher=local", "hydra.launcher.nokey=1"]
        )
    with pytest.raises(ConfigError, match=r"launcher override 'seed=1' is invalid"):
        tune_lib.run_tune(["adamw"], TINY, out_dir=tmp_path / "t", launcher=["seed=1"])
    assert not (tmp_path / "t").exists()


def test_cli_splits_launcher_overrides_from_run_overrides(monkeypatch, tmp_path):
    import optbench.commands.tune as cmd

    seen = {}

    def fake(optimizers, overrides, **kw):
        seen.update(optimizers=optimizers, overrides=overrides, **kw)
        raise SystemExit(0)

    monkeypatch.setattr(cmd, "run_tune", fake)
    with pytest.raises(SystemExit):
        cmd.main(
            [
                "--optimizers",
                "adamw,sgd",
                "--trials",
                "4",
                "--seeds",
                "2",
                "--out",
                str(tmp_path),
                "task=cifar10_synthetic",
                "hydra/launcher=local",
                "hydra.launcher.timeout_min=5",
            ]
        )
    assert seen["optimizers"] == ["adamw", "sgd"] and seen["overrides"] == ["task=cifar10_synthetic"]
    assert seen["launcher"] == ["hydra/launcher=local", "hydra.launcher.timeout_min=5"]
    assert seen["trials"] == 4 and seen["seeds"] == 2 and seen["name"] == "tune"


@pytest.mark.parametrize(
    "visible, num, ntasks, expect",
    [("0,1,2,3", 5, "1", "1"), ("0,1", 0, "1", "0"), ("0,1", 1, "2", "0,1"), ("", 3, "1", "")],
)
def test_a_local_job_takes_one_of_the_gpus_it_is_shown(monkeypatch, visible, num, ntasks, expect):
    """submitit's local executor shows every job GPUs 0..n-1; a single-process job keeps one."""
    from optbench.tune import _one_gpu_per_job

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", ntasks)
    _one_gpu_per_job(num)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == expect


def test_a_failed_trial_is_recorded_and_the_tune_goes_on(tmp_path, monkeypatch, data_root):
    """In-process (no launcher): a trial whose training raises is status failed, ranks last, and the
    seed runs still happen for the trial that worked."""
    import optbench.train as train_pkg
    from optbench.tune import run_tune

    real = train_pkg.train

    def flaky(cfg, run_dir, *a, **k):
        if cfg.optimizer.lr < 1e-3:
            raise RuntimeError("boom")
        return real(cfg, run_dir, *a, **k)

    monkeypatch.setattr(train_pkg, "train", flaky)
    record = run_tune(["adamw"], [*TINY, f"data.root={data_root}"], trials=2, seeds=1, out_dir=tmp_path / "t")
    trials = record["trials"]["adamw"]
    assert [t["status"] for t in trials] == ["failed", "completed"]
    assert trials[0]["where"]["launcher"] == "in_process" and trials[0]["where"]["pid"] == os.getpid()
    assert record["best"]["adamw"]["trial"] == 1
    assert [r["status"] for r in record["final"]["adamw"]] == ["completed"]
