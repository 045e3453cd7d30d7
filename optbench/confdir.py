"""Reading conf/ as data: which options a group has and their one-line descriptions.

A user's own config folders join conf/ the way Hydra sees them: `hydra.searchpath=[file://DIR]` on
a command line (any verb that composes a config registers it here) and, for a permanent one, the
OPTBENCH_CONFIG_PATH environment variable (folders separated by ':'). conf/ comes first, as in
Hydra, so a user's file never shadows a built-in one of the same name.
"""

from __future__ import annotations

import os
from pathlib import Path

from optbench import CONF_DIR

GROUPS = ("task", "model", "data", "optimizer", "scheduler", "trainer", "logger", "experiment")
ENV_VAR = "OPTBENCH_CONFIG_PATH"
SEARCHPATH_KEY = "hydra.searchpath"
BASE_PREFIX = "_"  # optimizer/_base.yaml: shared keys, pulled by each option's defaults list

_cli_dirs: list[str] = []  # searchpath entries of the command line being run


def _env_dirs() -> list[str]:
    return [d for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d.strip()]


def _as_entry(d: str) -> str:
    """A folder as a Hydra search-path entry (file://ABS); pkg:// and file:// pass unchanged."""
    return d if "://" in d else "file://" + str(Path(d).expanduser().resolve())


def searchpath_entries(overrides: list[str] | None = None) -> list[str]:
    """The command line's `hydra.searchpath` entries, then OPTBENCH_CONFIG_PATH's."""
    cli = _parse_searchpath(overrides) if overrides is not None else list(_cli_dirs)
    return list(dict.fromkeys([*cli, *(_as_entry(d) for d in _env_dirs())]))


def use_overrides(overrides: list[str]) -> None:
    """Remember a command line's `hydra.searchpath` so that listing and loading options see it."""
    _cli_dirs[:] = _parse_searchpath(overrides)


def with_searchpath(overrides: list[str]) -> list[str]:
    """`overrides` with one `hydra.searchpath` override holding the command line's entries and the
    environment's (Hydra takes one such override; a second one would replace the first)."""
    entries = searchpath_entries(overrides)
    rest = [o for o in overrides if o.lstrip("+").split("=", 1)[0] != SEARCHPATH_KEY]
    return rest + ([f"{SEARCHPATH_KEY}=[{','.join(entries)}]"] if entries else [])


# keys a yaml cannot list in advance: a custom fallback's or Schedule-Free base's class and arguments
OPEN_KEYS = ("optimizer.fallback.target", "optimizer.base_args.")


def open_keys(overrides: list[str]) -> list[str]:
    """`optimizer.fallback.target=X` as `++optimizer.fallback.target=X` (add or override): Hydra's
    struct mode refuses a key its yaml lacks, and these are the class and arguments of a user's own
    optimizer inside a hybrid; every other key keeps Hydra's check."""
    return [
        f"++{o}" if not o.startswith(("+", "~")) and o.split("=", 1)[0].startswith(OPEN_KEYS) and "=" in o else o
        for o in overrides
    ]


def _parse_searchpath(overrides: list[str]) -> list[str]:
    out: list[str] = []
    for o in overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key != SEARCHPATH_KEY:
            continue
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        out.extend(v.strip().strip("'\"") for v in value.split(",") if v.strip())
    return out


def search_dirs() -> list[Path]:
    """conf/, then each user folder (file:// entries; Hydra resolves pkg:// entries itself)."""
    dirs = [CONF_DIR]
    for entry in searchpath_entries():
        if entry.startswith("file://"):
            dirs.append(Path(entry[len("file://") :]))
        elif "://" not in entry:
            dirs.append(Path(entry))
    return dirs


def option_path(group: str, option: str) -> Path:
    """The yaml Hydra would load for `group=option`: the first folder that has it."""
    for d in search_dirs():
        p = d / group / f"{option}.yaml"
        if p.is_file():
            return p
    return CONF_DIR / group / f"{option}.yaml"


def group_options(group: str) -> list[str]:
    """The options of a group; a yaml whose name starts with `_` is a base the others pull in their
    defaults list (optimizer/_base.yaml), not an option."""
    names = {
        p.stem
        for d in search_dirs()
        if (d / group).is_dir()
        for p in (d / group).glob("*.yaml")
        if not p.stem.startswith(BASE_PREFIX)
    }
    return sorted(names)


def is_builtin(group: str, option: str) -> bool:
    return (CONF_DIR / group / f"{option}.yaml").is_file()


def description(group: str, option: str) -> str:
    """The first comment line of a yaml (skipping Hydra's `# @package` directive)."""
    path = option_path(group, option)
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("# ").strip()
        if line and not line.startswith("#"):
            break
    return ""


def as_dict(cfg) -> dict:
    """A config node (DictConfig, resolved) or a plain mapping, as a plain dict."""
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def load_option(group: str, option: str) -> dict:
    """An option's yaml as Hydra composes it into its group: its defaults list merged in order
    (`_base` or `/optimizer/_base`; `_self_` is the yaml itself, last when not listed), unresolved."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(_compose_option(group, option, ()), resolve=False)


def _compose_option(group: str, option: str, seen: tuple[str, ...]):
    """The part of Hydra's defaults-list semantics an option yaml uses: entries naming another
    config merged into this one, of the same group (`_base`) or by absolute path (`/group/name`),
    and `_self_`; group selections (`- /model: airbench`) and `x@pkg` belong to other packages: skipped."""
    from omegaconf import DictConfig, OmegaConf

    from optbench.errors import ConfigError

    path = option_path(group, option)
    here = f"{group}/{option}"
    if here in seen:
        raise ConfigError(f"{path}: its defaults list includes itself ({' -> '.join([*seen, here])})")
    if not path.is_file():  # a schema in Hydra's ConfigStore (trainer/_schema: optbench/schema.py)
        from hydra.core.config_store import ConfigStore
        from hydra.plugins.config_source import ConfigLoadError

        try:
            return ConfigStore.instance().load(f"{here}.yaml").node
        except ConfigLoadError:  # neither a file nor a stored node
            raise ConfigError(f"unknown {group} '{option}'; valid choices: {', '.join(group_options(group))}") from None
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path} is not a mapping of keys to values")
    entries = cfg.pop("defaults", None) or []
    if "_self_" not in entries:
        entries = [*entries, "_self_"]
    parts = []
    for entry in entries:
        if entry == "_self_":
            parts.append(cfg)
        elif isinstance(entry, str) and "@" not in entry:
            ref_group, _, ref = entry.lstrip("/").rpartition("/") if entry.startswith("/") else (group, "", entry)
            parts.append(_compose_option(ref_group, ref, (*seen, here)))
        # a mapping (`/model: airbench` in a task yaml) selects another group's option, and `name@pkg`
        # places a config elsewhere: Hydra puts those in other packages, not in this option's keys
    return OmegaConf.merge(*parts)
