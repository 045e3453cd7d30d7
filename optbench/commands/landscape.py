"""`optbench landscape function=rosenbrock optimizer=sgd,momentum,adam,lion,sf_adamw [key=value ...]`

Every optimizer starts from the same point of a 2-D test function and steps through the same
`optbench.optim.build_optimizer` path the trainer uses; the result is a contour plot with every
trajectory and the known minima, loss-vs-step curves (PNG; an animated GIF with --animate), and a
printed table of the final distance to the nearest minimum and the steps to reach a tolerance.

Keys (all optional but function/optimizer):
  function=NAME            rosenbrock | beale | booth | himmelblau | rastrigin | quadratic | saddle
  optimizer=A,B,...        any registered optimizers
  steps=N                  steps per optimizer (default 500); steps.NAME=N for one optimizer
  lr=X                     lr for all; lr.NAME=X for one; default: each optimizer's best final
                           loss over the grid 1e-4 .. 1 (half-decade steps), an equal tuning budget
  noise=S                  add N(0, S^2) to each gradient coordinate (stochastic gradients)
  start=[x,y]              start point (default: the function's standard start)
  tol=D                    distance to a minimum that counts as reached (default 1e-2)
  seed=N                   seed of the gradient noise (the same noise stream for every optimizer)

The point is a 1x2 matrix parameter with role "matrix": hybrid optimizers (Muon) then apply their
own update to it rather than handing it to their fallback, and matrix methods (Shampoo, SOAP)
precondition it — on a 1x2 matrix Muon's orthogonalisation reduces to normalising the momentum,
so Muon draws as normalised-gradient descent with momentum. Weight decay is set to 0 for every
optimizer so all of them chase the function's own minimum (decay would pull it towards the
origin). Schedule-Free optimizers are drawn at their training point (the sequence they take
gradients at). An optimizer that cannot step a 1x2 point is skipped with a note saying why.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from optbench.errors import ArgumentParser, ConfigError, choices
from optbench.landscape.functions import FUNCTIONS

DEFAULTS = {"steps": 500, "noise": 0.0, "tol": 1e-2, "seed": 0}


def parse_keys(pairs: list[str]) -> dict:
    """key=value arguments -> settings, with one-line errors for anything unknown or malformed."""
    from optbench.optim import OPTIMIZERS

    settings = {**DEFAULTS, "function": None, "optimizer": None, "lr": None, "start": None, "lr_by": {}, "steps_by": {}}
    valid = ("function", "optimizer", "steps", "lr", "noise", "start", "tol", "seed", "hydra.searchpath")
    from optbench.confdir import SEARCHPATH_KEY, use_overrides

    # your config folders' optimizers too (OPTBENCH_CONFIG_PATH adds them permanently)
    use_overrides([p for p in pairs if p.split("=", 1)[0] == SEARCHPATH_KEY])
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"cannot parse '{pair}' (expected key=value); valid keys: {', '.join(valid)}")
        key, value = pair.split("=", 1)
        if key == SEARCHPATH_KEY:
            continue
        base, _, which = key.partition(".")
        if base not in valid or (which and base not in ("lr", "steps")):
            raise ConfigError(f"unknown key '{key}'; valid keys: {', '.join(valid)} (and lr.NAME, steps.NAME)")
        try:
            if base == "function":
                settings["function"] = value
            elif base == "optimizer":
                settings["optimizer"] = [v.strip() for v in value.split(",") if v.strip()]
            elif base == "start":
                xy = [float(v) for v in value.strip("[]() ").split(",")]
                if len(xy) != 2:
                    raise ValueError
                settings["start"] = tuple(xy)
            elif base in ("steps", "seed"):
                n = int(value)
                if n < (1 if base == "steps" else 0):
                    raise ValueError
                (settings["steps_by"].__setitem__(which, n) if which else settings.__setitem__(base, n))
            else:
                x = float(value)
                if not math.isfinite(x) or x < 0 or (base in ("lr", "tol") and x == 0):
                    raise ValueError
                (settings["lr_by"].__setitem__(which, x) if which else settings.__setitem__(base, x))
        except ValueError:
            need = {
                "start": "two numbers, e.g. start=[-1.5,2]",
                "steps": "a whole number >= 1",
                "seed": "a whole number >= 0",
            }.get(base, "a number > 0" if base in ("lr", "tol") else "a number >= 0")
            raise ConfigError(f"{key}={value!r} is invalid: must be {need}") from None
    if settings["function"] is None:
        raise ConfigError(f"name the test function, e.g. function=rosenbrock; valid choices: {choices(FUNCTIONS)}")
    if settings["function"] not in FUNCTIONS:
        raise ConfigError(f"unknown function '{settings['function']}'; valid choices: {choices(FUNCTIONS)}")
    if not settings["optimizer"]:
        raise ConfigError(
            f"name the optimizers to compare, e.g. optimizer=sgd,momentum,adam; valid choices: {choices(OPTIMIZERS)}"
        )
    for name in settings["optimizer"] + list(settings["lr_by"]) + list(settings["steps_by"]):
        if name not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(OPTIMIZERS)}")
    return settings


def main(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog="optbench landscape", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--animate", action="store_true", help="also write an animated GIF")
    parser.add_argument("--out", type=Path, help="PNG path (default outputs/landscape/<function>.png)")
    parser.add_argument("keys", nargs="*", help="key=value settings (see above)")
    args = parser.parse_args(argv)
    from optbench.landscape.plot import animate, plot
    from optbench.landscape.run import compare, table

    settings = parse_keys(args.keys)
    fn = FUNCTIONS[settings["function"]]
    trajectories = compare(fn, settings)
    noise = f", gradient noise {settings['noise']:g}" if settings["noise"] else ""
    title = f"{fn.name}: {fn.description}{noise}"
    print(f"{fn.name}: {fn.description}")
    print(table(fn, trajectories, settings["tol"]))
    out = args.out or Path("outputs") / "landscape" / f"{fn.name}.png"
    print(f"wrote {plot(fn, trajectories, out, title)}")
    if args.animate:
        print(f"wrote {animate(fn, trajectories, out.with_suffix('.gif'), title)}")
