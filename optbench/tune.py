"""`optbench tune`: an equal-budget tuning protocol, then seeds.

    optbench tune --optimizers adamw,sgd,nesterov [--search grid|random|sobol] [--trials N]
                  [--seeds 3] [--name NAME] [key=value ...]

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

Resumable: a trial or seed run whose directory already holds a finished summary.json
(completed or diverged) is read back, not rerun; an interrupted one resumes from its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf, open_dict

from optbench.errors import ArgumentParser, ConfigError, choices

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
def point_overrides(point: dict) -> list[str]:
    return [f"optimizer.{k}={v:.6g}" for k, v in sorted(point.items())]


def point_slug(point: dict) -> str:
    return ",".join(f"{k}={v:.3g}" for k, v in sorted(point.items()))


def run_one(overrides: list[str], run_dir: Path) -> dict:
    """Train one run in-process, or read it back if it already finished with these overrides."""
    from optbench.config import compose, validate
    from optbench.train import train
    from optbench.train.job import _print_result

    done = run_dir / "summary.json"
    if done.exists():
        summary = json.loads(done.read_text())
        made_with = list(OmegaConf.load(run_dir / "config.yaml").get("overrides") or []) \
            if (run_dir / "config.yaml").exists() else None
        if made_with is not None and made_with != overrides:
            raise ConfigError(f"tune: {run_dir} was made with other settings ({' '.join(made_with)}); "
                              "use another --name or delete it")
        if summary.get("status") in FINISHED:
            print(f"tune: done already ({summary['status']}): {run_dir}", flush=True)
            return summary
    cfg = compose(overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
        cfg.overrides = overrides
    validate(cfg)
    try:
        summary = train(cfg, run_dir)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # the loop recorded status=failed in summary.json; the protocol goes on
        print(f"tune: run failed in {run_dir}: {type(e).__name__}: {e}", file=sys.stderr)
        return json.loads(done.read_text()) if done.exists() else {"status": "failed", "steps": 0}
    _print_result(summary, run_dir)
    return summary


def score(summary: dict, metric: str, mode: str) -> float:
    """The validation metric at the END of the schedule; a run that did not complete ranks last."""
    final_eval = summary.get("final_eval") or {}
    if summary.get("status") != "completed":
        return -math.inf if mode == "max" else math.inf
    if metric not in final_eval:
        raise ConfigError(f"tune: --select-metric {metric} is not among the final evaluation's metrics "
                          f"({', '.join(sorted(final_eval))}); set data.val_split or choose another")
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
    metric = select_metric or ("val_" + test_metric.split("_", 1)[1] if test_metric.startswith("test_")
                               else test_metric)
    known = final_eval_metrics(cfg)
    if select_metric is not None and known is not None and metric not in known:
        # refused here, not after the first trial has trained a full schedule
        raise ConfigError(f"tune: --select-metric {metric} is invalid: the final evaluation of task "
                          f"{cfg.task.name} gives {', '.join(known)}")
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
        raise ConfigError(f"tune: the val shard ({shard} tokens) holds no held-out selection slice after "
                          f"task.val_tokens={val_tokens}; lower task.val_tokens so that tune does not "
                          "select on the reported tokens")
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


def tune(optimizers: list[str], overrides: list[str], out_dir: Path, search: str = "grid",
         trials: int | None = None, seeds: int = 3, trial_seed: int = 0, select_metric: str | None = None) -> dict:
    if search not in SEARCHES:
        raise ConfigError(f"--search={search} is invalid; valid choices: {', '.join(SEARCHES)}")
    if seeds < 1:
        raise ConfigError(f"--seeds={seeds} is invalid: must be >= 1")
    if not optimizers:
        from optbench.confdir import group_options

        raise ConfigError(f"tune: --optimizers names no optimizer; give a comma-separated list, e.g. adamw,sgd "
                          f"(valid choices: {choices(group_options('optimizer'))})")
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") in ("optimizer", "seed", "optimizer.lr"):
            raise ConfigError(f"tune: '{o}' is chosen by the protocol; name optimizers with --optimizers")
    overrides, metric, mode = base_settings(overrides, select_metric)
    from optbench.config import precheck

    for name in optimizers:  # a bad value is reported as itself, before any run or existing run is touched
        precheck([*overrides, f"optimizer={name}", f"seed={trial_seed}"])
    points = {name: trial_points(name, search, trials, trial_seed) for name in optimizers}
    counts = {len(p) for p in points.values()}
    if len(counts) > 1:  # equal budgets: every optimizer gets the smallest grid's number of trials
        n = min(counts)
        points = {name: trial_points(name, search, n, trial_seed) for name in optimizers}
    n_trials = len(next(iter(points.values())))
    final_seeds = list(range(trial_seed + 1, trial_seed + 1 + seeds))
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"optimizers": optimizers, "search": search, "trials_per_optimizer": n_trials,
              "select_metric": metric, "mode": mode, "trial_seed": trial_seed, "seeds": final_seeds,
              "overrides": overrides, "trials": {}, "best": {}, "final": {}}

    for name in optimizers:
        results = []
        for i, point in enumerate(points[name]):
            ov = [*overrides, f"optimizer={name}", *point_overrides(point), f"seed={trial_seed}"]
            s = run_one(ov, out_dir / "trials" / name / f"{i:02d}-{point_slug(point)}")
            results.append({"point": point, "overrides": point_overrides(point), "status": s.get("status"),
                            "value": score(s, metric, mode), "steps": s.get("steps", 0)})
        record["trials"][name] = results
        pick = max if mode == "max" else min
        best = pick(results, key=lambda r: r["value"])
        record["best"][name] = {"overrides": " ".join(best["overrides"]), "value": best["value"],
                                "point": best["point"]}
        _write(out_dir, record)

    for name in optimizers:
        best_ov = record["best"][name]["overrides"].split()
        runs = []
        for seed in final_seeds:
            s = run_one([*overrides, f"optimizer={name}", *best_ov, f"seed={seed}"],
                        out_dir / "final" / name / f"seed={seed}")
            runs.append({"seed": seed, "status": s.get("status"), "final_metric": s.get("final_metric"),
                         "steps": s.get("steps", 0)})
        record["final"][name] = runs
    steps = [t["steps"] or 0 for per in record["trials"].values() for t in per] + \
            [r["steps"] or 0 for per in record["final"].values() for r in per]
    max_steps = _max_steps(overrides)
    record.update(steps_per_run=max_steps, total_steps=int(sum(steps)),
                  planned_steps=len(optimizers) * (n_trials + seeds) * max_steps)
    _write(out_dir, record)
    return record


def _max_steps(overrides: list[str]) -> int:
    from optbench.config import compose

    return int(compose(overrides).trainer.max_steps)


def _write(out_dir: Path, record: dict) -> None:
    from optbench.train.rundir import write_json

    write_json(out_dir / "tune.json", record)


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="optbench tune", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", required=True, help="comma-separated, e.g. adamw,sgd,nesterov")
    parser.add_argument("--search", default="grid", help=f"{' | '.join(SEARCHES)} (default: grid over lr_grid)")
    parser.add_argument("--trials", type=int, help="trials per optimizer (default: the lr_grid size; 8 if sampled)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the best configuration (default: 3)")
    parser.add_argument("--trial-seed", type=int, default=0, help="seed of the trials; final seeds follow it")
    parser.add_argument("--select-metric", help="validation metric for the choice (default: val_<test metric>)")
    parser.add_argument("--name", default="tune", help="tune/<name>/ and results/<name>/ (default: tune)")
    parser.add_argument("--out", default="tune", help="parent folder of the runs (default: tune)")
    parser.add_argument("--results", default="results", help="parent folder of the report (default: results)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    args = parser.parse_args(argv)
    optimizers = list(dict.fromkeys(o.strip() for o in args.optimizers.split(",") if o.strip()))
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials={args.trials} is invalid: must be >= 1")
    out_dir = Path(args.out) / args.name
    record = tune(optimizers, list(args.overrides), out_dir, args.search, args.trials, args.seeds,
                  args.trial_seed, args.select_metric)
    from optbench.report.build import build_report

    _, _, md, _ = build_report([str(out_dir / "final")], args.name, out=args.results,
                               command="optbench tune " + " ".join(argv))
    print(md)
    print(f"tune: {record['trials_per_optimizer']} trials x {len(optimizers)} optimizers, "
          f"{len(record['seeds'])} seeds each; {record['total_steps']} steps in all -> {out_dir}/tune.json, "
          f"{Path(args.results) / args.name}/")
