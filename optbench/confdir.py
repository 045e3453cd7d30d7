"""Reading conf/ as data: which options a group has and their one-line descriptions."""
from __future__ import annotations

from optbench import CONF_DIR

GROUPS = ("task", "model", "data", "optimizer", "scheduler", "trainer", "logger", "experiment")


def group_options(group: str) -> list[str]:
    d = CONF_DIR / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def description(group: str, option: str) -> str:
    """The first comment line of a yaml (skipping Hydra's `# @package` directive)."""
    path = CONF_DIR / group / f"{option}.yaml"
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
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
    cfg.pop("defaults", None)
    return OmegaConf.to_container(cfg, resolve=False)
