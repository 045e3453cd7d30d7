"""torch.optim entries run torch's fused (else foreach) kernels, with the same numbers as torch's
per-tensor loop; libraries other than torch are left as they are."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from optbench.optim import build_optimizer


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 4))


def _steps(model, opt, n=5):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


@pytest.mark.parametrize(
    "name, cls, kernel",
    [
        ("adamw", torch.optim.AdamW, "fused"),
        ("adam", torch.optim.Adam, "fused"),
        ("nesterov", torch.optim.SGD, "fused"),
        ("nadam", torch.optim.NAdam, "foreach"),
    ],
)
def test_torch_entries_use_the_fast_kernel_with_unchanged_numbers(name, cls, kernel):
    model, ref_model = _net(), _net()
    opt = build_optimizer(name, model)
    assert all(g[kernel] for g in opt.param_groups)
    # the reference: the same groups through torch's default (per-tensor loop on CPU)
    ref = cls(
        [
            {
                **{k: v for k, v in g.items() if k not in ("params", "fused", "foreach")},
                "params": [dict(ref_model.named_parameters())[n] for n in g["param_names"]],
            }
            for g in opt.param_groups
        ],
        foreach=False,
    )
    _steps(model, opt)
    _steps(ref_model, ref)
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_users_choice_wins_and_other_libraries_get_nothing():
    assert not any(g["fused"] for g in build_optimizer("adamw", _net(), foreach=True).param_groups)
    lion = build_optimizer("lion", _net())
    assert not lion.param_groups[0].get("fused") and not lion.param_groups[0].get("foreach")
    # Muon's AdamW fallback is a torch entry too
    muon = build_optimizer("muon", _net())
    assert muon.fallback.param_groups[0]["fused"]


def test_channels_last_weights_get_foreach_not_fused():
    # torch's fused CPU SGD pairs memory, not indices: a channels_last weight with a contiguous
    # momentum/grad gets a wrong update, so such models take the foreach kernels
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8, 2)).to(memory_format=torch.channels_last)
    opt = build_optimizer("nesterov", model)
    assert all(g["foreach"] and not g["fused"] for g in opt.param_groups)
    ref_model = copy.deepcopy(model)
    names = dict(ref_model.named_parameters())
    ref = torch.optim.SGD(
        [
            {
                **{k: v for k, v in g.items() if k not in ("params", "fused", "foreach")},
                "params": [names[n] for n in g["param_names"]],
            }
            for g in opt.param_groups
        ],
        foreach=False,
    )
    for m in (model, ref_model):
        for p in m.parameters():
            p.grad = torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape).sin()  # contiguous grads
    opt.step(), ref.step()
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
