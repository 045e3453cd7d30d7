"""Checkpoint/resume: a run killed with SIGTERM and run again ends exactly like an uninterrupted one;
corrupted checkpoints are refused with one line and handled as trainer.on_bad_checkpoint says;
a crash while writing a checkpoint leaves the previous one intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from optbench.errors import ConfigError
from optbench.train import checkpoint as ckpt

# a model and data small enough that a step takes milliseconds on one CPU thread
TINY = ["trainer.device=cpu", "trainer.batch_size=32", "model.widths=[4,8,8]", "data.n_train=512", "data.n_test=256"]


def _metric_lines(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields (which differ between any two runs)."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for k in ("time_s", "img_per_s"):
            rec.pop(k, None)
        out.append(rec)
    return out


def _final_state(run_dir: Path) -> dict:
    return ckpt.read_checkpoint(ckpt.checkpoint_path(run_dir), torch.device("cpu"))


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    path = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if path.exists():
            steps = [json.loads(ln)["step"] for ln in path.read_text().splitlines() if ln.endswith("}")]
            if steps and max(steps) >= step:
                return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"run did not reach step {step} in {timeout}s")


def test_sigterm_then_same_command_resumes_exactly(run_train, tmp_path):
    overrides = [
        *TINY,
        "trainer.max_steps=150",
        "trainer.log_every=1",
        "trainer.eval_every=50",
        "trainer.save_final=true",
    ]
    reference, ref_dir = run_train(overrides, tmp_path / "reference")
    assert reference["status"] == "completed"

    run_dir = tmp_path / "interrupted"
    cmd = [
        str(Path(sys.executable).with_name("optbench")),
        "train",
        *overrides,
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(run_dir, 10, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    interrupted = json.loads((run_dir / "summary.json").read_text())
    assert interrupted["status"] == "interrupted", interrupted
    assert "SIGTERM" in interrupted["stop_reason"]
    assert 10 <= interrupted["steps"] < 150
    assert _final_state(run_dir)["bookkeeping"]["step"] == interrupted["steps"]

    assert (run_dir / ".optbench.lock").read_text() == ""  # the lock released on the way out
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from step {interrupted['steps']}" in again.stderr
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["status"] == "completed"
    assert resumed["steps"] == reference["steps"] == 150
    # exactly: the same evaluations, the same loss at every step, the same parameters and buffers
    assert resumed["final_eval"] == reference["final_eval"]
    assert resumed["best_metric"] == reference["best_metric"]
    assert _metric_lines(run_dir) == _metric_lines(ref_dir)
    ours, theirs = _final_state(run_dir), _final_state(ref_dir)
    assert ours["model"].keys() == theirs["model"].keys()
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    # the train clock continued from the checkpoint instead of starting over
    assert resumed["train_time_s"] > interrupted["train_time_s"]


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensor data: torch.load alone misses it
    path.write_bytes(bytes(data))


@pytest.fixture
def two_checkpoints(run_train, tmp_path):
    """A finished 8-step run with checkpoints at step 4 (prev.pt) and step 8 (last.pt)."""
    summary, run_dir = run_train(
        [*TINY, "trainer.max_steps=8", "trainer.checkpoint_every=4", "trainer.eval_every=4", "trainer.log_every=2"],
        tmp_path / "run",
    )
    assert summary["status"] == "completed"
    assert ckpt.read_checkpoint(ckpt.previous_path(run_dir), torch.device("cpu"))["bookkeeping"]["step"] == 4
    assert _final_state(run_dir)["bookkeeping"]["step"] == 8
    return run_dir


def test_corrupted_checkpoint_stop_refuses_with_one_line(two_checkpoints, run_train):
    _corrupt(ckpt.checkpoint_path(two_checkpoints))
    with pytest.raises(ckpt.BadCheckpoint) as e:
        run_train([*TINY, "trainer.max_steps=12", "trainer.on_bad_checkpoint=stop"], two_checkpoints)
    message = str(e.value)
    assert "\n" not in message
    assert "last.pt is corrupted (SHA-256 mismatch)" in message and "on_bad_checkpoint=stop" in message
    assert isinstance(e.value, ConfigError)  # the CLI prints it as one `optbench: error:` line


def test_corrupted_checkpoint_falls_back_to_previous(two_checkpoints, run_train, tmp_path, capsys):
    _corrupt(ckpt.checkpoint_path(two_checkpoints))
    overrides = [
        *TINY,
        "trainer.max_steps=10",
        "trainer.checkpoint_every=4",
        "trainer.eval_every=4",
        "trainer.log_every=2",
    ]
    # an 8-step run resumed as a 10-step one: an extension, on purpose (trainer.extend)
    summary, _ = run_train([*overrides, "trainer.on_bad_checkpoint=previous", "trainer.extend=true"], two_checkpoints)
    err = capsys.readouterr().err
    assert "last.pt is corrupted" in err and "resumed from" in err and "prev.pt at step 4" in err
    # resuming from step 4 gives what a run never interrupted gives
    straight, straight_dir = run_train(overrides, tmp_path / "straight")
    assert summary["status"] == "completed" and summary["steps"] == 10
    assert summary["final_eval"] == straight["final_eval"]
    assert _metric_lines(two_checkpoints) == _metric_lines(straight_dir)


def test_truncated_checkpoint_restart_and_nothing_good(two_checkpoints, run_train, capsys):
    last = ckpt.checkpoint_path(two_checkpoints)
    last.write_bytes(last.read_bytes()[:1000])  # a torn write from another tool
    with pytest.raises(ckpt.BadCheckpoint, match="last.pt is unreadable"):
        ckpt.read_checkpoint(last, torch.device("cpu"))
    _corrupt(ckpt.previous_path(two_checkpoints))
    with pytest.raises(ckpt.BadCheckpoint, match="no good previous checkpoint"):
        run_train([*TINY, "trainer.max_steps=4"], two_checkpoints)
    summary, _ = run_train([*TINY, "trainer.max_steps=4", "trainer.on_bad_checkpoint=restart"], two_checkpoints)
    assert "starting from step 0" in capsys.readouterr().err
    assert summary["steps"] == 4 and summary["status"] == "completed"


def test_crash_while_writing_keeps_the_previous_checkpoint(two_checkpoints, monkeypatch):
    last = ckpt.checkpoint_path(two_checkpoints)
    before = last.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    state = _final_state(two_checkpoints)
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        ckpt.write_checkpoint(state, last)
    monkeypatch.undo()
    assert last.read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt", "prev.pt"]  # no temp file left
    ckpt.write_checkpoint(state, last)  # and a good write rotates last -> prev
    assert ckpt.previous_path(two_checkpoints).read_bytes() == before


def test_resume_path_must_exist(run_train, tmp_path):
    with pytest.raises(ConfigError, match="no such checkpoint"):
        run_train([*TINY, "trainer.max_steps=2", f"trainer.resume={tmp_path / 'nope.pt'}"])


def test_submitit_style_signal_checkpoints_then_reaches_the_previous_handler(run_train, tmp_path, monkeypatch):
    """SLURM/submitit preemption: SIGUSR2 mid-run -> checkpoint + summary 'interrupted', and only then
    the handler that was installed before the run (submitit's requeue) gets the signal."""
    from optbench.train.loop import Trainer

    run_dir = tmp_path / "run"
    seen = []

    def submitit_like(signum, frame):
        seen.append(
            (
                signum,
                json.loads((run_dir / "summary.json").read_text())["status"],
                ckpt.checkpoint_path(run_dir).exists(),
            )
        )

    original = Trainer.set_lr

    def set_lr(self, step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGUSR2)
        return original(self, step)

    monkeypatch.setattr(Trainer, "set_lr", set_lr)
    previous = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        summary, _ = run_train([*TINY, "trainer.max_steps=20"], run_dir)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert summary["status"] == "interrupted" and summary["stop_reason"] == "signal SIGUSR2"
    assert summary["steps"] == 4  # the step under way when the signal came was finished
    assert seen == [(signal.SIGUSR2, "interrupted", True)]
    assert _final_state(run_dir)["bookkeeping"]["step"] == 4


def test_on_bad_checkpoint_choices_are_checked(make_cfg):
    from optbench.config import validate

    with pytest.raises(
        ConfigError,
        match=r"trainer.on_bad_checkpoint='skip' is invalid; valid choices: "
        r"previous, stop, restart",
    ):
        validate(make_cfg(["trainer.on_bad_checkpoint=skip"]))


def test_both_checkpoints_bad_says_so_without_promising_another(two_checkpoints, run_train, capsys):
    _corrupt(ckpt.checkpoint_path(two_checkpoints))
    _corrupt(ckpt.previous_path(two_checkpoints))
    with pytest.raises(ckpt.BadCheckpoint, match="prev.pt is corrupted .*no good previous checkpoint"):
        run_train([*TINY, "trainer.max_steps=8"], two_checkpoints)
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "trying the previous checkpoint" in ln]
    assert len(warnings) == 1 and "last.pt" in warnings[0]  # not after prev.pt, the last one there is


def test_another_optimizer_is_named_as_such(two_checkpoints, run_train):
    """An adamw checkpoint resumed by an sgd run named optimizer.betas, the first key in sorted order."""
    with pytest.raises(ConfigError, match=r"made with optimizer.name='adamw', this run has optimizer.name='sgd'"):
        run_train([*TINY, "trainer.max_steps=8", "optimizer=sgd"], two_checkpoints)


@pytest.mark.parametrize("failure", ["oserror", "torch_runtime_error"])
def test_disk_full_while_checkpointing_says_so(two_checkpoints, monkeypatch, failure):
    """Disk full gave torch's `[enforce fail at inline_container.cc:672] . unexpected pos ...`."""
    import errno
    import io
    import shutil
    from collections import namedtuple

    last = ckpt.checkpoint_path(two_checkpoints)
    before = last.read_bytes()
    state = _final_state(two_checkpoints)
    real_save = torch.save

    def full(obj, f, *args, **kwargs):
        if isinstance(f, io.BytesIO):  # the in-memory serialisation works; the file write fails
            return real_save(obj, f, *args, **kwargs)
        if failure == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1234 vs 1100")

    monkeypatch.setattr(torch, "save", full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 100))
    with pytest.raises(ckpt.NoSpaceLeft) as e:
        ckpt.write_checkpoint(state, last)
    assert str(e.value).startswith(f"no space left on {last.parent} while writing checkpoint last.pt")
    assert "\n" not in str(e.value) and "inline_container" not in str(e.value)
    monkeypatch.undo()
    assert last.read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt", "prev.pt"]
