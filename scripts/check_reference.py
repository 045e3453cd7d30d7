"""Side-by-side proof that the community-benchmark presets are their references (CPU, float32).

    python scripts/check_reference.py --reference reference/     # a folder holding both checkouts
    python scripts/check_reference.py --reference reference/modded-nanogpt --reference reference/cifar10-airbench

Each --reference is a checkout (or an extracted snapshot) of KellerJordan/modded-nanogpt or
KellerJordan/cifar10-airbench, or a folder holding them; which one it is, is read from its files. The reference code is
loaded at run time only (nothing of it is copied into optbench); the comparisons live in
scripts/fidelity_nanogpt.py (model, schedule, batches, eval steps), scripts/fidelity_airbench.py
(model, whitening, schedules, Lookahead-EMA) and scripts/fidelity_optim.py (optimizer steps).
Prints one table of max errors per check and exits 1 if any is over its bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def kind(path: Path) -> str | None:
    if (path / "records" / "track_3_optimization" / "train_gpt_simple.py").exists():
        return "modded-nanogpt"
    if (path / "airbench94_muon.py").exists():
        return "cifar10-airbench"
    return None


def checkouts(path: Path) -> dict[str, Path]:
    """A checkout, or a folder holding checkouts (e.g. reference/ with modded-nanogpt/ and cifar10-airbench/)."""
    path = path.resolve()  # absolute: some checks work in a temporary directory
    found = (
        {kind(path): path}
        if kind(path)
        else {kind(sub): sub for sub in sorted(path.iterdir()) if sub.is_dir() and kind(sub)}
        if path.is_dir()
        else {}
    )
    if not found:
        print(
            f"check_reference: error: {path} is neither a modded-nanogpt nor a cifar10-airbench checkout "
            "(no records/track_3_optimization/train_gpt_simple.py, no airbench94_muon.py) nor a folder "
            "holding one",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--reference",
        action="append",
        required=True,
        type=Path,
        help="a modded-nanogpt or cifar10-airbench checkout (give both to check both)",
    )
    args = ap.parse_args(argv)
    refs = {}
    for p in args.reference:
        refs.update(checkouts(p))
    ok = True
    if "modded-nanogpt" in refs:
        import fidelity_nanogpt

        ok &= fidelity_nanogpt.main(refs["modded-nanogpt"]) == 0
    if "cifar10-airbench" in refs:
        import fidelity_airbench

        ok &= fidelity_airbench.main(refs["cifar10-airbench"]) == 0
    import fidelity_optim

    for path in refs.values():
        result = fidelity_optim.main(path)
        ok &= all(r["err"] <= fidelity_optim.BOUND and r["lr_err"] <= 1e-9 for r in result["fp32"])
    print("\ncheck_reference: " + ("every comparison within its bound" if ok else "SOME COMPARISONS FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
