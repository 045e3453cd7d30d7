"""Muon (our own code) against independent references: torch.optim.Muon for the 2D steps, a
standalone AdamW for the fallback roles, and itself in one process for the DDP-sharded update."""
from __future__ import annotations

import copy
import os
import runpy
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from optbench.optim.muon import Muon
import optbench.optim.muon as muon_module

STEPS = 5


def _grads(shapes, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) for s in shapes] for _ in range(steps)]


def _run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("nesterov, ns_steps", [(True, 5), (False, 3)])
def test_2d_steps_match_torch_muon(nesterov, ns_steps):
    # tall, wide and square matrices, two of the same shape (one batched call)
    shapes = [(64, 32), (16, 64), (48, 48), (48, 48)]
    torch.manual_seed(0)
    init = [torch.randn(s) * 0.1 for s in shapes]
    ours = [nn.Parameter(t.clone()) for t in init]
    ref = [nn.Parameter(t.clone()) for t in init]
    kw = dict(lr=0.02, momentum=0.95, nesterov=nesterov, weight_decay=0.01, ns_steps=ns_steps)
    opt = Muon([{"params": ours, "role": "matrix"}], **kw)
    ref_opt = torch.optim.Muon(ref, adjust_lr_fn="original", **kw)
    grads = _grads(shapes, STEPS)
    _run(opt, ours, grads)
    _run(ref_opt, ref, grads)
    for a, b, t in zip(ours, ref, init):
        moved = (b - t).abs().max()
        assert moved > 1e-3  # the comparison is about real updates
        torch.testing.assert_close(a, b, atol=2e-5 * STEPS, rtol=0)


def test_conv_filters_are_flattened_and_scaled_by_the_flat_matrix():
    # (64, 2, 3, 3) -> (64, 18): scale sqrt(64/18); a kernel-shaped rule would give another number
    shapes4 = [(64, 2, 3, 3), (16, 8, 3, 3)]
    flat = [(s[0], s[1] * s[2] * s[3]) for s in shapes4]
    torch.manual_seed(1)
    init = [torch.randn(s) * 0.1 for s in shapes4]
    ours = [nn.Parameter(t.clone()) for t in init]
    ref = [nn.Parameter(t.clone().reshape(f)) for t, f in zip(init, flat)]
    opt = Muon([{"params": ours, "role": "matrix"}], lr=0.02, weight_decay=0.0)
    ref_opt = torch.optim.Muon(ref, lr=0.02, weight_decay=0.0, adjust_lr_fn="original")
    grads = _grads(shapes4, STEPS, seed=3)
    _run(opt, ours, grads)
    _run(ref_opt, ref, [[g.reshape(f) for g, f in zip(step, flat)] for step in grads])
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.reshape(b.shape), b, atol=2e-5 * STEPS, rtol=0)


def test_same_shape_matrices_go_through_one_batched_call(monkeypatch):
    calls = []
    real = muon_module.newton_schulz

    def counting(stack, *a, **k):
        calls.append(tuple(stack.shape))
        return real(stack, *a, **k)

    monkeypatch.setattr(muon_module, "newton_schulz", counting)
    params = [nn.Parameter(torch.randn(s)) for s in [(8, 8), (8, 8), (8, 8), (4, 8), (8, 2, 2, 2)]]
    opt = Muon([{"params": params, "role": "matrix"}])
    _run(opt, params, _grads([p.shape for p in params], 1))
    # (8, 2, 2, 2) flattens to (8, 8) and joins the square ones; the lone (4, 8) is not stacked
    assert sorted(calls) == [(4, 8), (4, 8, 8)]


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.body = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, idx):
        return self.head(torch.relu(self.body(self.emb(idx))))


def _loss_step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 10, (16,), generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(model(idx), y).backward()
    opt.step()


def test_fallback_roles_match_a_standalone_adamw_and_policy():
    from optbench.optim import build_optimizer

    torch.manual_seed(0)
    model = _Net()
    ref_model = _Net()
    ref_model.load_state_dict(model.state_dict())
    opt = build_optimizer("muon", model, groups={"head": {"lr_mult": 0.5, "weight_decay": True}})
    roles = {g["role"]: g for g in opt.param_groups}
    assert roles["matrix"]["lr"] == 0.02 and roles["matrix"]["use_muon"]
    assert roles["head"]["lr"] == pytest.approx(3e-4 * 0.5) and roles["head"]["weight_decay"] == 0.01
    assert roles["scalar"]["weight_decay"] == 0.0 and roles["embedding"]["lr"] == pytest.approx(3e-4)
    # the reference: torch AdamW with the yaml's fallback numbers on the non-matrix parameters
    ref = {n: p for n, p in ref_model.named_parameters()}
    adamw = torch.optim.AdamW([
        {"params": [ref["emb.weight"]], "lr": 3e-4, "weight_decay": 0.01},
        {"params": [ref["head.weight"]], "lr": 1.5e-4, "weight_decay": 0.01},
        {"params": [ref["body.bias"], ref["head.bias"]], "lr": 3e-4, "weight_decay": 0.0},
    ], betas=(0.9, 0.95), eps=1e-10)
    ref_muon = torch.optim.Muon([ref["body.weight"]], lr=0.02, weight_decay=0.01, adjust_lr_fn="original")
    for seed in range(4):
        _loss_step(model, opt, seed)
        # same data, and the reference sees the same gradients for the same parameters
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, 10, (16,), generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        adamw.zero_grad(), ref_muon.zero_grad()
        nn.functional.cross_entropy(ref_model(idx), y).backward()
        adamw.step(), ref_muon.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, ref[name], atol=1e-4, rtol=0, msg=name)


def test_state_dict_round_trip_and_state_bytes():
    from optbench.optim import build_optimizer
    from optbench.train.memory import optimizer_state_bytes

    torch.manual_seed(0)
    a, b = _Net(), _Net()
    b.load_state_dict(a.state_dict())
    opt_a = build_optimizer("muon", a)
    for seed in range(3):
        _loss_step(a, opt_a, seed)
    state = copy.deepcopy(opt_a.state_dict())  # as through torch.save: no tensors shared with opt_a
    b.load_state_dict(a.state_dict())
    opt_b = build_optimizer("muon", b)
    opt_b.load_state_dict(state)
    for seed in range(3, 6):
        _loss_step(a, opt_a, seed)
        _loss_step(b, opt_b, seed)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    # matrix: 1 momentum buffer; fallback (AdamW): exp_avg + exp_avg_sq + a 4-byte step each
    matrix = a.body.weight.numel()
    others = [p for n, p in a.named_parameters() if n != "body.weight"]
    expected = 4 * matrix + sum(4 * 2 * p.numel() + 4 for p in others)
    assert optimizer_state_bytes(opt_b) == expected


WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    import optbench.optim.muon as m
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    sizes, real = [], m.newton_schulz
    # matrices per NS call (a lone matrix of its shape goes unstacked, as 1)
    m.newton_schulz = lambda x, *a, **k: (sizes.append(x.shape[0] if x.ndim == 3 else 1), real(x, *a, **k))[1]
    shapes = [(24, 16)] * 3 + [(16, 40), (8, 4, 3, 3)]
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s) * 0.1) for s in shapes]
    opt = m.Muon([{"params": params, "role": "matrix"}], lr=0.02, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    torch.save({"params": [p.detach() for p in params], "sizes": sizes}, out)
    if world > 1:
        dist.barrier()  # rank 0 hosts the store: tearing down before rank 1 is done aborts it
        dist.destroy_process_group()
""")


def test_ddp_sharded_update_equals_single_process(tmp_path, monkeypatch):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = {f"rank{r}": subprocess.Popen([sys.executable, str(script), str(r), "2", str(port), str(tmp_path / f"rank{r}")],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          env={**os.environ, "OMP_NUM_THREADS": "1"})
             for r in range(2)}
    # meanwhile the single-process reference, here (the worker patches newton_schulz: undone at teardown)
    monkeypatch.setattr(muon_module, "newton_schulz", muon_module.newton_schulz)
    monkeypatch.setattr(sys, "argv", [str(script), "0", "1", "0", str(tmp_path / "single")])
    runpy.run_path(str(script), run_name="__main__")
    for k, p in procs.items():
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, f"{k}: {out}"
    single = torch.load(tmp_path / "single")
    for rank in ("rank0", "rank1"):
        sharded = torch.load(tmp_path / rank)
        # 3 matrices of one shape over 2 ranks: each orthogonalises 2 (one padding), not 3
        assert sharded["sizes"][:3] == [2, 1, 1] and single["sizes"][:3] == [3, 1, 1]
        for a, b in zip(sharded["params"], single["params"]):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_fallback_can_be_another_registered_optimizer(make_cfg):
    from optbench.optim import build_optimizer_from_config, validate_optimizer_config
    from optbench.errors import ConfigError

    cfg = make_cfg(["optimizer=muon", "optimizer.fallback.name=lion", "optimizer.fallback.lr=1e-4"])
    validate_optimizer_config(cfg.optimizer)  # AdamW's eps, left from the yaml, is dropped for Lion
    opt = build_optimizer_from_config(cfg.optimizer, _Net())
    assert type(opt.fallback).__name__ == "Lion"
    head = next(g for g in opt.param_groups if g["role"] == "head")
    assert head["lr"] == pytest.approx(1e-4) and head["betas"] == (0.9, 0.95) and "eps" not in head
    cfg = make_cfg(["optimizer=muon", "optimizer.fallback.name=lion", "optimizer.fallback.eps=1e-3"])
    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) \['eps'\] for optimizer 'lion'"):
        validate_optimizer_config(cfg.optimizer)
