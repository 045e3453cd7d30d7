"""Find run directories under the paths a user names and read the three files of each.

A run directory is any directory holding summary.json (docs/design.md contract); single runs and
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
IGNORED_KEYS = (
    "seed",
    "name",
    "overrides",
    "resolved",
    "versions",
    "data.root",
    "logger",
    "trainer.progress",
    "trainer.device",
    "trainer.resume",
    "trainer.checkpoint_every",
    "trainer.log_every",
    "hydra",
    "lr_index",
)

# Keys that differ between two runs of one configuration (paths, names, bookkeeping, display):
# runs equal in everything else are the same computation twice (`-m seed=0,0`), not two samples.
IDENTITY_IGNORED = (
    "name",
    "overrides",
    "versions",
    "hydra",
    "logger",
    "trainer.progress",
    "trainer.resume",
    "trainer.log_every",
    "trainer.checkpoint_every",
    "lr_index",
    "data.root",
)


@dataclass
class Run:
    path: Path
    summary: dict
    config: dict  # flattened "a.b.c" -> value
    train: list[dict] = field(default_factory=list)  # metrics.jsonl lines of type train
    evals: list[dict] = field(default_factory=list)  # ... and of type eval
    notes: list[str] = field(default_factory=list)  # what could not be read, said under the report's table

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
        if key in ("task", "optimizer"):  # the properties: summary field, else the config's name
            return getattr(self, key)
        if self.config.get(key) is not None:
            return self.config[key]
        if self.summary.get(key) is not None:  # a null field (a failed run's summary) is no value
            return self.summary[key]
        alias = {"scheduler": "scheduler.name", "lr": "optimizer.lr"}.get(key)
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


def read_jsonl(path: Path, notes: list[str] | None = None) -> list[dict]:
    """The whole lines of a metrics.jsonl. A line that is not a JSON object (a run killed mid-line,
    non-UTF-8 bytes from a bad disk) is skipped, and `notes` gets one line saying how many and where."""
    rows = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return rows
    except OSError as e:
        if notes is not None:
            notes.append(f"{path}: unreadable ({e.strerror or e}); its curves are missing")
        return rows
    bad: list[int] = []
    for i, line in enumerate(raw.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            rows.append({str(k): _number(v) for k, v in obj.items()})
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            bad.append(i)
    if bad and notes is not None:
        where = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        notes.append(f"{path}: {len(bad)} unreadable line{'s' if len(bad) > 1 else ''} skipped (line {where})")
    return rows


def _summary_problem(path: Path) -> tuple[dict | None, str]:
    """(summary, "") or (None, why it cannot be read)."""
    f = path / "summary.json"
    try:
        raw = f.read_bytes()
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    if not raw.strip(b"\x00 \t\r\n"):
        return None, "is empty or zero-filled"
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "is not text (binary or corrupted bytes)"
    except ValueError as e:
        return None, f"is not valid JSON (truncated?: {e})"
    if not isinstance(obj, dict):
        return None, f"is not a JSON object (a {type(obj).__name__})"
    return {str(k): _number(v) for k, v in obj.items()}, ""


def load_run(path: Path) -> Run:
    """A run whose summary.json cannot be read stays in the report as status 'unreadable' (a
    failure that counts, listed with its path under the table), with whatever of its config
    could be read; bad metrics.jsonl lines are skipped with a note."""
    config = {}
    notes: list[str] = []
    try:
        if (path / "config.yaml").exists():
            loaded = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=False)
            config = flatten(loaded) if isinstance(loaded, dict) else {}
    except Exception:  # noqa: BLE001 - any parse error means the same: the run's config is unknown
        config = {}
    if not (path / "summary.json").exists():  # a run that stopped (or is starting) before it wrote its summary
        holder = _lock_holder(path)
        summary = {
            "status": "running" if holder else "failed",
            "stop_reason": f"no summary.json yet (held by {holder})"
            if holder
            else "no summary.json: the run stopped before writing one",
            "task": config.get("task.name"),
            "optimizer": config.get("optimizer.name"),
            "benchmark": config.get("task.benchmark"),
            "seed": config.get("seed"),
        }
        why = ""
    else:
        summary, why = _summary_problem(path)
    if summary is None:
        notes.append(f"{path / 'summary.json'} {why}: the run counts as failed (unreadable)")
        summary = {
            "status": "unreadable",
            "stop_reason": "summary.json unreadable",
            "task": config.get("task.name"),
            "optimizer": config.get("optimizer.name"),
            "benchmark": config.get("task.benchmark"),
            "seed": config.get("seed"),
        }
    lines = read_jsonl(path / "metrics.jsonl", notes)
    return Run(
        path=path,
        summary=summary,
        config=config,
        train=[r for r in lines if r.get("type") == "train"],
        evals=[r for r in lines if r.get("type") == "eval"],
        notes=notes,
    )


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


def identity(run: Run) -> tuple | None:
    """What makes a run the configuration it is; None when its config or summary could not be read."""
    if not run.config or run.status == "unreadable":
        return None
    ignored = lambda k: any(k == i or k.startswith(i + ".") for i in IDENTITY_IGNORED)  # noqa: E731
    return tuple(sorted((k, repr(v)) for k, v in run.config.items() if not ignored(k)))


def find_duplicates(runs: list[Run]) -> dict[Path, Run]:
    """path of each repeated run -> the run it repeats (the first completed one of its configuration)."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        key = identity(r)
        if key is not None:
            groups.setdefault(key, []).append(r)
    dups = {}
    for same in groups.values():
        if len(same) < 2:
            continue
        same = sorted(same, key=lambda r: (r.status != "completed", str(r.path)))
        for r in same[1:]:
            dups[r.path] = same[0]
    return dups
