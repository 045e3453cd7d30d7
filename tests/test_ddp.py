"""DDP through `optbench train trainer.nproc=2` (torchrun, gloo on CPU), end to end.

The single-process run with the same global batch that DDP must reproduce is gradient accumulation
over the same two micro-batches: the loader gives rank r of 2 exactly the samples (and
augmentations) of micro-batch r of 2. Both average the two micro-batch gradients, so the train loss
and the parameters agree to float tolerance. The one thing that differs is BatchNorm's *running*
statistics (used only at evaluation): DDP keeps rank 0's, updated from its micro-batch alone, while
accumulation updates them from both micro-batches in turn. Batch statistics in the forward pass are
per micro-batch in both, so training is identical; we compare parameters, not BN buffers, and check
the DDP evaluation against an independent single-process evaluation of the DDP model instead.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optbench.config import validate
from optbench.errors import ConfigError
from optbench.train import checkpoint as ckpt

TINY = ["trainer.device=cpu", "trainer.batch_size=32", "model.widths=[4,8,8]", "data.n_train=512", "data.n_test=256"]
RUN = [*TINY, "trainer.max_steps=8", "trainer.log_every=1", "trainer.eval_every=4", "trainer.save_final=true"]


def _lines(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_ddp_two_ranks_equal_single_process_same_global_batch(run_train, make_cfg, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each torchrun rank (OMP_NUM_THREADS=1)
    try:
        single, single_dir = run_train([*RUN, "trainer.grad_accum=2"], tmp_path / "single")
    finally:
        torch.set_num_threads(threads)

    # no hydra.run.dir: the parent must resolve Hydra's ${now:...} dir once for both ranks
    exe = str(Path(sys.executable).with_name("optbench"))
    proc = subprocess.run(
        [exe, "train", *RUN, "trainer.nproc=2", "trainer.progress=false"],
        cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    ddp_dir = run_dirs[0]
    assert proc.stdout.count("completed:") == 1  # rank 0 alone prints

    ddp = json.loads((ddp_dir / "summary.json").read_text())
    assert ddp["status"] == "completed" and ddp["environment"]["world_size"] == 2
    assert ddp["samples_seen"] == single["samples_seen"] == 8 * 32

    # rank 0 alone writes: one line per step, not two
    ddp_train, single_train = _lines(ddp_dir, "train"), _lines(single_dir, "train")
    assert [r["step"] for r in ddp_train] == [r["step"] for r in single_train] == list(range(1, 9))
    for a, b in zip(ddp_train, single_train):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5), (a, b)
        assert math.isclose(a["grad_norm"], b["grad_norm"], rel_tol=1e-4), (a, b)

    ddp_state = ckpt.read_checkpoint(ckpt.checkpoint_path(ddp_dir), torch.device("cpu"))
    single_state = ckpt.read_checkpoint(ckpt.checkpoint_path(single_dir), torch.device("cpu"))
    assert ddp_state["world_size"] == 2 and len(ddp_state["ranks"]) == 2  # every rank's RNG kept
    from optbench.tasks import build_task

    task = build_task(make_cfg(RUN), torch.device("cpu"))
    params = {name for name, _ in task.model.named_parameters()}
    assert params
    for name in params:
        torch.testing.assert_close(ddp_state["model"][name], single_state["model"][name], rtol=1e-4, atol=1e-5)

    # the evaluation, split across the ranks and all-reduced, scores rank 0's model exactly
    task.model.load_state_dict(ddp_state["model"])
    task.model.eval()
    with torch.no_grad():
        metrics = task.evaluate(task.model)
    assert metrics["test_acc"] == ddp["final_eval"]["test_acc"]
    assert math.isclose(metrics["test_loss"], ddp["final_eval"]["test_loss"], rel_tol=1e-6)


def test_global_batch_must_divide_by_world_size_and_accumulation(make_cfg):
    cfg = make_cfg([*TINY, "trainer.grad_accum=2"])
    validate(cfg, world_size=2)  # 32 = 8 per micro-batch x 2 ranks x 2 steps
    with pytest.raises(
        ConfigError,
        match=r"trainer.batch_size=32 is not divisible by grad_accum x "
        r"world size = 2 x 3; choose a multiple of 6",
    ):
        validate(cfg, world_size=3)  # under torchrun: WORLD_SIZE
    with pytest.raises(ConfigError, match="= 1 x 3"):
        validate(make_cfg([*TINY, "trainer.nproc=3"]))  # before launching: trainer.nproc


def test_torchrun_command_fixes_the_run_dir(make_cfg):
    from optbench.config import compose
    from optbench.train.launch import QUIET_RANK_OVERRIDES, maybe_relaunch_under_torchrun, torchrun_command

    cfg = compose(["trainer.nproc=2"])
    cmd = torchrun_command(cfg, ["trainer.nproc=2"])
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    run_dir = [a for a in cmd if a.startswith("hydra.run.dir=")]
    assert len(run_dir) == 1 and "${" not in run_dir[0] and "cifar10_synthetic-adamw" in run_dir[0]
    assert torchrun_command(cfg, ["trainer.nproc=2", "hydra.run.dir=x"]).count("hydra.run.dir=x") == 1
    sweep = torchrun_command(cfg, ["-m", "seed=0,1"])
    assert any(a.startswith("hydra.sweep.dir=multirun/") for a in sweep)

    argv = ["trainer.nproc=2"]
    old = os.environ.get("RANK")
    os.environ["RANK"] = "1"
    try:
        maybe_relaunch_under_torchrun(cfg, argv)  # a rank > 0: Hydra writes no files there
    finally:
        os.environ.pop("RANK") if old is None else os.environ.__setitem__("RANK", old)
    assert argv == ["trainer.nproc=2", *QUIET_RANK_OVERRIDES]
