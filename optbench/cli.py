"""`optbench <verb>` (or `python -m optbench <verb>`): the command line. Each verb is one module,
optbench/commands/<verb>.py, whose main(argv) parses its arguments and calls the library module
that owns the work; `train` is a Hydra app, the other verbs are plain argparse.

Every verb turns bad input (ConfigError) into one line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

from optbench.errors import ConfigError

# verb -> (module:function, one-line help): a new verb is one file in optbench/commands/ and one line
# here. Modules import lazily so `optbench list` stays fast.
VERBS = {
    "train": ("optbench.commands.train:main", "train one run, or a sweep with -m (Hydra overrides)"),
    "list": ("optbench.commands.list:main", "list optimizers, schedulers, tasks or experiments"),
    "report": ("optbench.commands.report:main", "comparison tables and plots from run directories"),
    "tune": ("optbench.commands.tune:main", "equal-budget tuning of several optimizers, then seeds"),
    "data": ("optbench.commands.data:main", "download and prepare datasets (cifar10, fineweb10B)"),
    "lr-find": ("optbench.commands.lr_find:main", "learning-rate range test with a plot"),
    "schedule": ("optbench.commands.schedule:main", "draw a learning-rate schedule to a PNG"),
    "landscape": ("optbench.commands.landscape:main", "optimizer trajectories on 2-D test functions"),
    "suite": ("optbench.commands.suite:main", "score optimizers across many workloads (tuning, seeds, profiles)"),
}


def usage() -> str:
    lines = ["usage: optbench <verb> [args]", "", "verbs:"]
    lines += [f"  {verb:<10} {help_}" for verb, (_, help_) in VERBS.items()]
    lines += ["", "`optbench <verb> --help` for each verb's options."]
    return "\n".join(lines)


def fail(message: str, status: int = 2) -> NoReturn:
    print(f"optbench: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        fail(f"unknown verb '{verb}'; valid verbs: {', '.join(VERBS)}")
    target, _ = VERBS[verb]
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("optbench"):
            fail(f"verb '{verb}' is not available in this version of optbench")
        raise
    try:
        getattr(module, func_name)(rest)
    except ConfigError as e:
        fail(str(e))
    except BrokenPipeError:  # `optbench train --help | head`: before OSError, of which it is one
        _quiet_broken_pipe()
    except OSError as e:
        if not e.filename:  # not a path the user gave (a broken pipe, a socket): a real error
            raise
        # a path that cannot be read or written (`report --out /read-only`, `data --root`)
        fail(f"{verb}: cannot use '{e.filename}': {e.strerror or e}")
    except KeyboardInterrupt:
        print("optbench: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _quiet_broken_pipe() -> NoReturn:
    """The reader went away: no traceback, and none at exit either when Python flushes stdout
    (pointed at /dev/null, as the Python docs advise); the status is a SIGPIPE death's, 141."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise SystemExit(141)


if __name__ == "__main__":
    main()
