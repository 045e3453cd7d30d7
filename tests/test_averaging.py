"""Weight averaging (EMA, SWA) and Schedule-Free evaluation: the evaluation sees the right
weights, and BatchNorm statistics are measured where the evaluated weights are."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from optbench.train.averaging import Averager, build_averager, evaluation_model, recompute_bn


def small_bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))


class FakeTask:
    """Only what averaging needs: a fresh, seed-determined stream of training micro-batches."""

    def __init__(self, n_batches=60):
        self.n = n_batches

    def make_train_batches(self, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(self.n):
            yield [(torch.randn(8, 4, generator=g) * 3 + 1, torch.zeros(8, dtype=torch.long))]


def _perturb(model, step):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.full_like(p, 0.1 * step))
        model[1].running_mean.add_(1.0)


def test_ema_averages_weights_and_bn_buffers():
    model = small_bn_model()
    avg = Averager(model, "ema", ema_decay=0.9, start_step=0, every=1)
    expected = None
    for step in range(1, 6):
        _perturb(model, step)
        avg.update(step)
        current = {k: v.clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}
        expected = current if expected is None else {k: 0.9 * expected[k] + 0.1 * current[k] for k in current}
    got = avg.averaged.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k].float(), v, msg=k)


def test_swa_is_the_mean_after_start_and_recomputes_bn():
    model = small_bn_model()
    avg = Averager(model, "swa", ema_decay=0.0, start_step=3, every=2)
    snapshots = []
    for step in range(1, 10):
        _perturb(model, step)
        avg.update(step)
        if step >= 3 and (step - 3) % 2 == 0:
            snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert avg.updates == len(snapshots) == 4
    module = avg.averaged.module
    for n, p in module.named_parameters():
        torch.testing.assert_close(p, torch.stack([s[n] for s in snapshots]).mean(0), msg=n)
    task = FakeTask()
    evaluated = avg.prepare_eval(task)
    assert evaluated is module
    # independent reference: per-batch statistics of the averaged first layer's output, averaged
    # over the 50 batches the recomputation reads
    with torch.no_grad():
        feats = torch.stack([module[0](x) for mb in list(task.make_train_batches(10_000))[:50] for x, _ in mb])
    torch.testing.assert_close(module[1].running_mean, feats.mean(1).mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(module[1].running_var, feats.var(1, unbiased=True).mean(0), rtol=1e-4, atol=1e-5)
    assert module[1].momentum == model[1].momentum  # restored after the cumulative pass


def test_build_averager_reads_the_trainer_keys():
    model = small_bn_model()
    cfg = OmegaConf.create({"kind": "swa", "ema_decay": 0.999, "swa_start": 0.75, "swa_every": 5})
    avg = build_averager(cfg, model, max_steps=200)
    assert (avg.kind, avg.start_step, avg.every) == ("swa", 150, 5)
    assert build_averager(OmegaConf.create({"kind": "none"}), model, 10) is None


class _ScheduleFreeLike:
    def train(self):
        pass

    def eval(self):
        pass


def test_evaluation_model_recomputes_bn_for_schedule_free_only():
    task = FakeTask()
    for optimizer, recomputed in ((_ScheduleFreeLike(), True), (torch.optim.SGD(small_bn_model().parameters()), False)):
        model = small_bn_model()
        model[1].running_mean.fill_(100.0)
        assert evaluation_model(model, optimizer, None, task) is model
        assert (model[1].running_mean.abs().max() < 50) == recomputed


def tiny(data_root):
    return [
        "trainer.max_steps=20",
        "trainer.batch_size=32",
        "trainer.eval_every=20",
        "trainer.log_every=10",
        "model.widths=[8,16,16]",
        "data.n_train=2000",
        "data.n_test=500",
        f"data.root={data_root}/cifar10_synthetic_tiny",
    ]


def _evaluate(trainer, module):
    module.eval()
    with torch.no_grad():
        return trainer.task.evaluate(module)


def test_the_loop_evaluates_the_swa_weights(make_cfg, data_root, tmp_path):
    from optbench.train.loop import Trainer

    cfg = make_cfg(
        ["optimizer=momentum", "trainer.averaging.kind=swa", "trainer.averaging.swa_start=0.5", *tiny(data_root)]
    )
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.run()
    assert trainer.averager.updates == 11  # steps 10..20
    recorded = trainer.last_eval["test_loss"]
    averaged = _evaluate(trainer, copy.deepcopy(trainer.averager.averaged.module))["test_loss"]
    raw = _evaluate(trainer, copy.deepcopy(trainer.model))["test_loss"]
    assert recorded == pytest.approx(averaged, abs=1e-6)
    assert abs(recorded - raw) > 1e-4


def test_schedule_free_is_evaluated_at_x_with_bn_measured_there(make_cfg, data_root, tmp_path):
    from optbench.train.loop import Trainer

    cfg = make_cfg(["optimizer=sf_adamw", *tiny(data_root)])
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.run()
    recorded = trainer.last_eval["test_loss"]
    at_y = _evaluate(trainer, copy.deepcopy(trainer.model))["test_loss"]  # the loop left train mode (y)
    trainer.optimizer.eval()  # weights -> x
    at_x = copy.deepcopy(trainer.model)
    for m in at_x.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(5.0)  # whatever was there must not matter
    recompute_bn(at_x, trainer.task)
    assert recorded == pytest.approx(_evaluate(trainer, at_x)["test_loss"], abs=1e-6)
    assert abs(recorded - at_y) > 1e-4


def test_ema_warmup_follows_its_formula():
    """decay_t = min(decay, (1+t)/(10+t)) for the t-th averaging update (the first update copies)."""
    model = nn.Linear(3, 1, bias=False)
    averager = Averager(model, "ema", ema_decay=0.999, start_step=0, every=1, ema_warmup=True)
    expected = None
    for step in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(float(step))
        averager.update(step)
        if expected is None:
            expected = float(step)
        else:
            t = step - 1
            decay = min(0.999, (1 + t) / (10 + t))
            expected = decay * expected + (1 - decay) * step
        assert averager.averaged.module.weight[0, 0].item() == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- airbench94's Lookahead-EMA
def test_lookahead_resets_the_live_weights_to_the_slow_copy_on_its_schedule():
    """Transcription: after step t with t % k == 0, slow = d_t slow + (1 - d_t) live and live = slow,
    d_t = 0.95^5 (t / T)^3; after the last step live = slow (decay 1). BN buffers included."""
    from optbench.train.averaging import Lookahead

    model = small_bn_model()
    total, k = 12, 5
    look = Lookahead(model, total, every=k, decay=0.95**5, power=3)
    floats = lambda: {n: v.clone().double() for n, v in model.state_dict().items() if v.is_floating_point()}
    slow = floats()
    for step in range(1, total + 1):
        _perturb(model, step)
        live = floats()
        look.update(step)
        if step % k == 0:
            d = 0.95**5 * (step / total) ** 3
            assert look.decay_at(step) == pytest.approx(d, rel=1e-6)
            slow = {n: d * slow[n] + (1 - d) * live[n] for n in slow}
            expected = slow
        elif step == total:
            expected = slow  # the final update: the weights become the slow copy
        else:
            expected = live  # untouched between updates
        for n, v in model.state_dict().items():
            if v.is_floating_point():
                torch.testing.assert_close(v.double(), expected[n], rtol=1e-5, atol=1e-6, msg=(step, n))
    assert look.updates == 3  # steps 5, 10 and the final one
    assert model[1].num_batches_tracked.dtype == torch.long  # integer buffers are left alone


def test_lookahead_evaluates_the_live_model_and_round_trips_its_state():
    from optbench.train.averaging import Lookahead

    model = small_bn_model()
    cfg = OmegaConf.create(
        {
            "kind": "lookahead",
            "lookahead_every": 2,
            "lookahead_decay": 0.5,
            "lookahead_power": 1,
            "lookahead_final": False,
        }
    )
    look = build_averager(cfg, model, max_steps=4)
    assert isinstance(look, Lookahead) and (look.every, look.final) == (2, False)
    assert evaluation_model(model, object(), look, FakeTask()) is model
    _perturb(model, 1)
    look.update(2)
    state = copy.deepcopy(look.state_dict())
    other = Lookahead(small_bn_model(), 4, every=2, decay=0.5, power=1)
    other.load_state_dict(state)
    assert other.updates == 1 and all(torch.equal(other.slow[n], v) for n, v in look.slow.items())


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.averaging.lookahead_every=0", "lookahead_every=0 is invalid"),
        ("trainer.averaging.lookahead_decay=1.5", "lookahead_decay=1.5 is invalid"),
        ("trainer.clock_includes=[data_init,compile]", "valid choices: data_init, final_eval"),
    ],
)
def test_bad_lookahead_and_clock_keys_are_one_line(make_cfg, override, message):
    from optbench.config import validate
    from optbench.errors import ConfigError

    cfg = make_cfg(["trainer.averaging.kind=lookahead", override])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate(cfg)
