"""No per-step host syncs in the loop with weight averaging on, and the averaging update is
bit-identical to torch.optim.swa_utils.AveragedModel's; the log-step grad norm is off the clock."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from optbench.train.averaging import Averager

SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def count_syncs(monkeypatch):
    """Counts the Python-level calls that read a tensor's value on the host (each a device sync on
    a GPU). Patching torch.Tensor catches them on the CPU too, where nothing would stall. Not
    counted: torch.optim's reads of its step counters (optimizer.py _get_value), which torch keeps
    on the CPU beside GPU parameters (no device sync)."""
    counter = {"n": 0}
    for name in SYNCS:
        real = getattr(torch.Tensor, name)

        def wrapped(self, *a, _real=real, **k):
            caller = sys._getframe(1).f_code
            if not (caller.co_name == "_get_value" and caller.co_filename.endswith("optim/optimizer.py")):
                counter["n"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return counter


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))


def _train_a_little(model, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        model(torch.randn(8, 4, generator=g)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        yield


@pytest.mark.parametrize("kind,every", [("ema", 1), ("swa", 2)])
def test_averaging_is_bit_identical_to_averaged_model(kind, every):
    model = bn_model()
    ours = Averager(model, kind, ema_decay=0.9, start_step=2, every=every)
    fn = get_ema_multi_avg_fn(0.9) if kind == "ema" else None
    theirs = AveragedModel(copy.deepcopy(model), multi_avg_fn=fn, use_buffers=kind == "ema")
    for step, _ in enumerate(_train_a_little(model, 9), start=1):
        ours.update(step)
        if step >= 2 and (step - 2) % every == 0:
            theirs.update_parameters(model)
    a, b = ours.averaged.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert int(a["n_averaged"]) == ours.updates == (8 if kind == "ema" else 4)


def test_averaging_update_reads_nothing_on_the_host(count_syncs):
    model = bn_model()
    for kind in ("ema", "swa"):
        averager = Averager(model, kind, ema_decay=0.9, start_step=0, every=1, ema_warmup=kind == "ema")
        count_syncs["n"] = 0
        for step in range(1, 6):
            averager.update(step)
        assert count_syncs["n"] == 0, kind  # AveragedModel.update_parameters: 2 per update


def test_ema_warmup_counts_one_decay_per_update_with_bn():
    """A BN model has an integer buffer: one update, one step of the warmup (torch's grouped call
    would count it once per dtype group)."""
    averager = Averager(bn_model(), "ema", ema_decay=0.999, start_step=0, every=1, ema_warmup=True)
    for step in range(1, 6):
        averager.update(step)
    assert averager.warmup.count == averager.updates - 1 == 4


def _steps_syncs(make_cfg, tmp_path, steps, extra, count_syncs):
    from optbench.train.loop import Trainer

    cfg = make_cfg(
        [
            "trainer.max_steps=%d" % steps,
            f"trainer.log_every={steps}",
            f"trainer.eval_every={steps}",
            "trainer.batch_size=16",
            "data.n_train=256",
            "data.n_test=32",
            "model.widths=[4,8,8]",
            *extra,
        ]
    )
    trainer = Trainer(cfg, tmp_path / f"run{steps}")
    seen = {}
    real_step = trainer.train_step

    def counted(micro_batches, want_grad_norm):
        before = count_syncs["n"]
        out = real_step(micro_batches, want_grad_norm)
        seen[trainer.step] = count_syncs["n"] - before
        return out

    trainer.train_step = counted
    trainer.run()
    return seen


@pytest.mark.parametrize(
    "extra", [["trainer.averaging.kind=ema"], ["trainer.averaging.kind=swa", "trainer.averaging.swa_start=0.0"]]
)
def test_train_steps_do_not_sync_with_averaging_on(make_cfg, tmp_path, count_syncs, extra):
    seen = _steps_syncs(make_cfg, tmp_path, 6, extra, count_syncs)
    assert seen and all(v == 0 for v in seen.values()), seen


def test_log_step_grad_norm_is_off_the_clock_and_only_measured_when_logged(make_cfg, tmp_path, monkeypatch):
    """Each measurement advances the clock's time source by 100 s: none of it may be counted."""
    import time

    import optbench.train.clock as clock_module
    from optbench.train.loop import Trainer

    offset, calls = [0.0], []
    real = time.perf_counter
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: real() + offset[0])
    real_measure = Trainer.measure_grad_norm

    def slow(self):
        offset[0] += 100.0
        calls.append(self.step)
        return real_measure(self)

    monkeypatch.setattr(Trainer, "measure_grad_norm", slow)
    common = [
        "trainer.max_steps=6",
        "trainer.log_every=2",
        "trainer.eval_every=6",
        "trainer.batch_size=16",
        "data.n_train=256",
        "data.n_test=32",
        "model.widths=[4,8,8]",
        "trainer.grad_clip=0",
    ]
    summary = Trainer(make_cfg(common), tmp_path / "a").run()
    assert calls == [0, 1, 3, 5] and summary["train_time_s"] < 100  # log steps 1, 2, 4, 6
    calls.clear()
    Trainer(make_cfg([*common, "logger=none"]), tmp_path / "b").run()
    assert calls == []  # nothing logs it: not measured


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device syncs exist only on a GPU")
def test_cuda_train_steps_do_not_sync_with_averaging_on(make_cfg, tmp_path):
    """On a GPU, torch itself reports every sync: none may happen in a non-log train step."""
    from optbench.train.loop import Trainer

    cfg = make_cfg(
        [
            "trainer.device=cuda",
            "trainer.max_steps=6",
            "trainer.log_every=6",
            "trainer.eval_every=6",
            "trainer.batch_size=16",
            "data.n_train=256",
            "data.n_test=32",
            "model.widths=[4,8,8]",
            "trainer.averaging.kind=ema",
        ]
    )
    trainer = Trainer(cfg, tmp_path / "run")
    real_step = trainer.train_step

    def strict(micro_batches, want_grad_norm):
        if want_grad_norm:  # a log step may read its values
            return real_step(micro_batches, want_grad_norm)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real_step(micro_batches, want_grad_norm)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    trainer.train_step = strict
    assert trainer.run()["status"] == "completed"


@pytest.mark.parametrize(
    "averaging",
    [
        ["trainer.averaging.kind=ema", "trainer.averaging.ema_warmup=true"],
        ["trainer.averaging.kind=swa", "trainer.averaging.swa_start=0.25"],
    ],
)
def test_resumed_averaging_is_bit_identical(make_cfg, tmp_path, averaging):
    """Stopped after step 4 (a signal: checkpoint, then out) and run again: the averaged weights at
    the end are the uninterrupted run's, bit for bit."""
    import signal

    from optbench.train import checkpoint as ckpt
    from optbench.train.loop import Trainer

    common = [
        "trainer.max_steps=8",
        "trainer.log_every=2",
        "trainer.eval_every=8",
        "trainer.batch_size=16",
        "data.n_train=256",
        "data.n_test=32",
        "model.widths=[4,8,8]",
        "trainer.save_final=true",
        *averaging,
    ]
    straight = Trainer(make_cfg(common), tmp_path / "straight")
    straight.run()
    first = Trainer(make_cfg(common), tmp_path / "resumed")
    real_step = first.train_step

    def stop_after_4(micro_batches, want_grad_norm):
        out = real_step(micro_batches, want_grad_norm)
        if first.step == 3:  # this is step 4
            first.signals.received = signal.SIGTERM
        return out

    first.train_step = stop_after_4
    assert first.run()["status"] == "interrupted" and first.step == 4
    second = Trainer(make_cfg(common), tmp_path / "resumed")
    assert second.run()["status"] == "completed"
    a = ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path / "straight"), torch.device("cpu"))["averager"]
    b = ckpt.read_checkpoint(ckpt.checkpoint_path(tmp_path / "resumed"), torch.device("cpu"))["averager"]
    assert a["updates"] == b["updates"] > 0
    for k in a["averaged"]:
        assert torch.equal(a["averaged"][k], b["averaged"][k]), k
