"""Fault injection: what a benchmark run meets on a real cluster, each case small (a tiny CNN, a few
steps, one CPU thread) so the module runs in CI in well under 30 s.

- kill -9 while a checkpoint is being written: the next run resumes from the previous good one
  and ends exactly like a run never interrupted;
- truncated or zero-filled checkpoint and summary files;
- two runs at once into different directories both complete;
- a read-only run directory, and a disk that fills up while checkpointing (a small tmpfs; both
  need root and a working `mount`, else they skip).

The one-line read-only and disk-full messages and the report's handling of an unreadable summary
are tested here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from optbench.train import checkpoint as ckpt

TINY = [
    "trainer.device=cpu",
    "trainer.batch_size=32",
    "model.widths=[4,8,8]",
    "data.n_train=256",
    "data.n_test=128",
    "trainer.eval_every=4",
    "trainer.log_every=2",
    "trainer.progress=false",
]
RUN = [*TINY, "trainer.max_steps=12", "trainer.checkpoint_every=4"]

# A child process that runs one training run in-process (no Hydra launcher: faster to start). With
# KILL_AT=n it SIGKILLs itself halfway through writing its n-th checkpoint file, after the bytes
# written so far have reached the disk: a node lost mid-write.
CHILD = textwrap.dedent("""
    import io, json, os, signal, sys
    import torch
    kill_at = int(os.environ.get("KILL_AT", "0"))
    if kill_at:
        real_save, count = torch.save, [0]
        def save(obj, f, *a, **k):
            if isinstance(f, io.BytesIO):  # the payload, hashed before the file is written
                return real_save(obj, f, *a, **k)
            count[0] += 1
            if count[0] < kill_at:
                return real_save(obj, f, *a, **k)
            buf = io.BytesIO()
            real_save(obj, buf, *a, **k)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush(); os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save
    from omegaconf import open_dict
    from optbench.config import compose
    from optbench.train import train
    cfg = compose(json.loads(sys.argv[2]))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    summary = train(cfg, sys.argv[1])
    print(summary["status"])
""")


def child(run_dir: Path, overrides: list[str], kill_at: int = 0) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "KILL_AT": str(kill_at)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir), json.dumps(overrides)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def step_of(path: Path) -> int:
    return ckpt.read_checkpoint(path, torch.device("cpu"))["bookkeeping"]["step"]


def eval_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if k not in ("time_s", "img_per_s")} for x in lines if x["type"] == "eval"]


@pytest.fixture
def resumed_at(monkeypatch):
    """The steps the trainer resumed at in this test (a fresh start would equal the straight run too)."""
    steps = []
    real = ckpt.apply

    def apply(trainer, state, path):
        real(trainer, state, path)
        steps.append(trainer.step)

    monkeypatch.setattr(ckpt, "apply", apply)
    return steps


@pytest.fixture
def straight(run_train, tmp_path):
    """The same run never interrupted: what every recovery must end as."""
    summary, run_dir = run_train(RUN, tmp_path / "straight")
    assert summary["status"] == "completed"
    return summary, run_dir


# --------------------------------------------------------------------------- kill -9
def test_kill9_mid_checkpoint_resumes_from_the_previous_good_one(run_train, tmp_path, straight, resumed_at):
    run_dir = tmp_path / "killed"
    proc = child(run_dir, RUN, kill_at=2)  # killed writing the step-8 checkpoint
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    last = ckpt.checkpoint_path(run_dir)
    assert step_of(last) == 4  # the half-written step-8 file never replaced the good one
    torn = [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    assert torn and torn[0].stat().st_size > 0  # the torn write really happened, beside last.pt
    # the summary says the run is under way, never that it completed
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"

    summary, _ = run_train(RUN, run_dir)
    assert resumed_at == [4]
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert summary["final_eval"] == straight[0]["final_eval"]
    assert eval_lines(run_dir) == eval_lines(straight[1])


# --------------------------------------------------------------------------- truncated files
@pytest.mark.parametrize("damage", ["truncated", "zero-filled"])
def test_damaged_last_checkpoint_falls_back_to_the_previous(run_train, tmp_path, straight, damage, capsys):
    run_dir = tmp_path / "run"
    first, _ = run_train([*TINY, "trainer.max_steps=8", "trainer.checkpoint_every=4"], run_dir)
    assert first["status"] == "completed"
    last = ckpt.checkpoint_path(run_dir)
    size = last.stat().st_size
    last.write_bytes(last.read_bytes()[: size // 3] if damage == "truncated" else bytes(size))
    summary, _ = run_train([*RUN, "trainer.extend=true"], run_dir)  # 8 -> 12 steps: an extension, on purpose
    err = capsys.readouterr().err
    assert "prev.pt at step 4" in err
    assert summary["status"] == "completed" and summary["final_eval"] == straight[0]["final_eval"]


@pytest.mark.parametrize("damage", ["truncated", "zero-filled", "binary"])
def test_damaged_summary_is_rewritten_by_the_same_command(run_train, tmp_path, damage, capsys):
    """summary.json damaged after a finished run (a torn copy, a tool writing over it): the same
    command used to fail with a JSONDecodeError/UnicodeDecodeError traceback; it rewrites the
    summary from the final checkpoint, with a warning, and trains nothing."""
    overrides = [*TINY, "trainer.max_steps=4", "trainer.save_final=true"]
    first, run_dir = run_train(overrides, tmp_path / "run")
    path = run_dir / "summary.json"
    good = path.read_bytes()
    path.write_bytes(
        {"truncated": good[: len(good) // 2], "zero-filled": bytes(len(good)), "binary": bytes(range(256))}[damage]
    )
    capsys.readouterr()
    again, _ = run_train(overrides, run_dir)
    assert "summary.json is unreadable; rewritten from the final checkpoint (step 4)" in capsys.readouterr().err
    assert again["status"] == "completed" and again["final_eval"] == first["final_eval"]
    assert again["steps"] == 4 and again["train_time_s"] == first["train_time_s"]
    assert json.loads(path.read_text())["final_eval"] == first["final_eval"]


def test_report_survives_a_damaged_summary_and_metrics(run_train, tmp_path, capsys):
    from optbench.commands.report import main

    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        run_train([*TINY, "trainer.max_steps=2", f"seed={seed}"], sweep / f"seed={seed}")
    path = sweep / "seed=1" / "summary.json"
    path.write_bytes(bytes(len(path.read_bytes())))  # zero-filled
    with open(sweep / "seed=0" / "metrics.jsonl", "ab") as f:  # non-UTF-8 bytes: used to abort the report
        f.write(b"\xff\xfe\x80 not utf-8\n")
    main([str(sweep), "--name", "r", "--out", str(tmp_path / "res"), "--no-plots"])
    assert (tmp_path / "res" / "r" / "table.md").exists()
    out = capsys.readouterr()
    assert f"{sweep / 'seed=1' / 'summary.json'}" in out.out + out.err  # the bad run is named, with its path


# --------------------------------------------------------------------------- concurrent runs
def test_concurrent_runs_into_different_dirs_both_complete(tmp_path):
    a = child(tmp_path / "a", [*TINY, "trainer.max_steps=6", "seed=0"])
    b = child(tmp_path / "b", [*TINY, "trainer.max_steps=6", "seed=1"])
    for proc in (a, b):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "completed", err[-2000:]
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("a", "b"))
    assert sa["status"] == sb["status"] == "completed" and sa["steps"] == sb["steps"] == 6
    assert (sa["seed"], sb["seed"]) == (0, 1)
    assert sa["final_eval"] != sb["final_eval"]  # each wrote its own run, neither the other's


# --------------------------------------------------------------------------- read-only and full disks
@contextlib.contextmanager
def tmpfs(size: str):
    """A fresh tmpfs of `size`, or skip: needs root and a `mount` that works here (containers
    often refuse it). As root, chmod does not stop writes, so a mount is the only honest test."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount for a tmpfs")
    where = Path(tempfile.mkdtemp(prefix="optbench-tmpfs-"))
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if r.returncode != 0:
        where.rmdir()
        pytest.skip(f"mount -t tmpfs does not work here: {r.stderr.strip()[:100]}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        with contextlib.suppress(OSError):
            where.rmdir()


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True, capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path):
    if os.geteuid() != 0:  # permissions stop a non-root writer: chmod is enough
        run = tmp_path / "ro" / "run"
        run.mkdir(parents=True)
        run.chmod(0o555)
        yield run
        run.chmod(0o755)
        return
    with tmpfs("4m") as where:  # root ignores permissions: a read-only mount
        (where / "run").mkdir()
        remount(where, "ro")
        yield where / "run"


def test_read_only_run_dir_fails_and_claims_nothing(run_train, read_only_dir):
    with pytest.raises(Exception) as e:
        run_train([*TINY, "trainer.max_steps=2"], read_only_dir)
    assert "Read-only" in str(e.value) or getattr(e.value, "errno", None) == 30 or "read-only" in str(e.value)
    assert list(read_only_dir.iterdir()) == []


def test_read_only_run_dir_is_one_line_exit_2(read_only_dir):
    from tests.conftest import optbench_cli

    r = optbench_cli("train", *TINY, "trainer.max_steps=2", f"hydra.run.dir={read_only_dir}", timeout=120)
    assert r.returncode == 2, r.stderr[-1000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "read-only" in r.stderr.lower() and str(read_only_dir) in r.stderr


@pytest.fixture
def full_disk(straight, tmp_path):
    """A run directory on a tmpfs with room for config, metrics and two checkpoints but not a
    third while both exist: the step-12 checkpoint write hits ENOSPC."""
    ck = ckpt.checkpoint_path(straight[1]).stat().st_size
    with tmpfs(f"{-(-int(2.5 * ck) // 4096) * 4096 + 16 * 1024}") as where:
        yield where, ck


def _fill_to_checkpoint(run_train, where: Path) -> Path:
    run_dir = where / "run"
    with pytest.raises(Exception) as e:
        run_train([*RUN, "trainer.save_final=true"], run_dir)
    assert (
        "No space left" in str(e.value)
        or "unexpected pos" in str(e.value)
        or getattr(e.value, "errno", None) == 28
        or "no space left" in str(e.value).lower()
    ), repr(e.value)
    return run_dir


def test_full_disk_while_checkpointing_keeps_the_good_checkpoints_and_recovers(
    run_train, full_disk, straight, resumed_at
):
    where, _ = full_disk
    run_dir = _fill_to_checkpoint(run_train, where)
    names = sorted(p.name for p in ckpt.checkpoint_path(run_dir).parent.iterdir())
    assert names == ["last.pt", "prev.pt"]  # no torn temp file left filling the disk
    good = step_of(ckpt.checkpoint_path(run_dir))
    assert good >= 4 and step_of(ckpt.previous_path(run_dir)) == good - 4
    remount(where, "size=64m")  # space freed: the same command recovers
    summary, _ = run_train([*RUN, "trainer.save_final=true"], run_dir)
    assert resumed_at == [good]
    assert summary["status"] == "completed" and summary["final_eval"] == straight[0]["final_eval"]


def test_full_disk_message_names_the_path(run_train, full_disk):
    where, _ = full_disk
    with pytest.raises(Exception) as e:
        run_train([*RUN, "trainer.save_final=true"], where / "run")
    assert "no space left on" in str(e.value).lower() and str(where) in str(e.value)
    assert "inline_container" not in str(e.value)
