"""task.loss_reduction=sum: the optimizer sees the gradient of the sum of per-example losses over the
whole global batch (every micro-batch, every rank), the logged loss stays a per-example mean."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from optbench.errors import ConfigError

LM = [
    "task=fineweb_synthetic",
    "trainer.batch_size=4",
    "trainer.max_steps=2",
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "trainer.device=cpu",
]
IMG = [
    "task=cifar10_synthetic",
    "trainer.batch_size=16",
    "trainer.max_steps=2",
    "model.widths=[4,8,8]",
    "data.n_train=256",
    "data.n_test=64",
    "trainer.device=cpu",
]


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _trainer(make_cfg, tmp_path, overrides):
    from optbench.train.loop import Trainer

    return Trainer(make_cfg(overrides), tmp_path / "run")


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_language_model_gradient_over_two_micro_batches(make_cfg, tmp_path, reduction):
    tr = _trainer(make_cfg, tmp_path, [*LM, "trainer.grad_accum=2", f"task.loss_reduction={reduction}"])
    micro = next(tr.task.train_batches)
    assert len(micro) == 2 and tr.task.loss_reduction == reduction
    logged = tr._forward_backward(micro)
    ours = _grads(tr.model)
    tr.model.zero_grad(set_to_none=True)
    # the reference: one cross-entropy over all the step's tokens, summed (or averaged)
    x = torch.cat([b[0] for b in micro])
    y = torch.cat([b[1] for b in micro])
    logits = tr.model(x).float()
    total = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction=reduction)
    total.backward()
    ref = _grads(tr.model)
    for n in ref:
        torch.testing.assert_close(ours[n], ref[n], rtol=1e-4, atol=1e-6)
    per_token = F.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    assert logged.item() == pytest.approx(per_token, rel=1e-5)  # logged: a per-token mean either way
    if reduction == "sum":  # the sum's gradient is the mean's times the step's token count
        assert tr.task.examples_per_step == 4 * 64


def test_image_classification_sum(make_cfg, tmp_path):
    tr = _trainer(
        make_cfg,
        tmp_path,
        [
            *IMG,
            "trainer.grad_accum=2",
            "task.loss_reduction=sum",
            "data.augment.flip=false",
            "data.augment.translate=0",
        ],
    )
    tr.model.eval()  # BatchNorm with its running statistics: the two passes see the same function
    micro = next(tr.task.train_batches)
    logged = tr._forward_backward(micro)
    ours = _grads(tr.model)
    tr.model.zero_grad(set_to_none=True)
    x = torch.cat([b[0] for b in micro])
    y = torch.cat([b[1] for b in micro])
    out = tr.model(x)
    F.cross_entropy(out, y, reduction="sum").backward()
    ref = _grads(tr.model)
    for n in ref:
        torch.testing.assert_close(ours[n], ref[n], rtol=1e-4, atol=1e-5)
    assert logged.item() == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)


def test_bad_reduction_is_one_line(make_cfg):
    from optbench.config import validate

    with pytest.raises(ConfigError, match=r"task.loss_reduction='total' is invalid; valid choices: mean, sum"):
        validate(make_cfg(["task.loss_reduction=total"]))
    with pytest.raises(ConfigError, match=r"task.benchmark='track9' is invalid; valid choices: null, nanogpt_track3"):
        validate(make_cfg(["task.benchmark=track9"]))


# --------------------------------------------------------------------------- DDP, gloo, 2 ranks
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_grads(rank: int, overrides: list, data_root: str, out_dir: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OPTBENCH_DATA=data_root)
    torch.set_num_threads(1)
    from optbench.config import compose
    from optbench.train.distributed import DistInfo, destroy_process_group
    from optbench.train.loop import Trainer

    cfg = compose(overrides)
    tr = Trainer(cfg, Path(out_dir) / f"run{rank}", DistInfo(rank, rank, 2))
    logged = tr._forward_backward(next(tr.task.train_batches))
    torch.save({"grads": _grads(tr.model), "logged": logged.item()}, Path(out_dir) / f"rank{rank}.pt")
    destroy_process_group()


def test_ddp_two_ranks_give_the_sum_gradient(make_cfg, tmp_path, data_root):
    """Rank r of 2 holds micro-batch r of the single-process step; after DDP's all-reduce each rank's
    gradient must be the single process's gradient of the summed loss."""
    import torch.multiprocessing as mp

    overrides = [*LM, "task.loss_reduction=sum", "trainer.progress=false"]
    single = _trainer(make_cfg, tmp_path, [*overrides, "trainer.grad_accum=2"])  # also writes the shards
    micro = next(single.task.train_batches)
    single._forward_backward(micro)
    ref = _grads(single.model)
    mp.start_processes(
        _rank_grads, args=(overrides, str(data_root), str(tmp_path), _free_port()), nprocs=2, start_method="spawn"
    )  # not fork: forking a process with torch's threads can deadlock
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for n in ref:
            torch.testing.assert_close(got["grads"][n], ref[n], rtol=1e-4, atol=1e-6)
        # each rank logs its own per-token mean; the loop all-reduces and divides by the world size
        x, y = micro[rank]
        with torch.no_grad():
            mine = F.cross_entropy(single.model(x).float().flatten(0, 1), y.flatten()).item()
        assert got["logged"] == pytest.approx(mine, rel=1e-5)
