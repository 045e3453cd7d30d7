"""Workloads: a task yaml each (K3), grouped by optbench/conf/suite/<group>.yaml.

A group yaml is {description: str, tasks: [task names], overrides: [Hydra overrides every run of
the group gets]}, and optionally `select_metric: NAME`, the metric tune chooses the trials by (default:
tune's, val_<test metric>), for tasks with no validation split, e.g. train_loss. `--workloads` names
groups or single tasks; a user's config folder (hydra.searchpath, OPTBENCH_CONFIG_PATH) adds groups
and tasks the way it adds any option.
"""

from __future__ import annotations

from dataclasses import dataclass

from optbench.errors import ConfigError, choices

GROUP = "suite"  # the config group of the workload groups


@dataclass(frozen=True)
class Workload:
    task: str  # the task name: a column of the leaderboard
    group: str  # the group that named it ("" when named on its own)
    overrides: tuple[str, ...]  # task=<name> and the group's overrides
    select_metric: str | None = None  # what tune chooses by (None: tune's default)

    @property
    def name(self) -> str:
        return self.task


def groups() -> list[str]:
    from optbench.confdir import group_options

    return group_options(GROUP)


def load_group(name: str) -> dict:
    """A group yaml, checked: its tasks exist and its overrides are a list of strings."""
    from optbench.confdir import group_options, load_option, option_path

    cfg = load_option(GROUP, name)
    where = option_path(GROUP, name)
    tasks, overrides = cfg.get("tasks"), cfg.get("overrides") or []
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError(f"suite: {where} lists no tasks; give `tasks: [name, ...]`")
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"suite: {where}: `overrides` must be a list of key=value strings")
    known = group_options("task")
    for t in tasks:
        if t not in known:
            raise ConfigError(f"suite: {where} names unknown task '{t}'; valid choices: {choices(known)}")
    select = cfg.get("select_metric")
    if select is not None and (not isinstance(select, str) or not select):
        raise ConfigError(f"suite: {where}: `select_metric` must be a metric name, e.g. train_loss")
    return {
        "description": str(cfg.get("description") or ""),
        "tasks": [str(t) for t in tasks],
        "overrides": [str(o) for o in overrides],
        "select_metric": select,
    }


def resolve(names: list[str]) -> list[Workload]:
    """Groups and task names -> workloads, in the order given, each task once (its first group's
    overrides win: the same task twice would be the same runs twice)."""
    from optbench.confdir import group_options

    if not names:
        raise ConfigError(f"suite: --workloads names nothing; valid choices: {choices(valid_names())}")
    known_tasks = group_options("task")
    out: dict[str, Workload] = {}
    for name in names:
        if name in groups():
            g = load_group(name)
            for t in g["tasks"]:
                out.setdefault(t, Workload(t, name, (f"task={t}", *g["overrides"]), g["select_metric"]))
        elif name in known_tasks:
            out.setdefault(name, Workload(name, "", (f"task={name}",)))
        else:
            raise ConfigError(f"suite: unknown workload '{name}'; valid choices: {choices(valid_names())}")
    return list(out.values())


def valid_names() -> list[str]:
    from optbench.confdir import group_options

    return [*groups(), *group_options("task")]
