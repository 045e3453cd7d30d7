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

import optbench.optim.muon as muon_module
from optbench.optim.muon import Muon

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
    adamw = torch.optim.AdamW(
        [
            {"params": [ref["emb.weight"]], "lr": 3e-4, "weight_decay": 0.01},
            {"params": [ref["head.weight"]], "lr": 1.5e-4, "weight_decay": 0.01},
            {"params": [ref["body.bias"], ref["head.bias"]], "lr": 3e-4, "weight_decay": 0.0},
        ],
        betas=(0.9, 0.95),
        eps=1e-10,
    )
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
    procs = {
        f"rank{r}": subprocess.Popen(
            [sys.executable, str(script), str(r), "2", str(port), str(tmp_path / f"rank{r}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for r in range(2)
    }
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
    from optbench.errors import ConfigError
    from optbench.optim import build_optimizer_from_config, validate_optimizer_config

    cfg = make_cfg(["optimizer=muon", "optimizer.fallback.name=lion", "optimizer.fallback.lr=1e-4"])
    validate_optimizer_config(cfg.optimizer)  # AdamW's eps, left from the yaml, is dropped for Lion
    opt = build_optimizer_from_config(cfg.optimizer, _Net())
    assert type(opt.fallback).__name__ == "Lion"
    head = next(g for g in opt.param_groups if g["role"] == "head")
    assert head["lr"] == pytest.approx(1e-4) and head["betas"] == (0.9, 0.95) and "eps" not in head
    cfg = make_cfg(["optimizer=muon", "optimizer.fallback.name=lion", "optimizer.fallback.eps=1e-3"])
    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) \['eps'\] for optimizer 'lion'"):
        validate_optimizer_config(cfg.optimizer)


# ---------------------------------------------------------------- the options (C2), each against a
# float64 transcription of its formula, written here independently of optbench/optim/muon.py
def _ns64(m, coeffs, steps, eps, norm):
    """Newton-Schulz as written in the papers/reference scripts, float64."""
    a, b, c = coeffs
    x = m.double()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    fro = torch.sqrt((x * x).sum())
    x = x / (max(fro.item(), eps) if norm == "clamp" else fro.item() + eps)
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if tall else x


def _muon64(
    init,
    grads,
    lr,
    mu,
    wd,
    nesterov=True,
    form="lerp",
    coeffs=(3.4445, -4.7750, 2.0315),
    steps=5,
    eps=1e-7,
    norm="clamp",
    scale_rule="original",
    renorm=False,
):
    """Several Muon steps on a list of tensors, float64, straight from C2's formulas."""
    ps = [t.double().clone() for t in init]
    bufs = [torch.zeros_like(p) for p in ps]
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = g.double()
            if form == "lerp":
                bufs[i] = bufs[i] + (1 - mu) * (g - bufs[i])  # buf.lerp(g, 1-mu)
                u = g + mu * (bufs[i] - g) if nesterov else bufs[i]  # g.lerp(buf, mu)
            else:
                bufs[i] = mu * bufs[i] + g
                u = g + mu * bufs[i] if nesterov else bufs[i]
            rows, cols = u.shape[0], u[0].numel()
            if renorm:
                ps[i] = ps[i] * (rows**0.5 / torch.sqrt((ps[i] ** 2).sum()))
            ps[i] = ps[i] * (1 - lr * wd)
            scale = {
                "original": max(1, rows / cols) ** 0.5,
                "none": 1.0,
                "match_rms_adamw": 0.2 * max(rows, cols) ** 0.5,
            }[scale_rule]
            ps[i] = ps[i] - lr * scale * _ns64(u.reshape(rows, cols), coeffs, steps, eps, norm).reshape(u.shape)
    return ps


SHAPES = [(24, 12), (8, 20), (16, 16), (16, 16), (12, 3, 3, 3), (6, 4, 2, 2)]


def _ours(init, grads, **kw):
    ps = [nn.Parameter(t.clone()) for t in init]
    opt = Muon([{"params": ps, "role": "matrix"}], ns_dtype="fp32", **kw)
    _run(opt, ps, grads)
    return ps


@pytest.mark.parametrize(
    "case",
    [
        dict(momentum_form="lerp", nesterov=True),
        dict(momentum_form="lerp", nesterov=False),
        dict(momentum_form="sgd", nesterov=True, momentum=0.6),
        dict(momentum_form="sgd", nesterov=False, momentum=0.6),
        dict(ns_coefficients=(2.0, -1.5, 0.5), ns_steps=12, ns_norm="add"),  # modded-nanogpt track 3
        dict(
            ns_steps=3,
            ns_norm="add",
            scale_rule="none",
            weight_renorm=True,
            momentum_form="sgd",
            momentum=0.6,
            weight_decay=0.0,
        ),  # airbench94_muon
        dict(scale_rule="match_rms_adamw"),
        dict(scale_rule="none"),
        dict(weight_renorm=True),
        dict(ns_norm="clamp", eps=3.0),  # eps above some norms: clamp and add must differ, each exact
        dict(ns_norm="add", eps=3.0),
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_each_option_matches_its_float64_formula(case):
    torch.manual_seed(0)
    init = [torch.randn(s, dtype=torch.float64) for s in SHAPES]
    grads = [[g.double() * 0.3 for g in step] for step in _grads(SHAPES, 4, seed=5)]
    kw = dict(lr=0.05, momentum=0.9, weight_decay=0.02, nesterov=True)
    kw.update(case)
    ours = _ours(init, grads, **kw)
    ref = _muon64(
        init,
        grads,
        kw["lr"],
        kw["momentum"],
        kw["weight_decay"],
        kw["nesterov"],
        kw.get("momentum_form", "lerp"),
        kw.get("ns_coefficients", (3.4445, -4.7750, 2.0315)),
        kw.get("ns_steps", 5),
        kw.get("eps", 1e-7),
        kw.get("ns_norm", "clamp"),
        kw.get("scale_rule", "original"),
        kw.get("weight_renorm", False),
    )
    for a, b, t in zip(ours, ref, init):
        assert (b - t).abs().max() > 1e-2  # real updates
        # NS runs in fp32 on float64 parameters: fp32 round-off only
        torch.testing.assert_close(a.detach(), b, atol=2e-5, rtol=1e-5)


def test_clamp_and_add_norms_differ_where_eps_matters():
    torch.manual_seed(0)
    init = [torch.randn(s, dtype=torch.float64) for s in SHAPES]
    grads = [[g.double() * 0.3 for g in step] for step in _grads(SHAPES, 2, seed=5)]
    a = _ours(init, grads, lr=0.05, eps=3.0, ns_norm="clamp")
    b = _ours(init, grads, lr=0.05, eps=3.0, ns_norm="add")
    assert max((x - y).abs().max().item() for x, y in zip(a, b)) > 1e-3


def test_bf16_newton_schulz_runs_in_bf16_and_fp32_in_fp32(monkeypatch):
    dtypes = []
    real = muon_module.newton_schulz

    def spy(x, *a, **k):
        out = real(x, *a, **k)
        dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(muon_module, "newton_schulz", spy)
    torch.manual_seed(0)
    init = [torch.randn(s) for s in SHAPES]
    grads = _grads(SHAPES, 2, seed=1)
    results = {}
    for name in ("bf16", "fp32"):
        dtypes.clear()
        ps = [nn.Parameter(t.clone()) for t in init]
        _run(Muon([{"params": ps, "role": "matrix"}], lr=0.05, ns_dtype=name), ps, grads)
        assert set(dtypes) == {torch.bfloat16 if name == "bf16" else torch.float32}
        assert all(p.dtype == torch.float32 for p in ps)
        results[name] = ps
    ref = _muon64(init, grads, 0.05, 0.95, 0.0)
    err = {k: max((a.double() - b).abs().max().item() for a, b in zip(v, ref)) for k, v in results.items()}
    assert err["fp32"] < 1e-5 < 1e-3 < err["bf16"] < 5e-2, err


def test_match_rms_adamw_matches_torch_muon():
    shapes = [(64, 32), (16, 64), (48, 48), (48, 48)]
    torch.manual_seed(0)
    init = [torch.randn(s) * 0.1 for s in shapes]
    ours = [nn.Parameter(t.clone()) for t in init]
    ref = [nn.Parameter(t.clone()) for t in init]
    kw = dict(lr=0.01, momentum=0.95, nesterov=True, weight_decay=0.1)
    _run(Muon([{"params": ours, "role": "matrix"}], scale_rule="match_rms_adamw", **kw), ours, _grads(shapes, STEPS))
    _run(torch.optim.Muon(ref, adjust_lr_fn="match_rms_adamw", **kw), ref, _grads(shapes, STEPS))
    for a, b, t in zip(ours, ref, init):
        assert (b - t).abs().max() > 1e-2
        torch.testing.assert_close(a, b, atol=2e-5 * STEPS * 4, rtol=0)


def test_scale_rule_uses_the_flattened_filter():
    from optbench.optim.muon import shape_scale

    # a (64, 32, 3, 3) filter is a 64 x 288 matrix; a (512, 8, 3, 3) one a 512 x 72 matrix
    assert shape_scale("original", 64, 288) == 1.0
    assert shape_scale("original", 512, 72) == pytest.approx((512 / 72) ** 0.5)
    assert shape_scale("match_rms_adamw", 64, 288) == pytest.approx(0.2 * 288**0.5)
    assert shape_scale("none", 512, 72) == 1.0
    # and the optimizer applies it so: one step of a (512, 8, 3, 3) filter from zero momentum
    p = nn.Parameter(torch.zeros(512, 8, 3, 3))
    p.grad = torch.randn(512, 8, 3, 3)
    Muon([{"params": [p], "role": "matrix"}], lr=1.0, momentum=0.0, ns_dtype="fp32").step()
    expected = -((512 / 72) ** 0.5) * _ns64(p.grad.reshape(512, 72), NS_COEFF, 5, 1e-7, "clamp")
    torch.testing.assert_close(p.detach().reshape(512, 72).double(), expected, atol=1e-4, rtol=1e-4)


NS_COEFF = (3.4445, -4.7750, 2.0315)


def test_weight_renorm_sets_each_filter_tensor_to_sqrt_out_channels():
    p = nn.Parameter(torch.randn(12, 3, 3, 3) * 5)
    p.grad = torch.randn_like(p)
    Muon([{"params": [p], "role": "matrix"}], lr=0.0, weight_renorm=True).step()  # lr 0: renorm alone
    assert p.norm().item() == pytest.approx(12**0.5, rel=1e-6)


class _Cnn(nn.Module):
    def __init__(self, freeze_first=False):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.stem.weight.requires_grad = not freeze_first
        self.conv = nn.Conv2d(8, 8, 3)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.head = nn.Linear(8, 10)


@pytest.mark.parametrize(
    "first_conv, freeze, on_fallback",
    [
        ("fallback", False, ["stem.weight"]),
        ("muon", False, []),
        ("fallback", True, ["conv.weight"]),  # the first TRAINABLE filter is the input layer's stand-in
    ],
)
def test_first_conv_goes_to_the_fallback_by_default(first_conv, freeze, on_fallback):
    from optbench.optim import build_optimizer

    opt = build_optimizer("muon", _Cnn(freeze), first_conv=first_conv)
    muon = [n for g in opt.param_groups if g["use_muon"] for n in g["param_names"]]
    emb = [n for g in opt.param_groups if g["role"] == "embedding" for n in g["param_names"]]
    assert emb == on_fallback
    assert set(muon) == {"stem.weight", "conv.weight", "conv2.weight"} - set(on_fallback) - (
        {"stem.weight"} if freeze else set()
    )
    # the fallback (AdamW) trains it, with the embedding rule's lr
    group = next((g for g in opt.param_groups if g["role"] == "embedding"), None)
    assert (group is None) == (not on_fallback)
    if group is not None:
        assert not group["use_muon"] and group["lr"] == pytest.approx(3e-4) and "betas" in group


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.momentum_form=heavy", r"optimizer.momentum_form='heavy' is invalid; valid choices: lerp, sgd"),
        ("optimizer.ns_norm=max", r"optimizer.ns_norm='max' is invalid; valid choices: clamp, add"),
        ("optimizer.ns_dtype=fp16", r"optimizer.ns_dtype='fp16' is invalid; valid choices: bf16, fp32"),
        (
            "optimizer.scale_rule=spectral",
            r"optimizer.scale_rule='spectral' is invalid; valid choices: original, none, match_rms_adamw",
        ),
        ("optimizer.weight_renorm=maybe", r"optimizer.weight_renorm='maybe' is invalid; valid choices: true, false"),
        ("optimizer.first_conv=head", r"optimizer.first_conv='head' is invalid; valid choices: fallback, muon"),
        ("optimizer.ns_coefficients=[1,2]", r"optimizer.ns_coefficients=\[1, 2\] is invalid: must be three numbers"),
    ],
)
def test_bad_muon_options_are_one_line(make_cfg, override, message):
    from optbench.errors import ConfigError
    from optbench.optim import validate_optimizer_config

    with pytest.raises(ConfigError, match=message):
        validate_optimizer_config(make_cfg(["optimizer=muon", override]).optimizer)


def test_first_conv_is_refused_for_other_optimizers(make_cfg):
    from optbench.errors import ConfigError
    from optbench.optim import validate_optimizer_config

    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) \['first_conv'\] for optimizer 'adamw'"):
        validate_optimizer_config(make_cfg(["optimizer=adamw", "+optimizer.first_conv=muon"]).optimizer)


def test_a_checkpoint_from_before_the_options_loads_with_todays_behaviour():
    ps = [nn.Parameter(torch.randn(8, 8))]
    opt = Muon([{"params": ps, "role": "matrix"}])
    _run(opt, ps, _grads([(8, 8)], 1))
    state = opt.state_dict()
    for g in state["param_groups"]:
        for k in ("momentum_form", "ns_norm", "ns_dtype", "scale_rule", "weight_renorm"):
            g.pop(k)
    fresh = Muon([{"params": ps, "role": "matrix"}], momentum_form="sgd")
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["momentum_form"] == "lerp" and fresh.param_groups[0]["ns_dtype"] == "bf16"
    _run(fresh, ps, _grads([(8, 8)], 1))
