"""What `optbench list` prints: the selectable options of each config group, one line each (the
command line is optbench/commands/list.py)."""

from __future__ import annotations

from optbench.confdir import description, group_options, load_option

KINDS = {
    "optimizers": "optimizer",
    "schedulers": "scheduler",
    "tasks": "task",
    "experiments": "experiment",
    "models": "model",
}


def optimizer_rows() -> list[str]:
    """Each optimizer yaml (conf/ and the user's config folders): name, source, state, defaults, and
    what it is and where its class lives (the yaml's `description:` and `target:`)."""
    from optbench.optim import OPTIMIZERS
    from optbench.optim.registry import META_KEYS

    rows = [f"  {'name':<14} {'source':<18} {'state':<9} key hyperparameters (defaults)"]
    for name in group_options("optimizer"):
        spec = OPTIMIZERS[name]
        cfg = load_option("optimizer", name)
        hp = ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in META_KEYS)
        rows.append(f"  {name:<14} {spec.source:<18} {spec.state:<9} {hp}")
        where = f"{spec.target}" if isinstance(spec.target, str) else "optimizer.target=<module.Class>"
        rows.append(f"  {'':<14} {spec.description or description('optimizer', name)} [{where}]")
    rows.append(
        "  state = optimizer-state memory as a multiple of the parameters' bytes (Adam: 2x), measured in each "
        "run's summary (optimizer_state_bytes); r+c: a row and a column vector per matrix; L+R: a "
        "preconditioner and its inverse root per dimension; +Q: eigenbases or Kronecker factors per "
        "dimension; +r: a vector per matrix row; h: history_size; +fb: the fallback's (AdamW's) state for "
        "the non-matrix roles; +base: the base optimizer's"
    )
    return rows


def task_row(name: str, task: dict) -> str:
    """name, the success criterion (metric and target) and the description."""
    target = task.get("target")
    goal = (
        f"{task.get('metric')} {'>=' if task.get('mode') == 'max' else '<='} {target:g}"
        if isinstance(target, (int, float))
        else f"{task.get('metric')} (no target)"
    )
    return f"  {name:<22} {goal:<22} {task.get('description', '')}"


def rows(kind: str) -> list[str]:
    group = KINDS[kind]
    if group == "optimizer":
        return optimizer_rows()
    if group == "task":  # a task states its description, metric and target as data
        return [task_row(name, load_option("task", name).get("task", {})) for name in group_options(group)]
    return [f"  {name:<22} {description(group, name)}" for name in group_options(group)]
