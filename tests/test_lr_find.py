"""LR range test: the ramp, divergence stop on a quadratic whose stability limit is known,
the suggestions on a curve with a known steepest point, state restoration, and the CLI."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from optbench.lr_find import exponential_ramp, lr_range_test, suggestions


def test_ramp_is_exponential_between_the_ends():
    lrs = exponential_ramp(1e-4, 1.0, 5)
    assert lrs == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_suggestions_on_a_known_curve():
    # loss = 1 - tanh(log10(lr) + 2) for lr < 1, rising steeply after: steepest descent at lr 1e-2
    lrs = np.logspace(-5, 0.5, 221)
    x = np.log10(lrs)
    loss = np.where(x < 0, 1 - np.tanh(x + 2), 1 - np.tanh(2) + 5 * x**2)
    steep, min10 = suggestions(lrs, loss)
    assert steep == pytest.approx(1e-2, rel=0.06)
    assert min10 == pytest.approx(lrs[np.argmin(loss)] / 10)


class Quadratic(torch.nn.Module):
    """loss = h/2 |w|^2: gradient descent is stable for lr < 2/h and diverges beyond."""

    def __init__(self, h: float):
        super().__init__()
        self.h = h
        self.w = torch.nn.Parameter(torch.ones(4))

    def forward(self, _):
        return 0.5 * self.h * (self.w**2).sum()


def test_ramp_stops_past_the_stability_limit_and_restores_state():
    h = 4.0  # stability limit lr = 2/h = 0.5
    model = Quadratic(h)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(None).backward()
    opt.step()  # the optimizer has state (momentum buffer) to restore
    opt.zero_grad()
    before_w = model.w.detach().clone()
    before_buf = opt.state[model.w]["momentum_buffer"].clone()
    plain = torch.optim.SGD(model.parameters(), lr=0.1)  # no momentum: the 2/h limit is exact
    result = lr_range_test(
        model,
        plain,
        itertools.repeat([None]),
        lambda m, b: m(b),
        start=1e-3,
        end=100.0,
        steps=60,
        smoothing=0.0,
        diverge=4.0,
    )
    assert result.stopped_early
    assert result.lrs[-1] > 2 / h  # it stopped only once lr passed 2/h...
    assert result.lrs[-1] < 2 / h * (1e5 ** (4 / 59))  # ...within a few ramp steps of it
    # below the limit the loss only falls
    stable = [l for lr, l in zip(result.lrs, result.losses) if lr < 2 / h]
    assert all(b <= a for a, b in zip(stable, stable[1:]))
    assert torch.equal(model.w, before_w)
    assert torch.equal(opt.state[model.w]["momentum_buffer"], before_buf)
    assert plain.param_groups[0]["lr"] == 0.1 and not plain.state


def test_ramp_keeps_group_ratios_and_restores_a_real_model(make_cfg):
    from optbench.optim import build_optimizer_from_config
    from optbench.tasks import build_task

    cfg = make_cfg(
        [
            "optimizer=adamw",
            "optimizer.lr=0.01",
            "optimizer.groups.scalar.lr_mult=0.5",
            "trainer.batch_size=16",
            "data.n_train=64",
            "data.n_test=32",
        ]
    )
    task = build_task(cfg, torch.device("cpu"))
    model = task.model
    opt = build_optimizer_from_config(cfg.optimizer, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}  # includes BN running stats
    seen = []

    def loss(m, batch):
        seen.append({g["role"]: g["lr"] for g in opt.param_groups})
        return task.loss(m, batch)

    result = lr_range_test(model, opt, task.train_batches, loss, start=1e-4, end=1e-1, steps=6, reference_lr=0.01)
    assert len(result.lrs) == 6
    for lr, groups in zip(result.lrs, seen):
        assert groups["matrix"] == pytest.approx(lr) and groups["scalar"] == pytest.approx(0.5 * lr)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    lrs = {g["role"]: g["lr"] for g in opt.param_groups}
    assert lrs["matrix"] == pytest.approx(0.01) and lrs["scalar"] == pytest.approx(0.005)
    assert not opt.state


def test_cli_prints_a_suggestion_and_writes_the_plot(tmp_path, data_root):
    from tests.conftest import optbench_cli

    out = tmp_path / "lr.png"
    r = optbench_cli(
        "lr-find",
        "task=cifar10_synthetic",
        "optimizer=sgd",
        "trainer.batch_size=32",
        "data.n_train=256",
        "data.n_test=64",
        "--steps",
        "12",
        "--start",
        "1e-4",
        "--end",
        "100",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert "suggested lr at batch size 32:" in r.stdout and f"plot: {out}" in r.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = json.loads(out.with_suffix(".json").read_text())
    assert curve["lrs"][0] == pytest.approx(1e-4) and len(curve["lrs"]) == len(curve["losses"])
    assert 1e-4 <= curve["steepest"] <= 100 and math.isfinite(curve["smoothed"][0])


def test_cli_bad_range_is_one_line(capsys):
    from optbench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["lr-find", "--start", "1", "--end", "0.1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "need 0 < start < end" in err
