"""Nothing lost: every run gets its own directory, a run directory has one run at a time (a lock,
released on every way out, taken over from a dead holder), and a job that fails early still
leaves a `failed` summary that the sweep's exit status and the report count."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optbench.train import runlock
from tests.conftest import optbench_cli

TINY = [
    "trainer.device=cpu",
    "trainer.batch_size=32",
    "model.widths=[4,8,8]",
    "data.n_train=256",
    "data.n_test=128",
    "trainer.progress=false",
]
EXE = str(Path(sys.executable).with_name("optbench"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}

# a process that takes a run dir's lock, says so, and waits (to be killed)
HOLDER = (
    "import sys, time; from optbench.train import runlock; runlock.acquire(sys.argv[1]); "
    "print('held', flush=True); time.sleep(600)"
)


def _hold_in_another_process(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**ENV, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


# ------------------------------------------------------------------ 1. a directory of its own
def test_two_runs_started_in_the_same_second_get_their_own_directories(data_root, tmp_path):
    """The issue's repro: both used to print `completed:` with one path, and one summary was lost."""
    procs = [
        subprocess.Popen(
            [EXE, "train", *TINY, "trainer.max_steps=2", "trainer.eval_every=2", f"seed={s}"],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    summaries = sorted(tmp_path.glob("outputs/*/*/summary.json"))
    assert len(summaries) == 2, summaries
    assert sorted(json.loads(s.read_text())["seed"] for s in summaries) == [0, 1]


def test_default_directories_are_unique_and_a_taken_one_is_not_reused(tmp_path, monkeypatch):
    from optbench.commands.train import _claim_output_dir
    from optbench.config import compose

    a, b = compose([]), compose([])  # the same second: only the tag tells them apart
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        assert str(a.hydra.run.dir if key == "hydra.run.dir" else a.hydra.sweep.dir) != str(
            b.hydra.run.dir if key == "hydra.run.dir" else b.hydra.sweep.dir
        )
    monkeypatch.chdir(tmp_path)
    cfg = compose([])
    taken = Path(str(cfg.hydra.run.dir))
    taken.mkdir(parents=True)  # another run has this very name, tag included
    path, argv = _claim_output_dir(cfg, ["seed=1"], multirun=False)
    assert Path(path) != taken and Path(path).is_dir() and path.startswith(str(taken))
    assert argv[-1] == f"hydra.run.dir='{path}'"
    # a directory given on the command line is used as it is (resuming relies on it)
    given = compose(["hydra.run.dir=mine"])
    assert _claim_output_dir(given, ["hydra.run.dir=mine"], multirun=False) == ("mine", ["hydra.run.dir=mine"])


# ------------------------------------------------------------------ 2. one run per directory
def test_second_run_into_a_held_directory_stops_with_the_holders_pid_and_host(data_root, tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold_in_another_process(run_dir)
    try:
        (run_dir / "summary.json").write_text('{"status": "running"}')  # the holder's files
        before = sorted(p.name for p in run_dir.iterdir())
        result = optbench_cli("train", *TINY, "trainer.max_steps=2", f"hydra.run.dir={run_dir}")
        assert result.returncode == 2, result.stderr
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("optbench: error:"), result.stderr
        assert f"pid {holder.pid}" in lines[0] and socket.gethostname() in lines[0], lines[0]
        assert sorted(p.name for p in run_dir.iterdir()) == before  # no .hydra/, nothing rewritten
        assert (run_dir / "summary.json").read_text() == '{"status": "running"}'
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = _hold_in_another_process(run_dir)
    assert runlock.holder(run_dir) == f"{holder.pid} {socket.gethostname()}"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert runlock.holder(run_dir) is None  # the kernel dropped the dead process's lock
    with runlock.hold(run_dir):
        assert f"pid {holder.pid}" in capsys.readouterr().err  # whose it was, said once
        assert (run_dir / runlock.LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert (run_dir / runlock.LOCK_NAME).read_text() == ""  # released cleanly: no stale pid left


def test_lock_is_reentrant_and_refuses_another_process(tmp_path):
    run_dir = tmp_path / "run"
    with runlock.hold(run_dir):
        with runlock.hold(run_dir):  # app.main, run_job and train() all ask
            pass
        assert runlock.holds(run_dir)
        probe = subprocess.run(
            [sys.executable, "-c", HOLDER, str(run_dir)],
            capture_output=True,
            text=True,
            env={**ENV, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            timeout=60,
        )
        assert probe.returncode != 0 and "RunDirLocked" in probe.stderr and str(os.getpid()) in probe.stderr
    assert not runlock.holds(run_dir) and runlock.holder(run_dir) is None


@pytest.mark.parametrize("error", [RuntimeError("boom while building"), KeyboardInterrupt()])
def test_lock_released_and_failure_recorded_when_a_run_fails_before_the_loop(error, make_cfg, tmp_path, monkeypatch):
    from optbench.train import loop

    def broken(self, *a, **k):
        raise error

    monkeypatch.setattr(loop.Trainer, "__init__", broken)
    run_dir = tmp_path / "run"
    with pytest.raises(type(error)):
        loop.train(make_cfg([*TINY, "seed=7"]), run_dir)
    assert not runlock.holds(run_dir) and runlock.holder(run_dir) is None
    if isinstance(error, KeyboardInterrupt):  # a user's stop is not a failure
        assert not (run_dir / "summary.json").exists()
        return
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stop_reason"] == "RuntimeError: boom while building"
    assert (summary["seed"], summary["optimizer"], summary["metric"]) == (7, "adamw", "test_acc")
    assert (run_dir / "config.yaml").exists()  # the report groups it with its configuration


def test_failed_summary_never_replaces_an_existing_one(make_cfg, tmp_path):
    from optbench.train.rundir import write_failed_summary

    (tmp_path / "summary.json").write_text('{"status": "completed"}')
    assert not write_failed_summary(tmp_path, make_cfg([]), RuntimeError("x"))
    assert (tmp_path / "summary.json").read_text() == '{"status": "completed"}'


# ------------------------------------------------------------------ 3. failed jobs are counted
def test_sweep_with_a_failing_job_records_it_reports_it_and_exits_1(data_root, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    sweep = tmp_path / "sweep"
    # a bare name: a '/' in an override would nest the job's directory (Hydra's override_dirname)
    result = optbench_cli(
        "train",
        "-m",
        *TINY,
        "trainer.max_steps=2",
        "trainer.eval_every=2",
        "trainer.resume=never,bad.pt",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "1 of 2 jobs failed" in result.stderr
    statuses = {p.parent.name[0]: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert statuses["0"]["status"] == "completed"
    assert statuses["1"]["status"] == "failed" and "bad.pt" in statuses["1"]["stop_reason"]

    from optbench.report.collect import load_runs
    from optbench.report.stats import build_rows, row_stats

    rows, _ = build_rows(load_runs([sweep]))
    stats = [row_stats(r) for r in rows]
    assert sum(s["runs"] for s in stats) == 2 and sum(s["failed"] for s in stats) == 1


def test_report_counts_a_run_directory_without_summary_as_failed(tmp_path):
    from optbench.report.collect import load_runs

    done = tmp_path / "0-done"
    done.mkdir()
    (done / "summary.json").write_text(
        json.dumps(
            {"status": "completed", "task": "t", "optimizer": "adamw", "seed": 0, "metric": "acc", "final_metric": 0.5}
        )
    )
    died = tmp_path / "1-died"  # killed (kill -9, out of memory) after writing its config
    died.mkdir()
    (died / "config.yaml").write_text("seed: 1\ntask:\n  name: t\noptimizer:\n  name: adamw\n")
    early = tmp_path / "2-early"  # killed while Hydra's job had only started
    (early / ".hydra").mkdir(parents=True)
    (early / ".hydra" / "config.yaml").write_text("seed: 2\n")
    busy = tmp_path / "3-busy"  # still starting: its lock is held
    busy.mkdir()
    (busy / "metrics.jsonl").write_text("")
    with runlock.hold(busy):
        runs = {r.path.name: r for r in load_runs([tmp_path])}
    assert sorted(runs) == ["0-done", "1-died", "2-early", "3-busy"]
    assert runs["1-died"].status == "failed" and "no summary.json" in runs["1-died"].summary["stop_reason"]
    assert runs["1-died"].optimizer == "adamw" and runs["1-died"].summary["seed"] == 1
    assert runs["2-early"].status == "failed"
    assert runs["3-busy"].status == "running"


def _wait_for_metrics(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if any(path.glob("*/metrics.jsonl")) and any(p.stat().st_size for p in path.glob("*/metrics.jsonl")):
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the sweep's first job did not start")


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sweep_stopped_by_a_signal_exits_non_zero(sig, status, data_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        [
            EXE,
            "train",
            "-m",
            *TINY,
            "trainer.max_steps=100000",
            "trainer.log_every=1",
            "trainer.eval_every=100000",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_metrics(sweep, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err[-2000:]
    first = json.loads(next(sweep.glob("0-*/summary.json")).read_text())
    assert first["status"] == "interrupted" and not list(sweep.glob("1-*"))  # the sweep stopped there
    assert runlock.holder(next(sweep.glob("0-*"))) is None


def test_a_run_that_failed_before_training_does_not_block_a_corrected_rerun(data_root, tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    run_dir = tmp_path / "run"
    first = optbench_cli(
        "train", *TINY, "trainer.max_steps=2", "trainer.resume=bad.pt", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert first.returncode == 2, first.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    fixed = optbench_cli(
        "train", *TINY, "trainer.max_steps=2", "optimizer.lr=0.01", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
    "value", ["outputs/2026-01-01/10-00-00-t-adamw-1a2b3c", "a b,c", "it's", "x\\y", "end\\", "a\\'b"]
)
def test_claimed_directory_reaches_hydra_unchanged(value):
    """A run name (part of the default directory) may hold spaces, commas, quotes, backslashes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from optbench.commands.train import _quoted

    assert OverridesParser.create().parse_override(f"hydra.run.dir={_quoted(value)}").value() == value


def test_ddp_run_into_a_held_directory_stops_every_rank(data_root, tmp_path):
    """trainer.nproc=2 stops in the parent, in one line; torchrun started by hand stops all ranks
    (rank 0 holds the lock, and the others learn it failed rather than wait for it)."""
    run_dir = tmp_path / "run"
    holder = _hold_in_another_process(run_dir)
    try:
        result = optbench_cli("train", *TINY, "trainer.max_steps=2", "trainer.nproc=2", f"hydra.run.dir={run_dir}")
        assert result.returncode == 2 and f"pid {holder.pid}" in result.stderr, result.stderr
        assert len([ln for ln in result.stderr.splitlines() if ln.strip()]) == 1, result.stderr
        by_hand = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node=2",
                "-m",
                "optbench.cli",
                "train",
                *TINY,
                "trainer.max_steps=2",
                f"hydra.run.dir={run_dir}",
            ],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert by_hand.returncode != 0 and f"pid {holder.pid}" in by_hand.stderr, by_hand.stderr[-2000:]
        assert not (run_dir / "summary.json").exists() and not (run_dir / ".hydra").exists()
    finally:
        holder.kill()
        holder.wait()
