"""The suite's workloads (K3): each group yaml names existing tasks whose runs compose with its
overrides, and `optbench list tasks` shows every task with its metric and target."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from optbench import CONF_DIR
from tests.conftest import optbench_cli

GROUPS = ("diagnostics", "digits", "nqm", "cifar", "fineweb")


@pytest.mark.parametrize("group", GROUPS)
def test_suite_group_names_tasks_that_compose_with_its_overrides(make_cfg, group):
    from optbench.config import validate

    g = OmegaConf.load(CONF_DIR / "suite" / f"{group}.yaml")
    assert set(g) == {"description", "tasks", "overrides"} and g.description and g.tasks
    for name in g.tasks:
        assert (CONF_DIR / "task" / f"{name}.yaml").is_file(), name
    cfg = make_cfg([f"task={g.tasks[-1]}", *g.overrides])  # one per group: composing costs ~0.3 s
    validate(cfg)
    assert cfg.task.name == g.tasks[-1]


def test_diagnostics_group_holds_every_diagnostic_task():
    g = OmegaConf.load(CONF_DIR / "suite" / "diagnostics.yaml")
    assert sorted(g.tasks) == sorted(p.stem for p in (CONF_DIR / "task").glob("diag_*.yaml"))


def test_list_tasks_shows_metric_and_target():
    out = optbench_cli("list", "tasks")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:] if line.strip()}
    assert "loss <= 0.01" in rows["diag_quadratic"] and "excess_loss <= 0.001" in rows["digits_logreg"]
    assert "test_acc >= 0.95" in rows["digits_mlp"] and "loss <= 0.1" in rows["nqm"]
    assert "(no target)" in rows["fineweb_synthetic"]
