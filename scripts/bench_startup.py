"""Start-up time of `optbench train --help` against a bare `import torch` (target: ratio <= 1.1).

Both commands run as fresh processes with the same interpreter, alternating, `--rounds` times each
(hyperfine-style: a warm-up round discarded, then the median and the minimum of wall-clock times).

    python scripts/bench_startup.py [--rounds 15] [--extra "optbench list optimizers" ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        help="another optbench command line to time beside them, e.g. 'list optimizers'",
    )
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    optbench = [sys.executable, "-m", "optbench.cli"] if not shutil.which("optbench") else [shutil.which("optbench")]
    commands = {
        "import torch": [sys.executable, "-c", "import torch"],
        "optbench train --help": [*optbench, "train", "--help"],
    }
    for extra in args.extra:
        commands[f"optbench {extra}"] = [*optbench, *extra.split()]
    times: dict[str, list[float]] = {name: [] for name in commands}
    for r in range(args.rounds + 1):
        order = list(commands.items()) if r % 2 else list(reversed(commands.items()))
        for name, cmd in order:
            t = timed(cmd, env)
            if r:  # round 0 warms the file cache
                times[name].append(t)
    base = statistics.median(times["import torch"])
    print(f"{args.rounds} rounds, {sys.executable}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<28} median {med * 1e3:7.0f} ms  min {min(ts) * 1e3:7.0f} ms  x{med / base:.2f} of import torch")
    ratio = statistics.median(times["optbench train --help"]) / base
    print(f"train --help / import torch: {ratio:.2f} (target <= 1.1: {'OK' if ratio <= 1.1 else 'ABOVE TARGET'})")


if __name__ == "__main__":
    main()
