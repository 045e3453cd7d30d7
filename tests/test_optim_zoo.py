"""The optimizer zoo: every name trains, defaults and group policy reach the optimizer unchanged,
state memory is what the listing says, bad input is one line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from optbench.confdir import description, group_options, load_option
from optbench.errors import ConfigError
from optbench.optim import OPTIMIZERS, build_optimizer, build_optimizer_from_config, validate_optimizer_config
from optbench.optim.registry import META_KEYS, hyperparameters
from tests.conftest import optbench_cli

# every optimizer is a yaml: the names come from conf/optimizer/ (custom takes its class on the command line)
NAMES = [n for n in group_options("optimizer") if n != "custom"]
OWN = {n for n in NAMES if OPTIMIZERS[n].source == "optbench"}
# built by a factory of ours (hybrids, one group, Schedule-Free around a base), not the class alone
FACTORY = {n for n in NAMES if OPTIMIZERS[n].factory_name != "class"}
# issue 15's optimizers of the current literature: their own tests (tests/test_optim_new.py), a few fast steps
NEW = {
    "adopt",
    "mars",
    "prodigy",
    "kron",
    "normuon",
    "adamuon",
    "scion",
    "laprop",
    "came",
    "cautious_adamw",
    "cautious_lion",
    "sf_wrap",
}


def tiny(data_root) -> list[str]:
    """50 steps of a narrow CNN on a small synthetic set of its own (its own root: the shared
    synthetic set keeps its size for the other tests)."""
    return [
        "trainer.max_steps=50",
        "trainer.batch_size=32",
        "trainer.eval_every=50",
        "trainer.log_every=10",
        "model.widths=[8,16,16]",
        "data.n_train=2000",
        "data.n_test=500",
        f"data.root={data_root}/cifar10_synthetic_tiny",
    ]


def train_losses(run_dir) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r.get("type") == "train"]


def test_every_yaml_is_an_optimizer_with_its_class_source_and_state():
    assert sorted(OPTIMIZERS) == sorted(group_options("optimizer")) == sorted([*NAMES, "custom"])
    assert {"sgd", "adamw", "muon", "lbfgs", "sf_adamw"} | NEW <= set(NAMES)
    for name in NAMES:
        spec = OPTIMIZERS[name]
        assert isinstance(spec.target, str) and spec.constructor.__name__ == spec.target.rpartition(".")[2]
        assert spec.source != "?" and spec.state != "?" and spec.description


@pytest.mark.parametrize("name", NAMES)
def test_yaml_is_complete(name):
    cfg = load_option("optimizer", name)
    spec = OPTIMIZERS[name]
    assert cfg["name"] == name
    assert f"Source: {spec.source}" in description(
        "optimizer", name
    ) or f"Source: {spec.constructor.__module__.split('.')[0]}" in description("optimizer", name)
    assert set(cfg["groups"]) == {"matrix", "embedding", "head", "scalar"}
    assert cfg["groups"]["scalar"]["weight_decay"] is False
    grid = cfg["lr_grid"]
    ratios = [b / a for a, b in zip(grid, grid[1:])]
    assert len(grid) == 5 and grid[2] == pytest.approx(cfg["lr"]) and all(2.5 < r < 4 for r in ratios)
    assert set(hyperparameters(cfg)) - {"name"} <= spec.accepts  # no key the constructor would refuse


@pytest.mark.parametrize("name", sorted(set(NAMES) - NEW))
def test_trains_synthetic_cifar_and_lowers_the_loss(name, run_train, data_root):
    summary, run_dir = run_train([f"optimizer={name}", *tiny(data_root)])
    losses = train_losses(run_dir)
    assert summary["status"] == "completed" and summary["steps"] == 50
    assert all(math.isfinite(x) for x in losses)
    # first line: step 1; last: the mean of steps 41-50
    assert losses[-1] < losses[0] - 0.05, losses
    state = summary["optimizer_state_bytes"]
    assert (state == 0) if name in ("sgd", "signsgd") else (state > 0)


def test_the_real_cli_trains_muon(data_root, tmp_path):
    run_dir = tmp_path / "cli"
    proc = optbench_cli(
        "train",
        "optimizer=muon",
        *tiny(data_root),
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = train_losses(run_dir)
    assert losses[-1] < losses[0] - 0.05
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["optimizer"] == "muon" and summary["optimizer_state_bytes"] > 0


# ---------------------------------------------------------------------------------- defaults
class Net(torch.nn.Module):
    """All four roles: embedding, matrix (conv + linear), scalar (biases, BN), head."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(7, 12)
        self.conv = torch.nn.Conv1d(12, 12, 3, padding=1)
        self.bn = torch.nn.BatchNorm1d(12)
        self.body = torch.nn.Linear(12, 12)
        self.head = torch.nn.Linear(12, 5)

    def forward(self, idx):
        h = self.bn(self.conv(self.emb(idx).transpose(1, 2))).transpose(1, 2)
        return self.head(torch.relu(self.body(h))).mean(1)


POLICY = {
    "matrix": {"lr_mult": 1.0, "weight_decay": True},
    "embedding": {"lr_mult": 0.5, "weight_decay": False},
    "head": {"lr_mult": 2.0, "weight_decay": True},
    "scalar": {"lr_mult": 0.25, "weight_decay": False},
}


@pytest.mark.parametrize("name", sorted(set(NAMES) - OWN - FACTORY))
def test_library_defaults_and_group_policy_reach_the_optimizer(name):
    cfg = load_option("optimizer", name)
    spec = OPTIMIZERS[name]
    opt = build_optimizer(name, Net(), groups=POLICY)
    assert type(opt) is spec.constructor
    hp = hyperparameters(cfg)
    assert [g["role"] for g in opt.param_groups] == ["matrix", "embedding", "head", "scalar"]
    for g in opt.param_groups:
        rule = POLICY[g["role"]]
        assert g["lr"] == pytest.approx(cfg["lr"] * rule["lr_mult"])
        if "weight_decay" in cfg:
            assert g["weight_decay"] == (cfg["weight_decay"] if rule["weight_decay"] else 0.0)
        for key, value in hp.items():
            if key not in ("name", "lr", "weight_decay"):
                # a few library settings live on the optimizer, not in each group
                got = g[key] if key in g else getattr(opt, key)
                assert got == value, (key, got, value)


def test_lbfgs_gets_one_group_with_the_yaml_values_and_refuses_a_role_lr_policy():
    opt = build_optimizer("lbfgs", Net())
    cfg = load_option("optimizer", "lbfgs")
    (g,) = opt.param_groups
    assert len(g["params"]) == len(list(Net().parameters()))
    assert {k: g[k] for k in ("lr", "max_iter", "history_size", "line_search_fn")} == {
        k: cfg[k] for k in ("lr", "max_iter", "history_size", "line_search_fn")
    }
    assert OPTIMIZERS["lbfgs"].needs_closure
    with pytest.raises(ConfigError, match="must give one lr for all roles"):
        build_optimizer("lbfgs", Net(), groups=POLICY)


def test_config_path_policy_reaches_param_groups(make_cfg):
    cfg = make_cfg(
        [
            "optimizer=adam",
            "optimizer.groups.head.lr_mult=0.1",
            "optimizer.groups.matrix.weight_decay=false",
            "optimizer.weight_decay=0.05",
        ]
    )
    opt = build_optimizer_from_config(cfg.optimizer, Net())
    by_role = {g["role"]: g for g in opt.param_groups}
    assert by_role["head"]["lr"] == pytest.approx(1e-4) and by_role["head"]["weight_decay"] == 0.05
    assert by_role["matrix"]["weight_decay"] == 0.0 and by_role["scalar"]["weight_decay"] == 0.0
    assert by_role["embedding"]["weight_decay"] == 0.05
    names = {n for g in opt.param_groups if g["role"] == "scalar" for n in g["param_names"]}
    assert names == {"conv.bias", "bn.weight", "bn.bias", "body.bias", "head.bias"}


def test_overrides_change_only_what_they_name():
    opt = build_optimizer("adamw", Net(), lr=0.5, betas=(0.8, 0.9))
    g = opt.param_groups[0]
    assert g["lr"] == 0.5 and g["betas"] == (0.8, 0.9) and g["eps"] == 1e-8 and g["weight_decay"] == 0.01


# ---------------------------------------------------------------------------------- state memory
@pytest.mark.parametrize(
    "name", [n for n in NAMES if OPTIMIZERS[n].state.endswith("x") and OPTIMIZERS[n].state[:-1].isdigit()]
)
def test_state_memory_matches_the_listing(name):
    from optbench.train.memory import optimizer_state_bytes

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = build_optimizer(name, model)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure) if OPTIMIZERS[name].needs_closure else (closure(), opt.step())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ratio = optimizer_state_bytes(opt) / param_bytes
    assert ratio == pytest.approx(int(OPTIMIZERS[name].state[:-1]), abs=0.02), ratio


def test_listed_state_of_the_new_non_multiples_is_what_a_run_measures():
    """Kron's factors, CAME's factored moments, NorMuon's row vectors: more than the first moment,
    less than Adam's two, on a 64x64 + 64x10 MLP."""
    from optbench.train.memory import optimizer_state_bytes

    for name, low, high in (("kron", 1.0, 4.0), ("came", 1.0, 1.5), ("normuon", 1.0, 1.5), ("sf_wrap", 2.9, 3.1)):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        opt = build_optimizer(name, model)
        torch.nn.functional.cross_entropy(model(torch.randn(8, 64)), torch.randint(0, 10, (8,))).backward()
        opt.step()
        ratio = optimizer_state_bytes(opt) / sum(p.numel() * p.element_size() for p in model.parameters())
        assert low < ratio < high, (name, ratio)


def test_listing_shows_source_state_and_defaults():
    from optbench.listing import optimizer_rows

    rows = optimizer_rows()
    text = "\n".join(rows)
    for name in NAMES:
        line = next(r for r in rows if r.split() and r.split()[0] == name)
        spec = OPTIMIZERS[name]
        assert (
            spec.source in line and f" {spec.state} " in line and f"lr={load_option('optimizer', name)['lr']}" in line
        )
    assert "lr_grid" not in text and "groups" not in text


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(name="adamq", lr=1e-3), r"unknown optimizer 'adamq'; valid choices: .*adamw"),
        (dict(name="adamw", lr=-1e-3), r"optimizer.lr=-0.001 is invalid"),
        (dict(name="adamw", lr=1e-3, betas=[0.9, 1.0]), r"optimizer.betas\[1\]=1.0 is invalid: must be in \[0, 1\)"),
        (dict(name="ademamix", lr=1e-3, betas=[0.9, 0.999, -0.1]), r"betas\[2\]=-0.1"),
        (dict(name="momentum", lr=1e-3, momentum=1.5), r"optimizer.momentum=1.5 is invalid"),
        (dict(name="adamw", lr=1e-3, weight_decay=-1), r"optimizer.weight_decay=-1 is invalid"),
        (
            dict(name="adam", lr=1e-3, momentum=0.9),
            r"unknown hyperparameter\(s\) \['momentum'\] for optimizer 'adam'; "
            r"valid: .*betas",
        ),
        (dict(name="muon", lr=0.02, fallback={"name": "lbfgs"}), r"optimizer.fallback.name='lbfgs' is invalid"),
        (dict(name="muon", lr=0.02, fallback={"name": "adamw", "lr": -1}), r"optimizer.fallback.lr=-1 is invalid"),
    ],
)
def test_validation_is_one_line(bad, match):
    with pytest.raises(ConfigError, match=match) as err:
        validate_optimizer_config(OmegaConf.create(bad))
    assert "\n" not in str(err.value)


def test_build_optimizer_refuses_unknown_names_and_hyperparameters():
    with pytest.raises(ConfigError, match=r"unknown optimizer 'adan2'; valid choices: .*adan"):
        build_optimizer("adan2", Net())
    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) \['beta'\] for optimizer 'lion'; valid: "):
        build_optimizer("lion", Net(), beta=0.9)
    with pytest.raises(ConfigError, match=r"optimizer.lr=-1 is invalid"):
        build_optimizer("sgd", Net(), lr=-1)
    # a constructor argument the yaml does not list is still a hyperparameter of that optimizer
    assert build_optimizer("adam", Net(), amsgrad=True).param_groups[0]["amsgrad"] is True


def test_cli_refuses_bad_values_before_training(tmp_path):
    proc = optbench_cli("train", "optimizer=adamw", "optimizer.lr=-0.1", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "optbench: error: optimizer.lr=-0.1 is invalid: must be a finite number > 0"
    assert not (tmp_path / "r" / "summary.json").exists()


def test_meta_keys_stay_out_of_constructors():
    for name in NAMES:
        cfg = load_option("optimizer", name)
        assert not (set(hyperparameters(cfg)) & META_KEYS)


def test_muon_fallback_switch_drops_betas_of_the_wrong_arity():
    """`optimizer.fallback.name=adan` kept the yaml's two AdamW betas: Adan takes three."""
    from optbench.config import compose
    from optbench.optim.registry import fallback_config

    cfg = compose(["optimizer=muon", "optimizer.fallback.name=adan"])
    fb = fallback_config(OmegaConf.to_container(cfg.optimizer.fallback, resolve=True))
    assert fb["name"] == "adan" and len(fb["betas"]) == 3
    validate_optimizer_config(cfg.optimizer)  # no error
    with pytest.raises(ConfigError, match=r"optimizer.fallback.betas=\[0.9, 0.9\] is invalid: must be a list of 3"):
        validate_optimizer_config(
            compose(["optimizer=muon", "optimizer.fallback.name=adan", "optimizer.fallback.betas=[0.9,0.9]"]).optimizer
        )
