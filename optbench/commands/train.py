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
_INFO_FLAGS = {
    "-h",
    "--help",
    "--hydra-help",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--resolve",
    "--shell-completion",
    "-sc",
    "--version",
}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    from optbench.train.job import run_job

    return run_job(cfg)


# Hydra flags followed by a value (`--cfg job`, `-cn name`): that value is not an override.
_VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
    "--info",
    "-i",
}


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
                    raise ConfigError(
                        f"train: {given} is invalid; valid choices: {', '.join(f'{a} {v}' for v in valid)}"
                    )


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

        if not multirun and int(cfg.trainer.nproc) > 1 and "LOCAL_RANK" not in os.environ:
            from omegaconf import OmegaConf

            from optbench.train.runlock import refuse_if_held

            # rank 0 takes the lock; a busy directory is one line here, not a failed torchrun
            refuse_if_held(str(OmegaConf.select(cfg, "hydra.run.dir")))
        maybe_relaunch_under_torchrun(cfg, argv)
    else:
        cfg = None
    from optbench.confdir import SEARCHPATH_KEY, open_keys, searchpath_entries, with_searchpath

    if searchpath_entries(overrides):  # OPTBENCH_CONFIG_PATH's folders join the command line's
        given = [a for a in argv if a.lstrip("+").split("=", 1)[0] == SEARCHPATH_KEY]
        argv = [a for a in argv if a not in given] + with_searchpath(given)
    out_dir = None
    if cfg is not None and int(os.environ.get("RANK", 0)) == 0:
        out_dir, argv = _claim_output_dir(cfg, argv, multirun)
    sys.argv = ["optbench train", *open_keys(argv)]
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    from optbench.train import runlock

    locked = out_dir is not None and not multirun
    if locked:  # before Hydra writes .hydra/ into it: a busy directory is left as it is
        runlock.acquire(out_dir)
    try:
        _hydra_entry()
    finally:
        if locked:
            runlock.release(out_dir)
    if multirun and out_dir is not None:
        _exit_on_failed_jobs(out_dir)


def _quoted(value: str) -> str:
    """A value for Hydra's override grammar whatever it holds (a name with spaces or commas)."""
    import re

    # Hydra reads a backslash as an escape only before a quote (or the closing quote)
    inner = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    inner = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, inner)
    return f"'{inner}'"


def _claim_output_dir(cfg, argv: list[str], multirun: bool):
    """The run (or sweep) directory, resolved once here and handed to Hydra, so that this process
    locks the one Hydra writes to. A default one (`outputs/<date>/<time>-<name>-<tag>`) is created
    here with an exclusive mkdir: should another run have the same name, tag included, this one
    takes a longer name instead of sharing it. A directory given on the command line is used as is
    (resuming relies on it)."""
    from omegaconf import OmegaConf

    from optbench.dirnames import unique_tag
    from optbench.train.launch import _has_override

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    path = str(OmegaConf.select(cfg, key))
    if _has_override(argv, key):
        return path, argv
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    while True:
        try:
            os.mkdir(path)
            break
        except FileExistsError:
            path = f"{path}-{unique_tag()}"
    return path, [*argv, f"{key}={_quoted(path)}"]


def _exit_on_failed_jobs(sweep_dir: str) -> None:
    """A sweep in which a job failed exits 1, naming how many of how many, so a script notices;
    the jobs that ran are in their directories. Jobs run in this process (the basic launcher)
    are counted as they end; with submitit's launchers they ran elsewhere, and their summaries
    under the sweep directory tell."""
    from pathlib import Path

    from optbench.train.job import OUTCOMES

    outcomes = [status for _, status in OUTCOMES]
    failed = [str(d) for d, status in OUTCOMES if status in ("failed", "locked")]
    if not outcomes:
        import json

        for d in sorted(p.parent for p in Path(sweep_dir).glob("*/.hydra")):
            try:
                status = json.loads((d / "summary.json").read_text()).get("status")
            except (OSError, ValueError, AttributeError):
                status = "failed"  # no summary (or no readable one): it did not finish
            outcomes.append(status)
            if status == "failed":
                failed.append(str(d))
    if failed:
        print(
            f"optbench: {len(failed)} of {len(outcomes)} jobs failed: {', '.join(failed)}", file=sys.stderr, flush=True
        )
        raise SystemExit(1)
