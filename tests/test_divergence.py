"""Divergence: a non-finite loss, or one above divergence_factor x the initial loss, ends the run
as `diverged` with its summary written; in a multirun the sweep goes on."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from optbench.train.loop import Trainer

TINY = ["trainer.device=cpu", "trainer.batch_size=32", "model.widths=[4,8,8]", "data.n_train=512", "data.n_test=256"]


def _diverged(loss: float, initial: float | None, factor: float) -> tuple[bool, str | None]:
    """Trainer.diverged on a stand-in holding only what it reads."""
    t = SimpleNamespace(
        t=SimpleNamespace(divergence_factor=factor), initial_loss=initial, step=7, status="running", stop_reason=None
    )
    return Trainer.diverged(t, loss), t.stop_reason


def test_divergence_rule():
    assert _diverged(float("nan"), 2.0, 10.0)[0]
    assert _diverged(float("inf"), None, 0.0)[0]  # non-finite even with the factor off
    bad, reason = _diverged(20.5, 2.0, 10.0)
    assert bad and reason == "loss 20.5 at step 7 > 10.0 x initial loss 2"
    assert not _diverged(19.9, 2.0, 10.0)[0]
    assert not _diverged(1e9, 2.0, 0.0)[0]  # factor 0 = off


def test_absurd_lr_ends_diverged_with_summary(run_train):
    summary, run_dir = run_train([*TINY, "optimizer.lr=1e6", "trainer.max_steps=40", "trainer.log_every=1"])
    assert summary["status"] == "diverged"
    assert summary["steps"] < 40
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["stop_reason"] == summary["stop_reason"]
    # the last metrics line is the step that diverged, and it meets the rule
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert last["step"] == summary["steps"]
    loss = float(last["loss"])
    assert not math.isfinite(loss) or loss > 10.0 * first["loss"]


def test_multirun_with_a_diverging_job_completes(data_root, tmp_path):
    exe = str(Path(sys.executable).with_name("optbench"))
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            exe,
            "train",
            "-m",
            *TINY,
            "trainer.max_steps=30",
            "trainer.log_every=1",
            "trainer.eval_every=30",
            "trainer.progress=false",
            "optimizer.lr=1e-3,1e6",
            f"hydra.sweep.dir={sweep}",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert len(summaries) == 2  # one directory per job
    by_lr = {s["lr"]: s for s in summaries.values()}
    assert by_lr[1e-3]["status"] == "completed" and by_lr[1e-3]["steps"] == 30
    assert by_lr[1e6]["status"] == "diverged" and by_lr[1e6]["steps"] < 30
    assert all(name.startswith(("0-", "1-")) for name in summaries)
