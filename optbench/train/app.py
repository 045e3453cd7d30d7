"""`optbench train`: the Hydra app.

Hydra prints multi-line errors with a hint about stack traces; our users get one line instead,
so the overrides are composed and validated here first (each value of a sweep included), and
only a config that composes and validates reaches Hydra.
"""
from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from optbench import CONF_DIR

# Flags that only print something: no validation before them.
_INFO_FLAGS = {"-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve",
               "--shell-completion", "-sc", "--version"}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    from optbench.train.job import run_job

    return run_job(cfg)


# Hydra flags followed by a value (`--cfg job`, `-cn name`): that value is not an override.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}


def overrides_of(argv: list[str]) -> list[str]:
    """The command line's overrides: every word that is neither a flag nor a flag's value, so a
    word without `=` (`optbench train foo`) reaches precheck and gets its one-line error."""
    out, skip = [], False
    for a in argv:
        if skip and not a.startswith("-") and "=" not in a:
            skip = False
            continue
        skip = a in _VALUE_FLAGS
        if not a.startswith("-"):
            out.append(a)
    return out


# Hydra's own flags whose value has fixed choices: checked here so that a typo is one line, not
# Hydra's argparse usage block
_FLAG_CHOICES = {("--cfg", "-c"): ("job", "hydra", "all")}


def _check_flags(argv: list[str]) -> None:
    from optbench.errors import ConfigError

    for flags, valid in _FLAG_CHOICES.items():
        for i, a in enumerate(argv):
            if a in flags:
                value = argv[i + 1] if i + 1 < len(argv) else None
                if value not in valid:
                    given = f"{a} {value}" if value else f"{a} with no value"
                    raise ConfigError(f"train: {given} is invalid; valid choices: "
                                      f"{', '.join(f'{a} {v}' for v in valid)}")


def main(argv: list[str]) -> None:
    _check_flags(argv)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = overrides_of(argv)
    # `--cfg job` prints the config a run would use: only a config that would run (validated first)
    printing = any(a in ("--cfg", "-c") for a in argv) and not (_INFO_FLAGS - {"--cfg", "-c", "--resolve"}) & set(argv)
    if printing:
        from optbench.config import precheck

        precheck(overrides, multirun=multirun)
    if not _INFO_FLAGS.intersection(argv):
        from optbench.config import precheck

        cfg = precheck(overrides, multirun=multirun)
        from optbench.train.launch import maybe_relaunch_under_torchrun

        maybe_relaunch_under_torchrun(cfg, argv)
    from optbench.confdir import SEARCHPATH_KEY, open_keys, searchpath_entries, with_searchpath

    if searchpath_entries(overrides):  # OPTBENCH_CONFIG_PATH's folders join the command line's
        given = [a for a in argv if a.lstrip("+").split("=", 1)[0] == SEARCHPATH_KEY]
        argv = [a for a in argv if a not in given] + with_searchpath(given)
    sys.argv = ["optbench train", *open_keys(argv)]
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    _hydra_entry()
