"""task.kind=diagnostic: every problem is well-formed, learns under AdamW, and its difficulty matters."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from optbench import CONF_DIR
from optbench.errors import ConfigError
from optbench.tasks import diagnostics as diag

DIAG_TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("diag_*.yaml"))


@pytest.fixture(scope="module")
def base_cfg():
    from optbench.config import compose

    cfg = compose(["task=diag_quadratic", "trainer.progress=false"])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def task_cfg(base, name: str, difficulty: str | None = None, seed: int = 0):
    """`task=<name>` without a Hydra compose per case (the task group is the only difference)."""
    cfg = copy.deepcopy(base)
    task = OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml").task
    with open_dict(cfg):
        cfg.task = task
        cfg.seed = seed
        if difficulty:
            cfg.task.difficulty = difficulty
    return cfg


def test_there_are_at_least_twelve_problems_each_yaml_complete():
    assert len(DIAG_TASKS) >= 12
    problems = set()
    for name in DIAG_TASKS:
        path = CONF_DIR / "task" / f"{name}.yaml"
        lines = path.read_text().splitlines()
        assert lines[0] == "# @package _global_" and lines[1].startswith("# Failure mode: "), name
        t = OmegaConf.load(path).task
        assert t.name == name and t.kind == "diagnostic" and t.description
        assert t.difficulty in diag.DIFFICULTIES and set(t.levels) == set(diag.DIFFICULTIES), name
        assert isinstance(t.target, float) and t.target > 0 and t.metric == "loss" and t.mode == "min"
        problems.add(t.problem)
    assert len(problems) >= 12  # heavy-tail noise reuses noisy_quadratic with another distribution


@pytest.mark.parametrize("name", DIAG_TASKS)
def test_each_problem_learns_with_adamw_and_difficulty_changes_it(base_cfg, name):
    from optbench.config import validate
    from optbench.tasks import build_task

    cfg = task_cfg(base_cfg, name)
    validate(cfg)
    task = build_task(cfg, torch.device("cpu"))
    start = task.evaluate(task.model)["loss"]
    opt = torch.optim.AdamW(task.model.parameters(), lr=0.03, weight_decay=0.0)
    for _ in range(30):
        (batch,) = next(task.train_batches)
        opt.zero_grad()
        task.loss(task.model, batch).backward()
        opt.step()
    end = task.evaluate(task.model)["loss"]
    assert 0 <= end < start, (name, start, end)
    # the levels set different problems: their parameters or their starting values differ
    easy, hard = (build_task(task_cfg(base_cfg, name, d), torch.device("cpu")) for d in ("easy", "hard"))
    assert easy.summary_extra["problem_info"] != hard.summary_extra["problem_info"]
    assert easy.summary_extra["difficulty"] == "easy" and hard.summary_extra["difficulty"] == "hard"


def test_same_instance_every_seed_new_start_per_seed(base_cfg):
    from optbench.tasks import build_task

    a, b, c = (build_task(task_cfg(base_cfg, "diag_layer_scale", seed=s), torch.device("cpu")) for s in (0, 0, 1))
    assert a.evaluate(a.model) == b.evaluate(b.model)
    a, c = (build_task(task_cfg(base_cfg, "diag_deep_linear", seed=s), torch.device("cpu")) for s in (0, 1))
    assert not torch.equal(a.model.w0, c.model.w0)


def test_delayed_gradient_is_the_one_from_k_steps_ago(base_cfg):
    """SGD on the task equals a hand-written SGD whose step t uses ∇f(θ_{t−k})."""
    from optbench.tasks import build_task

    cfg = task_cfg(base_cfg, "diag_delayed")
    with open_dict(cfg):
        cfg.task.levels.medium.delay = 3
    task = build_task(cfg, torch.device("cpu"))
    theta = task.model.theta
    h = diag._spectrum(64, 10.0).view(8, 8)
    lr = 0.5
    thetas = [theta.detach().clone()]
    opt = torch.optim.SGD([theta], lr=lr)
    for step in range(8):
        (batch,) = next(task.train_batches)
        opt.zero_grad()
        out = task.loss(task.model, batch)
        assert out.item() == pytest.approx(0.5 * (h * theta * theta).sum().item())  # valued at the objective
        out.backward()
        opt.step()
        stale = thetas[max(step - 3, 0)]
        thetas.append(thetas[-1] - lr * h * stale)
        assert torch.allclose(theta.detach(), thetas[-1], atol=1e-6), step
    # resumable: the history travels in the task's state
    state = task.state_dict()
    assert state["step"] == 8 and sorted(state["problem"]["history"]) == [4, 5, 6, 7]


def test_bilinear_surrogate_gradient_is_the_rotational_field(base_cfg):
    from optbench.tasks import build_task

    cfg = task_cfg(base_cfg, "diag_bilinear", "medium")  # eps 0.1
    task = build_task(cfg, torch.device("cpu"))
    m = task.model
    (batch,) = next(task.train_batches)
    out = task.loss(m, batch)
    out.backward()
    a = diag._orthogonal(16, torch.Generator().manual_seed(0))
    x, y = m.x.detach().reshape(-1), m.y.detach().reshape(-1)
    assert torch.allclose(m.x.grad.reshape(-1), a @ y + 0.1 * x, atol=1e-5)
    assert torch.allclose(m.y.grad.reshape(-1), -a.T @ x + 0.1 * y, atol=1e-5)
    assert out.item() == pytest.approx(task.evaluate(m)["loss"]) == pytest.approx(1.0)


def test_a_diagnostic_trains_in_the_loop_and_reports_its_problem(run_train):
    summary, _ = run_train(
        [
            "task=diag_delayed",
            "task.difficulty=easy",
            "optimizer=sgd",
            "optimizer.lr=0.3",
            "trainer.max_steps=60",
            "trainer.eval_every=20",
        ]
    )
    assert summary["status"] == "completed" and summary["reached"] and summary["steps_to_target"] <= 60
    assert summary["problem"] == "delayed" and summary["problem_info"]["delay"] == 1


@pytest.mark.parametrize(
    "override,message",
    [
        ("task.difficulty=extreme", "task.difficulty='extreme' is invalid; valid choices: easy, medium, hard"),
        ("task.problem=nope", "task.problem='nope' is invalid"),
        ("+task.levels.hard.bogus=1", "task.levels.hard.bogus is not a parameter of problem quadratic"),
        ("task.cpu_threads=0", "task.cpu_threads=0 is invalid"),
    ],
)
def test_bad_diagnostic_settings_are_refused(make_cfg, override, message):
    from optbench.config import validate

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(make_cfg(["task=diag_quadratic", override]))
