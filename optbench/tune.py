"""The tuning protocol (library; `optbench tune` is optbench/commands/tune.py): equal budgets, then seeds.

For every optimizer the same number of trials over its search space: the yaml's `lr_grid`
(grid), or log-uniform draws over the grid's range and any `search_space` the yaml declares
(random, or scrambled Sobol points for quasi-random). Each trial trains a full schedule; the
best trial is the one with the best VALIDATION metric at the end of the schedule (the final
evaluation, never an intermediate peak), so the test set plays no part in the choice (on a
language-model task, whose reported metric is already val_loss, the choice is select_loss on a
held-out slice of the val shard after the reported tokens: task.select_tokens). The best
configuration is then rerun with N fresh seeds and reported on the test metric. tune.json
records the budget (trials per optimizer, steps per run, total steps) beside the runs, and
`optbench report` prints it under the table.

Two rounds: every optimizer's trials, then every optimizer's seed runs. Without launcher
overrides a round runs in this process, one run after another. With them (`hydra/launcher=local`:
submitit's processes on this machine; `hydra/launcher=slurm`: SLURM jobs) the round's runs are
handed to that Hydra launcher plugin as one list of override lists, so they run in parallel;
each run records where it ran (launcher, host, job id) in its directory and tune.json.

Resumable: a trial or seed run whose directory already holds a finished summary.json
(completed or diverged) is read back, not rerun (nor submitted); an interrupted one resumes from
its checkpoint. A run that fails is recorded with its status; the protocol goes on.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from optbench.errors import ConfigError, choices

SEARCHES = ("grid", "random", "sobol")
FINISHED = ("completed", "diverged")  # a rerun of either would give the same answer


# --------------------------------------------------------------------------- search spaces
def optimizer_space(name: str) -> tuple[list[float], dict]:
    """(lr_grid, search_space) from conf/optimizer/<name>.yaml (or the user's config folder's)."""
    from optbench.confdir import group_options, load_option, option_path

    if name not in group_options("optimizer"):
        raise ConfigError(f"unknown optimizer '{name}'; valid choices: {choices(group_options('optimizer'))}")
    cfg = load_option("optimizer", name)
    grid = [float(x) for x in (cfg.get("lr_grid") or [])]
    if not grid:
        raise ConfigError(f"optimizer '{name}' has no lr_grid in {option_path('optimizer', name)}; add one to tune it")
    space = {"lr": {"low": min(grid), "high": max(grid), "log": True}}
    for key, spec in (cfg.get("search_space") or {}).items():
        space[str(key)] = {"low": float(spec["low"]), "high": float(spec["high"]), "log": bool(spec.get("log", True))}
    return grid, space


def grid_points(grid: list[float], n: int) -> list[dict]:
    """n points of the grid, evenly spread and including both ends when 1 < n < len(grid)."""
    if n > len(grid):
        raise ConfigError(f"--trials={n} is more than the lr_grid has ({len(grid)}); use --search random or sobol")
    if n == 1:  # one trial: the grid's centre, which each yaml puts at its default lr
        return [{"lr": grid[(len(grid) - 1) // 2]}]
    idx = sorted({int(round(i)) for i in np.linspace(0, len(grid) - 1, n)})
    return [{"lr": grid[i]} for i in idx]


def sampled_points(space: dict, n: int, method: str, seed: int) -> list[dict]:
    keys = sorted(space)
    if method == "sobol":
        from scipy.stats import qmc

        with warnings.catch_warnings():  # Sobol balance is best at powers of 2; any n is valid
            warnings.simplefilter("ignore")
            u = qmc.Sobol(d=len(keys), scramble=True, seed=seed).random(n)
    else:
        u = np.random.default_rng(seed).random((n, len(keys)))
    points = []
    for row in u:
        p = {}
        for k, x in zip(keys, row):
            lo, hi, log = space[k]["low"], space[k]["high"], space[k]["log"]
            p[k] = float(math.exp(math.log(lo) + x * (math.log(hi) - math.log(lo)))) if log else lo + x * (hi - lo)
        points.append(p)
    return points


def trial_points(name: str, search: str, trials: int | None, seed: int) -> list[dict]:
    grid, space = optimizer_space(name)
    if search == "grid":
        return grid_points(grid, trials or len(grid))
    return sampled_points(space, trials or 8, search, seed)


# --------------------------------------------------------------------------- running
WHERE_FILE = "tune_job.json"  # in each run dir: where the run ran (launcher, host, job id)
IN_PROCESS = "in_process"  # the launcher name of a run trained by this process itself


def point_overrides(point: dict) -> list[str]:
    return [f"optimizer.{k}={v:.6g}" for k, v in sorted(point.items())]


def point_slug(point: dict) -> str:
    return ",".join(f"{k}={v:.3g}" for k, v in sorted(point.items()))


def finished_summary(overrides: list[str], run_dir: Path) -> dict | None:
    """A finished run's summary, when `run_dir` holds one made with these overrides; None when the
    run is still to do (absent, interrupted, failed). A directory made with other settings is
    refused rather than mixed into this tune."""
    done = run_dir / "summary.json"
    if not done.exists():
        return None
    try:
        summary = json.loads(done.read_text())
    except (OSError, ValueError):
        return None  # torn: the run's own resume repairs or redoes it
    made_with = (
        list(OmegaConf.load(run_dir / "config.yaml").get("overrides") or [])
        if (run_dir / "config.yaml").exists()
        else None
    )
    if made_with is not None and [_unopened(o) for o in made_with] != overrides:
        raise ConfigError(
            f"tune: {run_dir} was made with other settings ({' '.join(made_with)}); use another --name or delete it"
        )
    if summary.get("status") in FINISHED:
        print(f"tune: done already ({summary['status']}): {run_dir}", flush=True)
        return summary
    return None


def _where(launcher: str, job_id: str | None = None) -> dict:
    import os
    import socket

    return {"launcher": launcher, "host": socket.gethostname(), "job_id": job_id, "pid": os.getpid()}


def _read_summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):  # killed before the loop wrote one (OOM, scancel, a lost node)
        return {"status": "failed", "steps": 0}


def _read_where(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / WHERE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _train_here(overrides: list[str], run_dir: Path) -> dict:
    """Train one run into run_dir; a failure is its summary's status (the loop records it), not an
    exception, so the protocol goes on."""
    from optbench.config import compose, validate
    from optbench.train import train
    from optbench.train.job import _print_result

    try:
        cfg = compose(overrides)
        with open_dict(cfg):
            cfg.pop("hydra", None)
            cfg.overrides = overrides
        validate(cfg)
        summary = train(cfg, run_dir)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # the loop recorded status=failed in summary.json; the protocol goes on
        print(f"tune: run failed in {run_dir}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return _read_summary(run_dir)
    _print_result(summary, run_dir)
    return summary


def run_one(overrides: list[str], run_dir: Path) -> dict:
    """Train one run in-process, or read it back if it already finished with these overrides."""
    summary = finished_summary(overrides, run_dir)
    if summary is not None:
        return summary
    from optbench.train.rundir import write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / WHERE_FILE, _where(IN_PROCESS))
    return _train_here(overrides, run_dir)


def trial_job(cfg: DictConfig) -> dict:
    """The task function a Hydra launcher runs for each run of a round (in a submitit process, a
    SLURM job, or this process for hydra/launcher=basic): train into the job's output directory.
    A run that fails or diverges does not raise: a job that raised would make submitit's launcher
    raise for the whole round; its summary's status is the result."""
    import os

    from hydra.core.hydra_config import HydraConfig

    from optbench.train.rundir import write_json

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    launcher = str(hc.runtime.choices.get("hydra/launcher"))
    if launcher in ("local", "submitit_local"):
        _one_gpu_per_job(int(hc.job.num))
    # submitit's launchers give the job's id (SLURM's 1234_5); Hydra's basic one only its number
    job_id = (
        str(hc.job.get("id"))
        if str(hc.job.get("id")) not in ("None", str(hc.job.num), f"job_id_for_{hc.job.num}")
        else None
    )
    if int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0) == 0:
        write_json(run_dir / WHERE_FILE, _where(launcher, job_id))
    from optbench.train.job import run_job

    try:  # `optbench train -m`'s own job: validation, the run lock, DDP ranks (SLURM tasks), the summary
        run_job(cfg)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 -- a stop signal's SystemExit included: recorded, not raised
        if launcher == "basic" and _read_summary(run_dir).get("status") == "interrupted":
            raise  # a stop signal to the tune's own process (the basic launcher's): the tune stops too
        print(f"tune: run stopped in {run_dir}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    return {"status": _read_summary(run_dir).get("status"), "run_dir": str(run_dir)}


def _one_gpu_per_job(job_num: int) -> None:
    """submitit's local executor shows every job the same GPUs (0..gpus_per_node-1): a round of 8
    trials with gpus_per_node=8 would all train on GPU 0. A single-process job takes one of them,
    round-robin by its number (set before CUDA starts in this fresh process). A job of several
    tasks (tasks_per_node > 1, DDP) keeps them all."""
    import os

    if int(os.environ.get("SUBMITIT_LOCAL_NTASKS", os.environ.get("WORLD_SIZE", "1")) or 1) > 1:
        return
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if len(visible) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[job_num % len(visible)]


def _unopened(override: str) -> str:
    """An override as tune wrote it, before confdir.open_keys made it `++key=value`."""
    from optbench.confdir import OPEN_KEYS

    return override[2:] if override.startswith("++") and override[2:].startswith(OPEN_KEYS) else override


def is_launcher_override(override: str) -> bool:
    """`hydra/launcher=...` or `hydra.launcher.KEY=...`: where runs go, not what they train."""
    key = override.lstrip("+~").split("=", 1)[0]
    return key == "hydra/launcher" or key.startswith("hydra.launcher.")


def split_launcher(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(run overrides, Hydra launcher overrides), each in the order given."""
    return [o for o in overrides if not is_launcher_override(o)], [o for o in overrides if is_launcher_override(o)]


def launcher_name(launcher: list[str] | tuple[str, ...]) -> str:
    """The launcher a round runs under: the hydra/launcher option chosen, or in-process."""
    for o in launcher:
        key, _, value = o.lstrip("+").partition("=")
        if key == "hydra/launcher":
            return value
    return IN_PROCESS if not launcher else "basic"


def launch_round(runs: list[tuple[list[str], Path]], out_dir: Path, launcher: list[str]) -> None:
    """Hand a round's runs (overrides, run dir) to the Hydra launcher plugin `launcher` selects, as
    Hydra's multirun would: one override list per job, the job's directory as its sweep subdir.
    A launcher that raises (a job killed, a cluster refusing the array) is reported; the runs'
    own directories then tell what each one did."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode

    from optbench import CONF_DIR
    from optbench.commands.train import _quoted
    from optbench.confdir import open_keys, with_searchpath

    master = [*launcher, f"hydra.sweep.dir={_quoted(str(out_dir.resolve()))}"]
    jobs = [
        open_keys(with_searchpath([*ov, f"hydra.sweep.subdir={_quoted(str(d.relative_to(out_dir)))}"]))
        for ov, d in runs
    ]
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name="optbench", config_search_path=create_config_search_path(str(CONF_DIR)))
    try:
        cfg = hydra.compose_config(
            "config", overrides=with_searchpath(master), run_mode=RunMode.MULTIRUN, with_log_configuration=False
        )
        context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(cfg))
        plugin = Plugins.instance().instantiate_launcher(hydra_context=context, task_function=trial_job, config=cfg)
        print(f"tune: launching {len(jobs)} runs with hydra/launcher={launcher_name(launcher)}", flush=True)
        try:
            plugin.launch(jobs, initial_job_idx=0)
        except (KeyboardInterrupt, ConfigError):
            raise
        except Exception as e:  # noqa: BLE001 -- each run's summary (or its absence) is its result
            print(
                f"tune: the launcher reported: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        GlobalHydra.instance().clear()


def launcher_choices() -> list[str]:
    """hydra/launcher options: optbench's yamls (local, slurm) and those Hydra's plugins register."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    from optbench import CONF_DIR

    Plugins.instance()  # registers the installed plugins' configs
    try:
        registered = [n.removesuffix(".yaml") for n in ConfigStore.instance().list("hydra/launcher")]
    except OSError:
        registered = []
    ours = [p.stem for p in (Path(CONF_DIR) / "hydra" / "launcher").glob("*.yaml")]
    return sorted({*ours, *registered, "basic"})


def check_launcher(overrides: list[str], launcher: list[str]) -> None:
    from optbench.config import precheck

    name = launcher_name(launcher)
    if name not in launcher_choices():
        raise ConfigError(f"tune: hydra/launcher={name} is invalid; valid choices: {', '.join(launcher_choices())}")
    precheck([*overrides, *launcher], multirun=True)


def run_round(runs: list[tuple[list[str], Path]], out_dir: Path, launcher: list[str]) -> list[dict]:
    """Every run of a round, finished ones read back: [{summary, where, reused}] in order."""
    results: list[dict | None] = []
    todo = []
    for ov, d in runs:
        s = finished_summary(ov, d)
        results.append(None if s is None else {"summary": s, "where": _read_where(d), "reused": True})
        if s is None:
            todo.append((ov, d))
    if todo and not launcher:
        done = {d: run_one(ov, d) for ov, d in todo}
    elif todo:
        launch_round(todo, out_dir, list(launcher))
        done = {d: _read_summary(d) for _, d in todo}
    for i, (_, d) in enumerate(runs):
        if results[i] is None:
            results[i] = {"summary": done[d], "where": _read_where(d), "reused": False}
    return results


def score(summary: dict, metric: str, mode: str) -> float:
    """The validation metric at the END of the schedule; a run that did not complete ranks last."""
    final_eval = summary.get("final_eval") or {}
    if summary.get("status") != "completed":
        return -math.inf if mode == "max" else math.inf
    if metric not in final_eval:
        raise ConfigError(
            f"tune: --select-metric {metric} is not among the final evaluation's metrics "
            f"({', '.join(sorted(final_eval))}); set data.val_split or choose another"
        )
    v = float(final_eval[metric])
    if not math.isfinite(v):
        return -math.inf if mode == "max" else math.inf
    return v


def base_settings(overrides: list[str], select_metric: str | None) -> tuple[list[str], str, str]:
    """Add a validation split when the task has none; pick the selection metric and its mode."""
    from optbench.config import compose

    cfg = compose(overrides)
    extra = []
    data = cfg.get("data") or {}
    if "val_split" in data and not data.val_split:
        # a tenth of a synthetic set; 5,000 of real CIFAR-10's 50,000 (the usual held-out split)
        extra.append(f"data.val_split={int(data.n_train) // 10 if data.get('n_train') else 5000}")
    if not any(o.split("=", 1)[0] == "trainer.progress" for o in overrides):
        extra.append("trainer.progress=false")
    if cfg.task.get("kind") == "language_model":
        # the reported val_loss is the val shard's first val_tokens: choose on the slice after them
        if not cfg.task.get("select_tokens"):
            extra.append(f"task.select_tokens={default_select_tokens(cfg)}")
        select_metric = select_metric or "select_loss"
    test_metric = str(cfg.task.metric)
    metric = select_metric or (
        "val_" + test_metric.split("_", 1)[1] if test_metric.startswith("test_") else test_metric
    )
    known = final_eval_metrics(cfg)
    if select_metric is not None and known is not None and metric not in known:
        # refused here, not after the first trial has trained a full schedule
        raise ConfigError(
            f"tune: --select-metric {metric} is invalid: the final evaluation of task "
            f"{cfg.task.name} gives {', '.join(known)}"
        )
    return [*overrides, *extra], metric, metric_mode(metric, test_metric, str(cfg.task.mode))


def default_select_tokens(cfg) -> int:
    """As many held-out tokens as the reported evaluation uses, or what the val shard holds after
    them (whole sequences) when it is shorter."""
    seq_len, val_tokens = int(cfg.task.seq_len), int(cfg.task.val_tokens)
    d = cfg.data
    if d.get("synthetic"):
        shard = int(d.markov.val_tokens)
    else:
        try:
            from optbench.data.token_shards import find_shards, read_header

            shard = read_header(find_shards(d.root, d.val_pattern)[0])
        except (ConfigError, OSError):  # no shards yet: the run's own check names the problem
            return val_tokens
    room = (shard - val_tokens - 2) // seq_len * seq_len
    if room < seq_len:
        raise ConfigError(
            f"tune: the val shard ({shard} tokens) holds no held-out selection slice after "
            f"task.val_tokens={val_tokens}; lower task.val_tokens so that tune does not "
            "select on the reported tokens"
        )
    return min(val_tokens, room)


def final_eval_metrics(cfg) -> list[str] | None:
    """The metric names a run's evaluation reports, as tasks.py and data/fineweb.py write them
    (validation ones given the split base_settings adds); None for a task kind not known here,
    whose metrics only a trained run can tell (score() checks them then)."""
    kind = str(cfg.task.get("kind", ""))
    if kind == "image_classification":
        return ["test_acc", "test_loss", "val_acc", "val_loss"]
    if kind == "language_model":
        # select_loss: the held-out slice base_settings always gives a language-model tune
        return ["val_loss", *(["excess_loss"] if (cfg.get("data") or {}).get("synthetic") else []), "select_loss"]
    return None


def metric_mode(metric: str, test_metric: str, task_mode: str) -> str:
    """Whether the selection metric is maximised or minimised. The task's mode belongs to its own
    metric (test_acc: max); `--select-metric val_loss` on that task must still be minimised."""

    def stem(m: str) -> str:
        return m.split("_", 1)[1] if m.startswith(("val_", "test_")) else m

    if stem(metric) == stem(test_metric):
        return task_mode
    if stem(metric).endswith(("loss", "perplexity", "ppl", "error", "err")):
        return "min"
    if stem(metric).endswith(("acc", "accuracy")):
        return "max"
    return task_mode


def run_tune(
    optimizers: list[str],
    overrides: list[str],
    *,
    search: str = "grid",
    trials: int | None = 4,
    seeds: int = 3,
    out_dir: Path,
    name: str | None = None,
    launcher: list[str] | tuple[str, ...] = (),
    trial_seed: int = 0,
    select_metric: str | None = None,
) -> dict:
    """The protocol (module docstring) into out_dir; returns what it writes to out_dir/tune.json.
    `trials=None`: the lr_grid's size (grid) or 8 (sampled). `launcher`: Hydra launcher overrides
    (e.g. ["hydra/launcher=local"]); empty: every run in this process, one after another."""
    out_dir = Path(out_dir)
    launcher = list(launcher)
    if search not in SEARCHES:
        raise ConfigError(f"--search={search} is invalid; valid choices: {', '.join(SEARCHES)}")
    if seeds < 1:
        raise ConfigError(f"--seeds={seeds} is invalid: must be >= 1")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials={trials} is invalid: must be >= 1")
    if not optimizers:
        from optbench.confdir import group_options

        raise ConfigError(
            f"tune: --optimizers names no optimizer; give a comma-separated list, e.g. adamw,sgd "
            f"(valid choices: {choices(group_options('optimizer'))})"
        )
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") in ("optimizer", "seed", "optimizer.lr"):
            raise ConfigError(f"tune: '{o}' is chosen by the protocol; name optimizers with --optimizers")
    bad = [o for o in launcher if not o.lstrip("+~").startswith("hydra")]
    if bad:
        raise ConfigError(
            f"tune: launcher override '{bad[0]}' is invalid: launcher overrides are hydra/launcher=... "
            "or hydra.launcher.<key>=...; other overrides are for every run"
        )
    overrides, metric, mode = base_settings(overrides, select_metric)
    from optbench.config import compose, precheck

    if launcher:  # a launcher that does not exist or a bad launcher key: one line, before any run
        check_launcher(overrides, launcher)
    for opt in optimizers:  # a bad value is reported as itself, before any run or existing run is touched
        precheck([*overrides, f"optimizer={opt}", f"seed={trial_seed}"])
    points = {opt: trial_points(opt, search, trials, trial_seed) for opt in optimizers}
    counts = {len(p) for p in points.values()}
    if len(counts) > 1:  # equal budgets: every optimizer gets the smallest grid's number of trials
        n = min(counts)
        points = {opt: trial_points(opt, search, n, trial_seed) for opt in optimizers}
    n_trials = len(next(iter(points.values())))
    final_seeds = list(range(trial_seed + 1, trial_seed + 1 + seeds))
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name or out_dir.name,
        "optimizers": optimizers,
        "search": search,
        "trials_per_optimizer": n_trials,
        "select_metric": metric,
        "mode": mode,
        "trial_seed": trial_seed,
        "seeds": final_seeds,
        "overrides": overrides,
        "launcher": {"name": launcher_name(launcher), "overrides": launcher},
        "rounds": [],
        "trials": {},
        "best": {},
        "final": {},
    }

    # round 1: every optimizer's trials together (parallel under a launcher)
    runs, keys = [], []
    for opt in optimizers:
        for i, point in enumerate(points[opt]):
            ov = [*overrides, f"optimizer={opt}", *point_overrides(point), f"seed={trial_seed}"]
            runs.append((ov, out_dir / "trials" / opt / f"{i:02d}-{point_slug(point)}"))
            keys.append((opt, point))
    results = _timed_round(record, "trials", runs, out_dir, launcher)
    for (opt, point), (_, d), r in zip(keys, runs, results):
        s = r["summary"]
        record["trials"].setdefault(opt, []).append(
            {
                "point": point,
                "overrides": point_overrides(point),
                "run_dir": _rel(d, out_dir),
                "status": s.get("status"),
                "value": score(s, metric, mode),
                "steps": s.get("steps", 0),
                "where": r["where"],
                "reused": r["reused"],
            }
        )
    pick = max if mode == "max" else min
    for opt in optimizers:
        per = record["trials"][opt]
        best_i = pick(range(len(per)), key=lambda i: per[i]["value"])
        best = per[best_i]
        record["best"][opt] = {
            "trial": best_i,
            "overrides": " ".join(best["overrides"]),
            "value": best["value"],
            "point": best["point"],
            "run_dir": best["run_dir"],
        }
    _write(out_dir, record)

    # round 2: the chosen configuration of every optimizer, with fresh seeds
    runs, keys = [], []
    for opt in optimizers:
        best_ov = record["best"][opt]["overrides"].split()
        for seed in final_seeds:
            runs.append(
                ([*overrides, f"optimizer={opt}", *best_ov, f"seed={seed}"], out_dir / "final" / opt / f"seed={seed}")
            )
            keys.append((opt, seed))
    results = _timed_round(record, "final", runs, out_dir, launcher)
    for (opt, seed), (_, d), r in zip(keys, runs, results):
        s = r["summary"]
        record["final"].setdefault(opt, []).append(
            {
                "seed": seed,
                "run_dir": _rel(d, out_dir),
                "status": s.get("status"),
                "final_metric": s.get("final_metric"),
                "steps": s.get("steps", 0),
                "where": r["where"],
                "reused": r["reused"],
            }
        )
    steps = [t["steps"] or 0 for per in record["trials"].values() for t in per] + [
        r["steps"] or 0 for per in record["final"].values() for r in per
    ]
    max_steps = int(compose(overrides).trainer.max_steps)
    record.update(
        steps_per_run=max_steps,
        total_steps=int(sum(steps)),
        planned_steps=len(optimizers) * (n_trials + seeds) * max_steps,
    )
    _write(out_dir, record)
    return record


def tune(
    optimizers: list[str],
    overrides: list[str],
    out_dir: Path,
    search: str = "grid",
    trials: int | None = None,
    seeds: int = 3,
    trial_seed: int = 0,
    select_metric: str | None = None,
    launcher: list[str] | tuple[str, ...] = (),
) -> dict:
    """run_tune with the earlier positional signature (trials=None: the grid's size), for callers
    written before it."""
    return run_tune(
        optimizers,
        overrides,
        search=search,
        trials=trials,
        seeds=seeds,
        out_dir=Path(out_dir),
        launcher=launcher,
        trial_seed=trial_seed,
        select_metric=select_metric,
    )


def _timed_round(record: dict, kind: str, runs, out_dir: Path, launcher: list[str]) -> list[dict]:
    import time

    start = time.perf_counter()
    results = run_round(runs, out_dir, launcher)
    record["rounds"].append(
        {
            "kind": kind,
            "runs": len(runs),
            "reused": sum(r["reused"] for r in results),
            "launcher": launcher_name(launcher) if not all(r["reused"] for r in results) else None,
            "wall_s": round(time.perf_counter() - start, 3),
        }
    )
    return results


def _rel(run_dir: Path, out_dir: Path) -> str:
    return str(run_dir.relative_to(out_dir))


def _write(out_dir: Path, record: dict) -> None:
    from optbench.train.rundir import write_json

    write_json(out_dir / "tune.json", record)
