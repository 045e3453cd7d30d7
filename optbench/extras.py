"""Optional dependencies (pyproject's extras): a missing one is one line naming the extra to install.

Most runs need none of them (a core install trains, reports and lists), so wandb, datasets,
huggingface_hub, tiktoken, submitit and scikit-learn are imported only where a feature uses them,
through `require` (import it now) or `check` (at config time: is it installed, without paying its
import). Either raises ConfigError, which every verb prints as one line with exit status 2.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from optbench.errors import ConfigError

# module -> the extra that installs it (pyproject.toml's [project.optional-dependencies])
EXTRAS = {
    "wandb": "wandb",
    "datasets": "data",
    "huggingface_hub": "data",
    "tiktoken": "data",
    "submitit": "cluster",
    "hydra_plugins.hydra_submitit_launcher": "cluster",
    "sklearn": "suite",
}

# Hydra launchers (hydra/launcher=NAME) that are the submitit plugin's: our local/slurm yamls extend it
SUBMITIT_LAUNCHERS = ("local", "slurm", "submitit_local", "submitit_slurm")


def message(module: str, what: str, extra: str | None = None) -> str:
    extra = extra or EXTRAS[module]
    return f"{what} needs the '{extra}' extra: pip install 'optbench[{extra}]'"


def installed(module: str) -> bool:
    """Whether `module` can be imported (found on the path), without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None
        return False


def check(module: str, what: str, extra: str | None = None) -> None:
    """Raise ConfigError naming the extra unless `module` is installed (nothing imported)."""
    if not installed(module):
        raise ConfigError(message(module, what, extra))


def require(module: str, what: str, extra: str | None = None) -> ModuleType:
    """Import `module`, or raise ConfigError naming the extra that installs it. A module that is
    there but fails on one of its own imports names that one too (the extra reinstalls it)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = e.name or ""
        own = not missing or missing == module or module.startswith(missing + ".") or missing.startswith(module + ".")
        detail = "" if own else f" ({module} could not import {missing})"
        raise ConfigError(message(module, what, extra) + detail) from None


def check_launcher(overrides: list[str]) -> None:
    """`hydra/launcher=local|slurm` (submitit's launchers) need the 'cluster' extra: said before
    Hydra reports a missing 'hydra/launcher/submitit_local' config."""
    for o in overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key.strip() == "hydra/launcher" and value.strip() in SUBMITIT_LAUNCHERS:
            check("hydra_plugins.hydra_submitit_launcher", f"hydra/launcher={value.strip()}")
