"""task.kind=nqm: the noisy quadratic model's loss under SGD matches its closed form."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from optbench import CONF_DIR
from optbench.tasks import nqm


@pytest.fixture(scope="module")
def base_cfg():
    from optbench.config import compose

    cfg = compose(["task=nqm", "trainer.progress=false"])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def test_defaults_are_the_papers_setup():
    t = OmegaConf.load(CONF_DIR / "task" / "nqm.yaml").task
    assert (t.dim, t.hessian_power, t.noise_power, t.noise_scale, t.init) == (10000, 1.0, 1.0, 1.0, 1.0)
    h = nqm.spectrum(4, 1.0)
    assert torch.allclose(h, torch.tensor([1, 1 / 2, 1 / 3, 1 / 4], dtype=torch.float64))


def test_closed_form_equals_the_second_moment_recursion():
    """E[θ²_{t+1}] = (1 − αh)² E[θ_t²] + α² c/B, iterated, against sgd_expected_loss's closed form."""
    h = nqm.spectrum(500, 1.0)
    c, theta0 = 0.7 * h, torch.linspace(-1, 2, 500, dtype=torch.float64)
    lr, b = 1.3, 8
    second = theta0**2
    for t in range(1, 301):
        second = (1 - lr * h) ** 2 * second + lr**2 * c / b
        if t in (1, 7, 300):
            assert nqm.sgd_expected_loss(h, c, theta0, lr, b, t) == pytest.approx(
                0.5 * float((h * second).sum()), rel=1e-12
            )
    assert nqm.sgd_expected_loss(h, c, theta0, 0.0, b, 50) == pytest.approx(0.5 * float((h * theta0**2).sum()))


def run_sgd(cfg, lr: float, steps: int) -> list[float]:
    """SGD on the task exactly as the loop drives it: task.loss(...).backward(), optimizer.step()."""
    from optbench.tasks import build_task

    task = build_task(cfg, torch.device("cpu"))
    opt = torch.optim.SGD(task.model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        micro = next(task.train_batches)
        opt.zero_grad()
        for batch in micro:
            (task.loss(task.model, batch) / len(micro)).backward()
        opt.step()
        losses.append(task.evaluate(task.model)["loss"])
    return losses


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_sgd_loss_matches_the_closed_form_and_would_catch_a_wrong_noise_scale(base_cfg, grad_accum):
    """Monte Carlo at the paper's setup, B = 2: the loss averaged over steps 51..250 and 3 seeds (the
    top coordinates' noise is nearly independent step to step) within 4% of the closed form's
    average; a noise variance off by 2x moves that average by > 25%."""
    lr, b, steps, seeds = 1.0, 2, 250, 3
    h, ones = nqm.spectrum(10000, 1.0), torch.ones(10000, dtype=torch.float64)
    window = range(51, steps + 1)
    expected = sum(nqm.sgd_expected_loss(h, h, ones, lr, b, t) for t in window) / len(window)
    doubled = sum(nqm.sgd_expected_loss(h, 2 * h, ones, lr, b, t) for t in window) / len(window)
    got = 0.0
    for seed in range(seeds):
        cfg = copy.deepcopy(base_cfg)
        with open_dict(cfg):
            cfg.seed, cfg.trainer.batch_size, cfg.trainer.grad_accum = seed, b, grad_accum
        losses = run_sgd(cfg, lr, steps)
        got += sum(losses[t - 1] for t in window) / len(window) / seeds
    assert got == pytest.approx(expected, rel=0.04), (got, expected)
    assert abs(doubled - expected) / expected > 0.25  # the tolerance cannot pass a noise scale off by 2x


def test_noise_is_a_function_of_seed_and_step(base_cfg):
    cfg = copy.deepcopy(base_cfg)
    with open_dict(cfg):
        cfg.trainer.batch_size = 4
    a, b = run_sgd(cfg, 0.5, 5), run_sgd(cfg, 0.5, 5)
    assert a == b
    with open_dict(cfg):
        cfg.seed = 1
    assert run_sgd(cfg, 0.5, 5) != a


def test_nqm_trains_in_the_loop(run_train):
    summary, _ = run_train(
        [
            "task=nqm",
            "optimizer=sgd",
            "optimizer.lr=1.0",
            "trainer.max_steps=40",
            "trainer.eval_every=20",
            "trainer.batch_size=256",
        ]
    )
    assert summary["status"] == "completed"
    assert summary["final_metric"] < 0.6 * summary["nqm"]["initial_loss"]
    assert summary["nqm"]["batch_size"] == 256


def test_layout_does_not_change_the_problem(base_cfg):
    """θ as a 100x100 matrix (default) or a 10^4 vector: the same SGD trajectory, loss for loss."""
    cfg = copy.deepcopy(base_cfg)
    with open_dict(cfg):
        cfg.trainer.batch_size = 4
    matrix = run_sgd(cfg, 0.5, 5)
    with open_dict(cfg):
        cfg.task.shape = [10000]
    assert run_sgd(cfg, 0.5, 5) == pytest.approx(matrix, rel=1e-6)


def test_bad_shape_is_refused(make_cfg):
    from optbench.config import validate
    from optbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"task.shape=\[100, 99\] is invalid"):
        validate(make_cfg(["task=nqm", "task.shape=[100,99]"]))
