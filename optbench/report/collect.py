"""Find run directories under the paths a user names and read the three files of each.

A run directory is any directory holding summary.json (DESIGN.md contract); single runs and
multiruns mix freely, since a multirun is only a folder of run directories.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from optbench.errors import ConfigError

# Config keys that never make two runs different configurations: seeds are what we average
# over; the rest are paths, bookkeeping and display switches.
IGNORED_KEYS = ("seed", "name", "overrides", "resolved", "versions", "data.root", "logger",
                "trainer.progress", "trainer.device", "trainer.resume", "trainer.checkpoint_every",
                "trainer.log_every", "hydra", "lr_index")


@dataclass
class Run:
    path: Path
    summary: dict
    config: dict  # flattened "a.b.c" -> value
    train: list[dict] = field(default_factory=list)  # metrics.jsonl lines of type train
    evals: list[dict] = field(default_factory=list)  # ... and of type eval

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def task(self) -> str:
        return str(self.summary.get("task") or self.config.get("task.name", "?"))

    @property
    def optimizer(self) -> str:
        return str(self.summary.get("optimizer") or self.config.get("optimizer.name", "?"))

    @property
    def lr(self) -> float | None:
        lr = self.summary.get("lr", self.config.get("optimizer.lr"))
        return float(lr) if isinstance(lr, (int, float)) else None

    @property
    def benchmark(self) -> str | None:
        """The community benchmark the run's preset reproduces (task.benchmark, C7), or None."""
        b = self.summary.get("benchmark") or self.config.get("task.benchmark")
        return str(b) if b else None

    def value(self, key: str):
        """A grouping key: a config key ("optimizer.lr") or a summary field ("optimizer")."""
        if key in self.config:
            return self.config[key]
        if key in self.summary:
            return self.summary[key]
        alias = {"optimizer": "optimizer.name", "task": "task.name", "scheduler": "scheduler.name",
                 "lr": "optimizer.lr"}.get(key)
        return self.config.get(alias) if alias else None


def _number(v):
    """summary.json writes nan/inf as strings (strict JSON); turn them back into floats."""
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    return v


def flatten(node, prefix: str = "") -> dict:
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = tuple(node) if isinstance(node, list) else node
    return out


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append({k: _number(v) for k, v in json.loads(line).items()})
        except json.JSONDecodeError:  # a run killed mid-line: keep what is whole
            continue
    return rows


def load_run(path: Path) -> Run:
    """A run whose summary.json or config.yaml cannot be read stays in the report as status
    'unreadable' (a failure that counts), with whatever of its config could be read."""
    config = {}
    try:
        if (path / "config.yaml").exists():
            config = flatten(OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=False))
    except Exception:  # noqa: BLE001 - any parse error means the same: the run's config is unknown
        config = {}
    holder = None if (path / "summary.json").exists() else _lock_holder(path)
    try:
        summary = {k: _number(v) for k, v in json.loads((path / "summary.json").read_text()).items()}
    except FileNotFoundError:  # a run that stopped (or is starting) before it wrote its summary
        summary = {"status": "running" if holder else "failed",
                   "stop_reason": f"no summary.json yet (held by {holder})" if holder
                   else "no summary.json: the run stopped before writing one",
                   "task": config.get("task.name"), "optimizer": config.get("optimizer.name"),
                   "benchmark": config.get("task.benchmark"), "seed": config.get("seed")}
    except (ValueError, AttributeError, OSError, UnicodeDecodeError):
        summary = {"status": "unreadable", "stop_reason": "summary.json unreadable",
                   "benchmark": config.get("task.benchmark"), "seed": config.get("seed")}
    lines = read_jsonl(path / "metrics.jsonl")
    return Run(path=path, summary=summary, config=config,
               train=[r for r in lines if r.get("type") == "train"],
               evals=[r for r in lines if r.get("type") == "eval"])


def _lock_holder(path: Path) -> str | None:
    from optbench.train.runlock import holder

    return holder(path)


# What a run directory holds before its summary.json: our config.yaml and metrics.jsonl, and
# Hydra's .hydra/ from the moment the job starts. A directory with one of them and no summary is a
# run that died first (kill -9, out of memory): a failure the report counts, never one it drops.
RUN_MARKERS = ("summary.json", "config.yaml", "metrics.jsonl", ".hydra/config.yaml")


def _is_run_dir(p: Path) -> bool:
    return p.name != ".hydra" and any((p / m).is_file() for m in RUN_MARKERS)


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConfigError(f"report: '{p}' does not exist; pass run directories or multirun directories")
        if _is_run_dir(p):
            found.append(p)
        else:
            marks = (m for name in RUN_MARKERS for m in p.rglob(name.rsplit("/", 1)[-1]))
            owners = {m.parent.parent if m.parent.name == ".hydra" else m.parent for m in marks}
            found.extend(sorted(d for d in owners if _is_run_dir(d)))
    # the same run named twice (a run dir and its multirun) counts once
    unique = list(dict.fromkeys(f.resolve() for f in found))
    if not unique:
        raise ConfigError(f"report: no run directories (with summary.json) under {', '.join(map(str, paths))}")
    return unique


def load_runs(paths: list[str | Path]) -> list[Run]:
    return [load_run(p) for p in find_run_dirs(paths)]


def is_ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
