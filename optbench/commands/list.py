"""`optbench list [optimizers|schedulers|tasks|experiments|models]`: what can be selected, one line each."""

from __future__ import annotations

from optbench.errors import ArgumentParser
from optbench.listing import KINDS, rows


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="optbench list", description=__doc__)
    parser.add_argument("what", nargs="?", choices=list(KINDS), help="default: all")
    parser.epilog = (
        "Your config folders too: hydra.searchpath=[file://DIR,...] (OPTBENCH_CONFIG_PATH adds them permanently)."
    )
    from optbench.confdir import SEARCHPATH_KEY, use_overrides

    use_overrides([a for a in argv if a.split("=", 1)[0] == SEARCHPATH_KEY])
    rest = [a for a in argv if a.split("=", 1)[0] != SEARCHPATH_KEY]
    args = parser.parse_args(rest)
    for kind in [args.what] if args.what else list(KINDS):
        print(f"{kind}:")
        print("\n".join(rows(kind)))
        print()
