"""`optbench list [optimizers|schedulers|tasks|experiments|models]`: what can be selected, one line each."""
from __future__ import annotations

from optbench.confdir import description, group_options, load_option
from optbench.errors import ArgumentParser

KINDS = {"optimizers": "optimizer", "schedulers": "scheduler", "tasks": "task",
         "experiments": "experiment", "models": "model"}


def optimizer_rows() -> list[str]:
    from optbench.optim import OPTIMIZERS
    from optbench.optim.registry import META_KEYS

    rows = [f"  {'name':<12} {'source':<18} {'state':<6} key hyperparameters (defaults)"]
    for name in group_options("optimizer"):
        spec = OPTIMIZERS.get(name)
        cfg = load_option("optimizer", name)
        hp = ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in META_KEYS)
        source = spec.source if spec else "?"
        state = spec.state if spec else "?"
        rows.append(f"  {name:<12} {source:<18} {state:<6} {hp}")
        rows.append(f"  {'':<12} {description('optimizer', name)}")
    rows.append("  state = optimizer-state memory as a multiple of the parameters' bytes (Adam: 2x); "
                "r+c: a row and a column vector per matrix; L+R: a preconditioner and its inverse root per "
                "dimension; +Q: eigenbases per dimension; h: history_size; +fb: the fallback's state for "
                "the non-matrix roles")
    return rows


def rows(kind: str) -> list[str]:
    group = KINDS[kind]
    if group == "optimizer":
        return optimizer_rows()
    if group == "task":  # a task states its description as data
        return [f"  {name:<22} {load_option('task', name).get('task', {}).get('description', '')}"
                for name in group_options(group)]
    return [f"  {name:<22} {description(group, name)}" for name in group_options(group)]


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="optbench list", description=__doc__)
    parser.add_argument("what", nargs="?", choices=list(KINDS), help="default: all")
    args = parser.parse_args(argv)
    for kind in [args.what] if args.what else list(KINDS):
        print(f"{kind}:")
        print("\n".join(rows(kind)))
        print()
