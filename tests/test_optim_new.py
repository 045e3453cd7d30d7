"""Issue 15's optimizers of the current literature, and your own optimizer without editing optbench.

Each new library optimizer: a step through optbench equals the library class built directly with
the same role groups; it trains the synthetic CIFAR task; Cautious AdamW (our code) follows a float64
transcription of the paper; Schedule-Free around any base matches schedulefree's wrapper, evaluates
at x and resumes. A user's class (written here, outside optbench) trains by import path and by a
yaml in a user config folder; bad targets and arguments are one line.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

from optbench.confdir import load_option
from optbench.errors import ConfigError
from optbench.optim import OPTIMIZERS, build_optimizer
from optbench.optim.groups import param_roles
from optbench.optim.registry import hyperparameters
from tests.conftest import optbench_cli
from tests.test_optim_zoo import NEW, POLICY, Net

LIBRARY = sorted(n for n in NEW if OPTIMIZERS[n].source == "pytorch-optimizer")
FAST = [
    "trainer.max_steps=3",
    "trainer.batch_size=16",
    "trainer.eval_every=3",
    "trainer.log_every=1",
    "model.widths=[4,8,8]",
    "data.n_train=256",
    "data.n_test=64",
]


def fast(data_root) -> list[str]:
    return [*FAST, f"data.root={data_root}/cifar10_synthetic_fast"]


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 7, (4, 6), generator=g), torch.randint(0, 5, (4,), generator=g)


def _steps(model, opt, n=3) -> None:
    for step in range(n):
        idx, y = _batch(step)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(idx), y).backward()
        torch.manual_seed(100 + step)  # Kron draws random probes and update decisions
        np.random.seed(100 + step)
        opt.step()


def direct_groups(model, name: str) -> list[dict]:
    """The role groups written out by hand: lr x lr_mult, weight decay where the rule says so;
    the Muon kin's non-matrix roles at their AdamW lr and decay, flagged use_muon=False."""
    cfg = load_option("optimizer", name)
    roles = param_roles(model)
    muon_kin = OPTIMIZERS[name].factory_name == "muon_family"
    groups = []
    for role in ("matrix", "embedding", "head", "scalar"):
        params = [p for n, p in model.named_parameters() if roles[n] == role]
        rule = POLICY[role]
        lr, wd = (
            (cfg["adamw_lr"], cfg["adamw_wd"])
            if muon_kin and role != "matrix"
            else (cfg["lr"], cfg.get("weight_decay", 0.0))
        )
        group = {"params": params, "lr": lr * rule["lr_mult"], "weight_decay": wd if rule["weight_decay"] else 0.0}
        if muon_kin:
            group["use_muon"] = role == "matrix"
        groups.append(group)
    return groups


@pytest.mark.parametrize("name", LIBRARY)
def test_a_step_matches_the_library_class_built_directly(name):
    torch.manual_seed(0)
    ours_model = Net()
    theirs_model = Net()
    theirs_model.load_state_dict(ours_model.state_dict())
    ours = build_optimizer(name, ours_model, groups=POLICY)
    spec = OPTIMIZERS[name]
    hp = {k: v for k, v in hyperparameters(load_option("optimizer", name)).items() if k not in ("lr", "weight_decay")}
    theirs = spec.constructor(direct_groups(theirs_model, name), **hp)
    assert type(ours) is type(theirs) is spec.constructor
    _steps(ours_model, ours)
    _steps(theirs_model, theirs)
    moved = False
    for (n, a), b in zip(ours_model.named_parameters(), theirs_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)
    for a, b in zip(ours_model.parameters(), Net().parameters()):
        moved |= not torch.equal(a, b)
    assert moved


@pytest.mark.parametrize("name", sorted(NEW))
def test_trains_the_synthetic_cifar_task(name, run_train, data_root):
    summary, run_dir = run_train([f"optimizer={name}", *fast(data_root)])
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if r.get("type") == "train"]
    assert summary["status"] == "completed" and summary["steps"] == 3 and len(losses) == 3
    assert all(math.isfinite(x) for x in losses) and summary["optimizer_state_bytes"] > 0
    assert summary["optimizer"] == name


# ------------------------------------------------------------------------------ Cautious AdamW
def c_adamw_transcription(x0, grads, lr, b1, b2, eps, wd):
    """Liang et al. 2024, Algorithm 1 (C-AdamW), float64: AdamW whose update u is multiplied by
    phi = 1[u g > 0] scaled by n / (nnz(phi) + 1)."""
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps)
        phi = (u * g > 0).double()
        u = u * phi * (phi.numel() / (phi.sum() + 1))
        x = x - lr * wd * x - lr * u
    return x


def test_cautious_adamw_follows_the_paper_in_float64():
    from optbench.optim.cautious import CautiousAdamW

    torch.manual_seed(0)
    x0 = torch.randn(6, 5, dtype=torch.float64)
    grads = [torch.randn(6, 5, dtype=torch.float64) for _ in range(6)]
    p = torch.nn.Parameter(x0.clone())
    opt = CautiousAdamW([p], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    expected = c_adamw_transcription(x0, grads, 1e-2, 0.9, 0.99, 1e-8, 0.1)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)
    # and the mask acts: plain AdamW lands elsewhere
    q = torch.nn.Parameter(x0.clone())
    plain = torch.optim.AdamW([q], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for g in grads:
        q.grad = g.clone()
        plain.step()
    assert (q - p).abs().max() > 1e-3


def test_cautious_lion_is_pytorch_optimizer_lion_with_its_cautious_mask():
    opt = build_optimizer("cautious_lion", Net())
    assert type(opt).__name__ == "Lion" and all(g["cautious"] is True for g in opt.param_groups)


# ------------------------------------------------------------------------------ Schedule-Free wrap
def test_sf_wrap_matches_schedulefree_wrapper_around_the_same_base():
    from schedulefree import ScheduleFreeWrapper

    torch.manual_seed(0)
    ours_model, theirs_model = Net(), Net()
    theirs_model.load_state_dict(ours_model.state_dict())
    ours = build_optimizer(
        "sf_wrap", ours_model, base="momentum", groups=POLICY, weight_decay=1e-3, weight_decay_at_y=0.01
    )
    cfg, mom = load_option("optimizer", "sf_wrap"), load_option("optimizer", "momentum")
    groups = [
        {**g, "lr": cfg["lr"] * POLICY[r]["lr_mult"], "weight_decay": 1e-3 if POLICY[r]["weight_decay"] else 0.0}
        for g, r in zip(direct_groups(theirs_model, "momentum"), ("matrix", "embedding", "head", "scalar"))
    ]
    base = torch.optim.SGD(groups, lr=cfg["lr"], momentum=mom["momentum"], dampening=mom["dampening"])
    theirs = ScheduleFreeWrapper(
        base, momentum=cfg["momentum"], weight_decay_at_y=0.01, r=cfg["r"], weight_lr_power=cfg["weight_lr_power"]
    )
    theirs.train()
    _steps(ours_model, ours)
    _steps(theirs_model, theirs)
    for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ours.eval()
    theirs.eval()  # both at x
    for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sf_wrap_around_adamw_checkpoints_z_and_its_mode():
    torch.manual_seed(0)
    model = Net()
    opt = build_optimizer("sf_wrap", model, base="adamw")
    _steps(model, opt, 2)
    opt.eval()  # the loop saves at x, in eval mode
    saved_weights = {k: v.clone() for k, v in model.state_dict().items()}
    sd = copy.deepcopy(opt.state_dict())  # as a checkpoint file would: no tensor shared with `opt`
    twin = Net()
    twin.load_state_dict(saved_weights)
    again = build_optimizer("sf_wrap", twin, base="adamw")
    again.load_state_dict(sd)
    opt.train()
    again.train()  # both back at y
    _steps(model, opt, 1)
    _steps(twin, again, 1)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_sf_wrap_is_evaluated_at_x_with_bn_measured_there(make_cfg, data_root, tmp_path):
    from optbench.train.averaging import recompute_bn
    from optbench.train.loop import Trainer
    from tests.test_averaging import _evaluate

    cfg = make_cfg(["optimizer=sf_wrap", "optimizer.base=adam", *fast(data_root)])
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.run()
    recorded = trainer.last_eval["test_loss"]
    at_y = _evaluate(trainer, copy.deepcopy(trainer.model))["test_loss"]
    trainer.optimizer.eval()
    at_x = copy.deepcopy(trainer.model)
    recompute_bn(at_x, trainer.task)
    assert recorded == pytest.approx(_evaluate(trainer, at_x)["test_loss"], abs=1e-6)
    assert abs(recorded - at_y) > 1e-6


def test_sf_wrap_refuses_a_base_that_cannot_be_wrapped():
    from omegaconf import OmegaConf

    from optbench.optim import validate_optimizer_config

    cfg = {**load_option("optimizer", "sf_wrap"), "base": "lbfgs"}
    with pytest.raises(ConfigError, match=r"optimizer.base='lbfgs' is invalid; valid choices: .*adamw"):
        validate_optimizer_config(OmegaConf.create(cfg))
    cfg = {**load_option("optimizer", "sf_wrap"), "base_args": {"betas": [0.9, 1.5]}}
    with pytest.raises(ConfigError, match=r"optimizer.base_args.betas\[1\]=1.5 is invalid"):
        validate_optimizer_config(OmegaConf.create(cfg))


# ------------------------------------------------------------------------------ your own optimizer
USER_MODULE = """
import torch


class SignMomentum(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, beta=0.9, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                m.mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(m.sign(), alpha=-group["lr"])
"""

USER_YAML = """
name: signmom
target: user_opt.SignMomentum
source: user_opt
state: 1x
description: sign of momentum
lr: 3e-3
beta: 0.8
weight_decay: 0.0
groups:
  matrix: {lr_mult: 1.0, weight_decay: true}
  embedding: {lr_mult: 1.0, weight_decay: true}
  head: {lr_mult: 2.0, weight_decay: true}
  scalar: {lr_mult: 1.0, weight_decay: false}
lr_grid: [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
lr_scaling: none
reference_batch_size: null
search_space:
  beta: {low: 0.5, high: 0.99, log: false}
"""


@pytest.fixture
def user_env(tmp_path, monkeypatch):
    """A module and a config folder of the user's, outside the repository."""
    pkg = tmp_path / "user_pkg"
    pkg.mkdir()
    (pkg / "user_opt.py").write_text(textwrap.dedent(USER_MODULE))
    conf = tmp_path / "my_conf" / "optimizer"
    conf.mkdir(parents=True)
    (conf / "signmom.yaml").write_text(USER_YAML)
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pkg), *sys.path]))
    yield pkg, tmp_path / "my_conf"
    from optbench.confdir import use_overrides

    use_overrides([])
    sys.modules.pop("user_opt", None)


def test_custom_class_by_import_path_gets_the_role_groups_and_its_arguments(user_env, run_train, data_root):
    summary, run_dir = run_train(
        [
            "optimizer=custom",
            "optimizer.target=user_opt.SignMomentum",
            "optimizer.lr=2e-3",
            "+optimizer.beta=0.7",
            "optimizer.groups.head.lr_mult=0.5",
            *fast(data_root),
        ]
    )
    assert summary["status"] == "completed" and summary["optimizer_state_bytes"] > 0
    from optbench.train.memory import optimizer_state_bytes

    opt = build_optimizer("custom", Net(), target="user_opt.SignMomentum", beta=0.7, groups=POLICY)
    assert type(opt).__name__ == "SignMomentum"
    by_role = {g["role"]: g for g in opt.param_groups}
    assert by_role["head"]["lr"] == pytest.approx(2e-3) and by_role["scalar"]["lr"] == pytest.approx(2.5e-4)
    assert by_role["matrix"]["beta"] == 0.7 and optimizer_state_bytes(opt) == 0  # no step yet


def test_custom_as_muon_fallback(user_env):
    opt = build_optimizer(
        "muon", Net(), fallback={"name": "custom", "target": "user_opt.SignMomentum", "lr": 1e-3, "beta": 0.5}
    )
    assert type(opt.fallback).__name__ == "SignMomentum"
    assert {g["beta"] for g in opt.fallback.param_groups} == {0.5}
    wrapped = build_optimizer(
        "sf_wrap", Net(), base="custom", base_args={"target": "user_opt.SignMomentum", "beta": 0.6}
    )
    assert type(wrapped.base).__name__ == "SignMomentum" and wrapped.param_groups[0]["beta"] == 0.6
    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) \['bta'\] .*valid: beta, lr, weight_decay"):
        build_optimizer("muon", Net(), fallback={"name": "custom", "target": "user_opt.SignMomentum", "bta": 1})


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["optimizer.target=user_opt.SignMomentum", "+optimizer.bta=0.9"],
            "unknown hyperparameter(s) ['bta'] for optimizer 'custom' (user_opt.SignMomentum); valid: beta, lr, weight_decay",
        ),
        (
            ["optimizer.target=no_such_pkg.mod.Opt"],
            "optimizer.target='no_such_pkg.mod.Opt': cannot import module 'no_such_pkg.mod' "
            "(No module named 'no_such_pkg'); is it on PYTHONPATH?",
        ),
        (
            ["optimizer.target=user_opt.Nope"],
            "optimizer.target='user_opt.Nope': module 'user_opt' has no attribute 'Nope'",
        ),
        (
            ["optimizer.target=torch.nn.Linear"],
            "optimizer.target='torch.nn.Linear' is invalid: must be a torch.optim.Optimizer subclass",
        ),
        (
            [],
            "optimizer=custom needs the class: give optimizer.target=<module.Class>, "
            "e.g. optimizer.target=my_pkg.my_module.MyOptimizer",
        ),
    ],
)
def test_bad_targets_and_arguments_are_one_line_before_training(user_env, args, line):
    from optbench.config import precheck

    with pytest.raises(ConfigError) as err:
        precheck(["optimizer=custom", *args])
    assert str(err.value) == line


def test_the_cli_refuses_an_unknown_argument_with_exit_2(user_env, tmp_path):
    proc = optbench_cli(
        "train",
        "optimizer=custom",
        "optimizer.target=user_opt.SignMomentum",
        "+optimizer.bta=0.9",
        f"hydra.run.dir={tmp_path / 'r'}",
        env={"PYTHONPATH": os.environ["PYTHONPATH"]},
    )
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert proc.stderr.strip() == (
        "optbench: error: unknown hyperparameter(s) ['bta'] for optimizer 'custom' "
        "(user_opt.SignMomentum); valid: beta, lr, weight_decay"
    )
    assert not (tmp_path / "r").exists()


def test_user_config_folder_makes_a_first_class_name(user_env, make_cfg, monkeypatch):
    from optbench.confdir import group_options
    from optbench.config import compose, precheck
    from optbench.listing import optimizer_rows
    from optbench.tune import optimizer_space

    _, conf = user_env
    searchpath = f"hydra.searchpath=[file://{conf}]"
    with pytest.raises(ConfigError, match=r"unknown optimizer 'signmom'"):
        precheck(["optimizer=signmom"])
    cfg = precheck([searchpath, "optimizer=signmom"])
    assert cfg.optimizer.target == "user_opt.SignMomentum" and "signmom" in group_options("optimizer")
    grid, space = optimizer_space("signmom")
    assert grid[2] == 3e-3 and set(space) == {"lr", "beta"}
    assert any(r.split()[:3] == ["signmom", "user_opt", "1x"] for r in optimizer_rows())
    from optbench.commands.list import main as list_main

    compose([])
    list_main(["optimizers", searchpath])  # `optbench list optimizers hydra.searchpath=[...]`
    assert "signmom" in group_options("optimizer")
    # a sweep over it and a built-in composes and validates every value
    precheck([searchpath, "optimizer=signmom,adamw", "optimizer.lr=1e-3"], multirun=True)
    # the environment variable: a permanent folder, no override
    compose([])  # forget the command line's folder
    assert "signmom" not in group_options("optimizer")
    monkeypatch.setenv("OPTBENCH_CONFIG_PATH", str(conf))
    assert make_cfg(["optimizer=signmom"]).optimizer.beta == 0.8
    opt = build_optimizer("signmom", Net())
    assert {g["role"]: g["lr"] for g in opt.param_groups}["head"] == pytest.approx(6e-3)


def test_user_optimizer_trains_through_the_cli_from_its_folder(user_env, tmp_path, data_root):
    _, conf = user_env
    run_dir = tmp_path / "cli"
    proc = optbench_cli(
        "train",
        "optimizer=signmom",
        *fast(data_root),
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
        env={"PYTHONPATH": os.environ["PYTHONPATH"], "OPTBENCH_CONFIG_PATH": str(conf)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["optimizer"] == "signmom"
    assert summary["optimizer_state_bytes"] > 0


def test_sf_wrap_resumes_a_run_from_its_checkpoint(run_train, tmp_path, data_root):
    common = ["optimizer=sf_wrap", *fast(data_root)[1:]]  # fast() without its max_steps
    full, _ = run_train([*common, "trainer.max_steps=6"], run_dir=tmp_path / "full")
    run_train([*common, "trainer.max_steps=3", "trainer.save_final=true"], run_dir=tmp_path / "split")
    resumed, _ = run_train([*common, "trainer.max_steps=6", "trainer.extend=true"], run_dir=tmp_path / "split")
    assert resumed["steps"] == 6
    # y -> x -> y at the checkpoint is a float round trip: equal to rounding, not bit for bit
    assert resumed["final_eval"]["test_loss"] == pytest.approx(full["final_eval"]["test_loss"], rel=1e-4)


def test_a_user_yaml_with_a_bad_factory_or_target_is_one_line(user_env):
    from optbench.config import precheck

    _, conf = user_env
    (conf / "optimizer" / "badfac.yaml").write_text(
        USER_YAML.replace("name: signmom", "name: badfac").replace(
            "source: user_opt", "factory: nope\nsource: user_opt"
        )
    )
    (conf / "optimizer" / "badtgt.yaml").write_text(
        USER_YAML.replace("name: signmom", "name: badtgt").replace("user_opt.SignMomentum", "user_opt.Missing")
    )
    searchpath = f"hydra.searchpath=[file://{conf}]"
    with pytest.raises(ConfigError, match=r"^optimizer.factory='nope' is invalid; valid choices: .*muon"):
        precheck([searchpath, "optimizer=badfac"])
    with pytest.raises(ConfigError, match=r"^optimizer.target='user_opt.Missing': module 'user_opt' has no attribute"):
        precheck([searchpath, "optimizer=badtgt"])


@pytest.mark.parametrize(
    "override, line",
    [
        (
            "optimizer=my_pkg.my_module.MyOpt",
            r"^unknown optimizer 'my_pkg.my_module.MyOpt'; valid choices: .*adamw.*; "
            r"your own class: optimizer=custom optimizer.target=my_pkg.my_module.MyOpt$",
        ),
        (
            "+optimizer._target_=my_pkg.X",
            r"^'\+optimizer._target_=my_pkg.X': optbench names the class with "
            r"optimizer.target, e.g. optimizer=custom optimizer.target=my_pkg.X$",
        ),
    ],
)
def test_hydra_spellings_of_a_class_point_to_optimizer_target(override, line):
    from optbench.config import precheck

    with pytest.raises(ConfigError, match=line):
        precheck([override])
