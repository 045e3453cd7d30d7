"""Side-by-side proof that the community-benchmark presets are their references (CPU, float32).

    python scripts/check_reference.py --reference reference/modded-nanogpt --reference reference/cifar10-airbench

Each --reference is a checkout (or an extracted snapshot) of KellerJordan/modded-nanogpt or
KellerJordan/cifar10-airbench; which one it is, is read from its files. The reference code is
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


def kind(path: Path) -> str:
    if (path / "records" / "track_3_optimization" / "train_gpt_simple.py").exists():
        return "modded-nanogpt"
    if (path / "airbench94_muon.py").exists():
        return "cifar10-airbench"
    raise SystemExit(f"check_reference: error: {path} is neither a modded-nanogpt nor a cifar10-airbench "
                     "checkout (no records/track_3_optimization/train_gpt_simple.py, no airbench94_muon.py)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", action="append", required=True, type=Path,
                    help="a modded-nanogpt or cifar10-airbench checkout (give both to check both)")
    args = ap.parse_args(argv)
    refs = {kind(p): p for p in args.reference}
    ok = True
    if "modded-nanogpt" in refs:
        import fidelity_nanogpt
        ok &= fidelity_nanogpt.main(refs["modded-nanogpt"]) is not False
    if "cifar10-airbench" in refs:
        import fidelity_airbench
        ok &= fidelity_airbench.main(refs["cifar10-airbench"]) is not False
    import fidelity_optim
    ok &= fidelity_optim.main(refs) is not False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
