"""Cluster launchers: hydra/launcher=slurm composes with the settings a cluster needs, and the
submitit local executor (the same job path as SLURM) runs a 2-job sweep into separate dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from optbench.config import compose

TINY = ["trainer.device=cpu", "trainer.batch_size=32", "model.widths=[4,8,8]", "data.n_train=512", "data.n_test=256"]


def test_slurm_launcher_settings():
    cfg = compose(
        [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.nodes=2",
            "hydra.launcher.timeout_min=600",
        ]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.nodes, launcher.timeout_min) == ("gpu", 4, 2, 600)
    assert launcher.tasks_per_node == 4  # one process per GPU
    assert launcher.max_num_timeout > 0  # requeued after preemption / time limit
    assert launcher.signal_delay_s > 0  # the warning signal the loop checkpoints on


def test_submitit_local_two_job_sweep(data_root, tmp_path):
    exe = str(Path(sys.executable).with_name("optbench"))
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            exe,
            "train",
            "-m",
            "hydra/launcher=local",
            *TINY,
            "trainer.max_steps=4",
            "trainer.eval_every=4",
            "trainer.progress=false",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / ".submitit").is_dir()  # it really went through submitit
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert [s["seed"] for s in summaries] == [0, 1]
    assert all(s["status"] == "completed" and s["steps"] == 4 for s in summaries)
    dirs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert len(set(dirs)) == 2
    for d, s in zip(dirs, summaries):  # each job wrote only into its own directory
        assert f"seed={s['seed']}" in d.name
        steps = [
            json.loads(ln)["step"]
            for ln in (d / "metrics.jsonl").read_text().splitlines()
            if json.loads(ln)["type"] == "train"
        ]
        assert steps == sorted(set(steps)) and steps[-1] == 4  # one run's lines, none twice
