"""A researcher extends optbench without editing it: a new task kind (one module of their own and
one task yaml) and a new optimizer (one yaml) are each added here in a temporary folder, trained
through the real CLI, and listed; no file of the optbench package is created or changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optbench

PACKAGE = Path(optbench.__file__).resolve().parent

TASK_MODULE = '''
"""A kind of my own: least squares y = A x on a fixed random A, the metric is the loss."""
import torch
from torch import nn

from optbench.tasks import register_task_kind
from optbench.tasks.base import Task


class Linear(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim, dim))


@register_task_kind("toy_least_squares", description="least squares on a random 8x8 system")
def build(cfg, device, rank, world_size):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 8, generator=g)
    target = torch.randn(8, 8, generator=g)
    model = Linear(8).to(device)

    def loss(m, batch):
        return ((a @ m.weight - a @ target) ** 2).mean()

    def batches():
        while True:
            yield [None]

    def evaluate(m):
        with torch.no_grad():
            return {"loss": loss(m, None).item()}

    return Task(name=cfg.task.name, model=model, train_batches=batches(), loss=loss, evaluate=evaluate,
                metric="loss", mode="min", target=cfg.task.target, samples_per_step=1)
'''

TASK_YAML = """
# @package _global_
# Least squares on a random system: a task kind that lives outside optbench.
task:
  name: my_least_squares
  description: least squares on a random 8x8 system (a kind of my own)
  kind: toy_least_squares
  module: my_tasks_for_optbench
  metric: loss
  mode: min
  target: 1.0
  loss_reduction: mean
  benchmark: null
"""

OPTIMIZER_YAML = """
# Plain SGD written by me: torch's class named by its path, nothing in optbench changed.
defaults: [_base, _self_]
name: my_sgd
target: torch.optim.SGD
lr: 0.05
momentum: 0.5
weight_decay: 0.0
lr_grid: [0.01, 0.05, 0.1]
"""


def _package_files() -> dict[str, float]:
    return {
        str(p.relative_to(PACKAGE)): p.stat().st_mtime
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _optbench(args, env, cwd):
    return subprocess.run(
        [sys.executable, "-m", "optbench", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=240
    )


def test_a_task_kind_and_an_optimizer_of_my_own_train_without_editing_optbench(tmp_path):
    plugins, conf = tmp_path / "plugins", tmp_path / "my_conf"
    (conf / "task").mkdir(parents=True)
    (conf / "optimizer").mkdir()
    plugins.mkdir()
    (plugins / "my_tasks_for_optbench.py").write_text(textwrap.dedent(TASK_MODULE))
    (conf / "task" / "my_least_squares.yaml").write_text(TASK_YAML.lstrip())
    (conf / "optimizer" / "my_sgd.yaml").write_text(OPTIMIZER_YAML.lstrip())
    before = _package_files()
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "OPTBENCH_CONFIG_PATH": str(conf),
        "PYTHONPATH": os.pathsep.join([str(plugins), str(PACKAGE.parent)]),
    }

    run_dir = tmp_path / "run"
    out = _optbench(
        [
            "train",
            "task=my_least_squares",
            "optimizer=my_sgd",
            "trainer.max_steps=30",
            "trainer.eval_every=10",
            "trainer.device=cpu",
            f"hydra.run.dir={run_dir}",
        ],
        env,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["task"] == "my_least_squares"
    assert summary["optimizer"] == "my_sgd" and summary["steps"] == 30
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e.get("type") == "eval"]
    assert evals and evals[-1]["loss"] < 2.0, evals[-1]  # it trained: ~16 at the start

    listed = _optbench(["list", "tasks"], env, tmp_path)
    assert listed.returncode == 0 and "my_least_squares" in listed.stdout
    listed = _optbench(["list", "optimizers"], env, tmp_path)
    assert listed.returncode == 0 and "my_sgd" in listed.stdout

    # a wrong module name is one line naming it
    bad = _optbench(
        [
            "train",
            "task=my_least_squares",
            "task.module=no_such_module_xyz",
            "trainer.max_steps=2",
            f"hydra.run.dir={tmp_path / 'bad'}",
        ],
        env,
        tmp_path,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "task.module='no_such_module_xyz' cannot be imported" in bad.stderr, bad.stderr

    assert _package_files() == before  # nothing in the optbench package was created or touched
