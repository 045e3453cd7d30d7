"""Validation of the composed config: every mistake becomes one ConfigError line.

`precheck` composes the command line's overrides the way Hydra will (each value of a sweep,
and the sweeper params an experiment sets), translating Hydra's errors; `validate` checks the
values. Each module validates what it owns: optim/ its hyperparameters, schedules.py its
schedule, tasks.py its data. This module only ties them together and checks the trainer.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from optbench import CONF_DIR
from optbench.confdir import BASE_PREFIX, GROUPS, group_options, open_keys, use_overrides, with_searchpath
from optbench.errors import ConfigError, choices
from optbench.extras import check, check_launcher
from optbench.schema import OptimizerMetaSchema, SchedulerMetaSchema, check_meta

AMP_CHOICES = ("off", "bf16", "fp16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
LOGGER_CHOICES = ("none", "jsonl", "wandb")
AVERAGING_CHOICES = ("none", "ema", "swa", "lookahead")
CLOCK_INCLUDES = ("data_init", "final_eval")
ON_BAD_CHECKPOINT_CHOICES = ("previous", "stop", "restart")
MAX_SWEEP_VALUES_CHECKED = 64
MAX_SEED = 2**63 - 1


def amp_mode(value) -> str:
    """YAML 1.1 reads a bare `off` as False; accept both spellings."""
    return "off" if value in (False, None, "off", "false", "False") else str(value)


# --------------------------------------------------------------------------- composition
def compose(overrides: list[str]) -> DictConfig:
    """Compose conf/ with overrides exactly as `optbench train` would, or raise ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    # a user's config folders (hydra.searchpath, OPTBENCH_CONFIG_PATH) count for this command line's
    # option lists (optimizer names in tune, lr-find, list) as they do for Hydra
    use_overrides(overrides)
    check_launcher(overrides)  # submitit's launchers are the 'cluster' extra: say so, not Hydra's missing config
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose("config", overrides=open_keys(with_searchpath(overrides)), return_hydra_config=True)
        _refuse_base_choice(cfg)
        return cfg
    except HydraException as e:
        raise ConfigError(_composition_message(e, overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def _refuse_base_choice(cfg: DictConfig) -> None:
    """`optimizer=_base` composes (Hydra sees a yaml in the group), but a base or schema is what the
    options share, not an option: the same line as for an unknown one."""
    for group, choice in (OmegaConf.select(cfg, "hydra.runtime.choices") or {}).items():
        if group in GROUPS and str(choice).startswith(BASE_PREFIX):
            raise ConfigError(
                f"unknown {group} '{choice}' (the keys its options share, not one of them); "
                f"valid choices: {choices(group_options(group))}"
            )


def _composition_message(e: Exception, overrides: list[str]) -> str:
    """One line for a Hydra composition or override-parsing error, from the exception objects
    (their attributes and the OmegaConf error that caused them), never from their text."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    from optbench.schema import message

    if isinstance(e, MissingConfigException):
        return _missing_option_message(e)
    if isinstance(e, OverrideParseException):
        return _parse_message(e.override)
    cause = _omegaconf_cause(e)
    if isinstance(cause, ValidationError) and cause.full_key:  # a schema's type (trainer.max_steps=abc)
        return message(cause)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        key = _override_key(str(cause.full_key), overrides)
        parent, valid = _keys_under(key.rpartition(".")[0], overrides, exclude=key)
        where = f" under '{parent}'" if parent else ""
        return f"unknown key '{key}'; valid keys{where}: {choices(valid)}"
    # anything else Hydra says in its own words (e.g. `+key=...` for a key that exists): its first lines
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:2])


def _omegaconf_cause(e: BaseException):
    """The OmegaConf error under a Hydra one (ConfigCompositionException is raised from it)."""
    from omegaconf.errors import OmegaConfBaseException

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OmegaConfBaseException):
            return e
        e = e.__cause__ or e.__context__
    return None


def _override_key(full_key: str, overrides: list[str]) -> str:
    """The key as the user wrote it: OmegaConf names the first missing level (optimizer.groups.hed),
    the override may go deeper (optimizer.groups.hed.lr_mult)."""
    for o in overrides:
        key = o.lstrip("+~").partition("=")[0]
        if key == full_key or key.startswith(full_key + "."):
            return key
    return full_key


def _missing_option_message(e) -> str:
    group, _, option = (e.missing_cfg_file or "").strip("/").rpartition("/")
    if group in GROUPS:
        hint = (
            f"; your own class: optimizer=custom optimizer.target={option}"
            if group == "optimizer" and "." in option
            else ""
        )
        return f"unknown {group} '{option}'; valid choices: {choices(group_options(group))}{hint}"
    return str(e).splitlines()[0]


def _parse_message(override: str) -> str:
    """An override Hydra's grammar cannot read: no `=` at all, or a character that needs quoting
    (the grammar has no unquoted non-ASCII or other special characters; quoting the value works)."""
    key, eq, value = override.partition("=")
    if not eq:
        return f"cannot parse override '{override}' (expected key=value)"
    if not value.isascii():
        return (
            f"cannot parse override '{override}': Hydra needs such a value quoted, e.g. "
            f"\"{key}='{value}'\" (single quotes inside the shell's double quotes)"
        )
    return (
        f"cannot parse override '{override}': not Hydra's override grammar (key=value, a list [a,b], "
        f"a value with special characters quoted: \"{key}='...'\")"
    )


def _keys_under(parent: str, overrides: list[str], exclude: str) -> tuple[str, list[str]]:
    """The keys that do exist where the user wrote an unknown one; when the parent is unknown too
    (`optimizer.groups.hed.lr_mult`), the deepest prefix that exists and its keys."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(exclude)]
    try:
        cfg = compose(kept)
    except ConfigError:
        cfg = compose([])
    while parent and not isinstance(OmegaConf.select(cfg, parent), DictConfig):
        parent = parent.rpartition(".")[0]
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return parent, [str(k) for k in node.keys() if k != "hydra"]


def _sweep_values(o) -> list[str] | None:
    """The values of a sweep override that a job may get, as `key=value` strings: every value of a
    choice or range sweep; the two bounds of an interval (what the Optuna, Nevergrad and Ax sweepers
    draw from, tagged `tag(log, interval(...))` or not: every point between them is valid when both
    ends are, for the bounds our keys have); None for a sweep only its sweeper can list (glob)."""
    from hydra.core.override_parser.types import IntervalSweep

    key = o.get_key_element()
    value = o.value()
    if isinstance(value, IntervalSweep):
        return [f"{key}={value.start!r}", f"{key}={value.end!r}"]
    try:
        return [f"{key}={v}" for v in islice(o.sweep_string_iterator(), MAX_SWEEP_VALUES_CHECKED)]
    except Exception:  # noqa: BLE001 -- Hydra raises plain exceptions for a sweep it cannot enumerate here
        return None


def _sweep_variants(overrides: list[str]) -> list[list[str]]:
    """One override list per value of each swept key (others at their first value); a sweep that
    cannot be enumerated here leaves its key at the config's own value (the fixed keys are checked)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    base, sweeps = [], []
    for o in parsed:
        if o.is_sweep_override():
            values = _sweep_values(o)
            if values is None:
                continue
            sweeps.append(values)
            base.append(sweeps[-1][0])
        else:
            base.append(o.input_line)
    variants = [base]
    for sweep in sweeps:
        first = sweep[0]
        for value in sweep[1:]:
            variants.append([value if o == first else o for o in base])
    return variants


def precheck(overrides: list[str], multirun: bool = False) -> DictConfig:
    """Compose and validate every job the command line describes; return the first config."""
    from hydra.errors import HydraException

    for o in overrides:  # Hydra's spelling of a class: optbench's is optimizer.target (no instantiation)
        key, _, value = o.lstrip("+~").partition("=")
        if key.startswith("optimizer") and key.endswith("._target_"):
            where = key[: -len("._target_")]
            raise ConfigError(
                f"'{o}': optbench names the class with {where}.target, e.g. "
                f"optimizer=custom optimizer.target={value or 'my_pkg.my_module.MyOptimizer'}"
            )
    try:
        variants = _sweep_variants(overrides)
    except HydraException as e:
        raise ConfigError(_composition_message(e, overrides)) from None
    if len(variants) > 1 and not multirun:
        first = next((o for o in overrides if "interval(" in o), None) or next(o for o in overrides if "," in o)
        raise ConfigError(f"'{first}' lists several values: add -m to run a sweep")
    first_cfg = None
    seen: dict[str, list[str]] = {}  # composed config (hydra aside) -> the first variant giving it
    repeats: list[tuple[list[str], list[str]]] = []
    for variant in variants:
        cfg = compose(variant)
        first_cfg = first_cfg or cfg
        same = seen.setdefault(_fingerprint(cfg), variant)
        if same is not variant:
            repeats.append((same, variant))
        for key in ("hydra.run.dir", "hydra.sweep.dir"):
            explicit = any(o.lstrip("+").split("=", 1)[0] == key for o in variant)
            if explicit and not str(OmegaConf.select(cfg, key) or "").strip():
                # an empty run dir is the current directory: the run would write into it
                raise ConfigError(f"{key} is empty: give the run directory, e.g. {key}=runs/mine")
        validate(cfg)
        _check_writable(cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir")
        if not multirun:  # before Hydra writes .hydra/ into a finished or interrupted run's directory
            _check_existing_run_dir(cfg)
        # An experiment may set its own sweep (hydra.sweeper.params): check those values too.
        params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
        if params and variant is variants[0]:
            explicit = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
            extra = [f"{k}={v}" for k, v in params.items() if k not in explicit]
            for sub in _sweep_variants(extra)[1:] + [_sweep_variants(extra)[0]]:
                validate(compose(variant + sub))
    if multirun and repeats:
        warn_duplicate_jobs(repeats, overrides)
    return first_cfg


def _fingerprint(cfg: DictConfig) -> str:
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)  # the job's own dir and number: every job differs there
    return OmegaConf.to_yaml(OmegaConf.create(plain))


def warn_duplicate_jobs(repeats: list[tuple[list[str], list[str]]], overrides: list[str]) -> None:
    """`-m seed=0,0`: the sweep runs one configuration twice. Not an error (a timing study may want
    it), but the runs are not independent samples: std 0 and a zero-width CI would say nothing."""
    import sys

    from hydra.core.override_parser.overrides_parser import OverridesParser

    twice = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override() and not o.is_interval_sweep():
            values = [v.split("=", 1)[1] for v in _sweep_values(o) or []]
            twice += [f"{o.get_key_element()}={v}" for v in dict.fromkeys(values) if values.count(v) > 1]
    if twice:
        shown = f"{', '.join(twice)} listed twice"
    else:  # two spellings of one value (optimizer.lr=1e-3,0.001), or an experiment's own sweep
        a, b = repeats[0]
        only_a, only_b = " ".join(o for o in a if o not in b), " ".join(o for o in b if o not in a)
        shown = f"'{only_a}' and '{only_b}' are one configuration"
    print(
        f"optbench: warning: this sweep runs the same job twice ({shown}); repeats are not independent "
        "runs, and the report counts each configuration once",
        file=sys.stderr,
        flush=True,
    )


def _check_writable(cfg: DictConfig, key: str) -> None:
    """A run or sweep directory that cannot be made or written would end in Hydra's traceback once
    Hydra creates it: the directory, or the nearest one above it that exists, must be writable."""
    import os

    try:
        given = str(OmegaConf.select(cfg, key) or "")
    except Exception:  # an interpolation Hydra resolves only at run time (the job's number)
        return
    if not given:
        return
    path = Path(given).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        raise ConfigError(f"{key}={given!r} is invalid: {path} is a file, not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={given!r} is invalid: {path} is not writable (read-only); choose another {key}")


def _check_existing_run_dir(cfg: DictConfig) -> None:
    try:
        run_dir = str(OmegaConf.select(cfg, "hydra.run.dir") or "")
    except Exception:  # an interpolation Hydra resolves only at run time
        return
    if run_dir and Path(run_dir).is_dir():
        from optbench.train.checkpoint import check_run_dir_length

        check_run_dir_length(cfg, Path(run_dir))


# --------------------------------------------------------------------------- values
def _positive(cfg, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value!r} is invalid: must be a number {bound}")


def _one_of(cfg, key: str, valid) -> None:
    value = OmegaConf.select(cfg, key)
    if key == "trainer.amp":
        value = amp_mode(value)
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is invalid; valid choices: {', '.join(valid)}")


def _closure_compatible(cfg: DictConfig) -> None:
    """An optimizer that re-evaluates the loss in a closure (L-BFGS) sees raw gradients: fp16 loss
    scaling would hand it scaled ones and clipping cannot reach inside its line search."""
    from optbench.optim import OPTIMIZERS

    spec = OPTIMIZERS.get(cfg.optimizer.name)
    if spec is None or not spec.needs_closure:
        return
    if amp_mode(cfg.trainer.amp) == "fp16":
        raise ConfigError(
            f"trainer.amp=fp16 is invalid with optimizer={spec.name} (it re-evaluates the loss in "
            "a closure, which loss scaling breaks); valid choices: off, bf16"
        )
    if cfg.trainer.grad_clip > 0:
        raise ConfigError(
            f"trainer.grad_clip={cfg.trainer.grad_clip} is invalid with optimizer={spec.name} "
            "(its closure's line search cannot be clipped); use trainer.grad_clip=0"
        )


def _lookahead(a) -> None:
    every = a.get("lookahead_every", 5)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"trainer.averaging.lookahead_every={every!r} is invalid: must be a whole number >= 1")
    for key, high in (("lookahead_decay", 1.0), ("lookahead_power", None)):
        v = a.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (high is not None and v > high):
            bound = f"in [0, {high}]" if high is not None else ">= 0"
            raise ConfigError(f"trainer.averaging.{key}={v!r} is invalid: must be a number {bound}")
    if not isinstance(a.get("lookahead_final", True), bool):
        raise ConfigError(
            f"trainer.averaging.lookahead_final={a.get('lookahead_final')!r} is invalid; valid choices: true, false"
        )


def clock_includes(t) -> tuple[str, ...]:
    """trainer.clock_includes: what the train clock counts besides the training steps (airbench's
    rule counts its whitening init and its final TTA evaluation)."""
    value = t.get("clock_includes") or []
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"trainer.clock_includes={value!r} is invalid: must be a list of {', '.join(CLOCK_INCLUDES)}")
    bad = [v for v in value if v not in CLOCK_INCLUDES]
    if bad:
        raise ConfigError(f"trainer.clock_includes has {bad[0]!r}; valid choices: {', '.join(CLOCK_INCLUDES)}")
    return tuple(value)


def validate(cfg: DictConfig, world_size: int | None = None) -> None:
    """Check values the user can get wrong; raise ConfigError with one line."""
    t = cfg.trainer
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed <= MAX_SEED:
        # torch.manual_seed takes a 64-bit integer: a larger one fails only once the run has started
        raise ConfigError(f"seed={cfg.seed!r} is invalid: must be an integer in [0, 2**63-1]")
    for key in (
        "trainer.max_steps",
        "trainer.batch_size",
        "trainer.grad_accum",
        "trainer.eval_every",
        "trainer.log_every",
        "trainer.nproc",
    ):
        _positive(cfg, key)
        value = OmegaConf.select(cfg, key)
        if int(value) != value:
            raise ConfigError(f"{key}={value!r} is invalid: must be a whole number")
    late = t.get("eval_every_late")
    if late is not None and (isinstance(late, bool) or not isinstance(late, int) or late < 1):
        raise ConfigError(f"trainer.eval_every_late={late!r} is invalid: must be a whole number >= 1 (or null)")
    frac = t.get("eval_late_fraction", 0.9)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac <= 1:
        raise ConfigError(f"trainer.eval_late_fraction={frac!r} is invalid: must be a number in [0, 1]")
    init = t.get("init_from")
    if init is not None and not Path(str(init)).is_file():
        raise ConfigError(f"trainer.init_from={init!r} is not a file (a torch.save'd state_dict, or null)")
    from optbench.train.budget import validate_max_time

    validate_max_time(t.get("max_time_s"))
    _positive(cfg, "trainer.grad_clip", allow_zero=True)
    _positive(cfg, "trainer.checkpoint_every", allow_zero=True)
    _positive(cfg, "trainer.divergence_factor", allow_zero=True)
    for key in (
        "trainer.compile",
        "trainer.stop_at_target",
        "trainer.progress",
        "trainer.deterministic",
        "trainer.save_final",
        "trainer.eval_at_start",
        "trainer.extend",
    ):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, bool):  # a string such as 'maybe' would count as true
            raise ConfigError(f"{key}={value!r} is invalid; valid choices: true, false")
    _one_of(cfg, "trainer.amp", AMP_CHOICES)
    _one_of(cfg, "trainer.device", DEVICE_CHOICES)
    _one_of(cfg, "logger.name", LOGGER_CHOICES)
    if cfg.logger.name == "wandb":
        check("wandb", "logger=wandb")
    _one_of(cfg, "trainer.averaging.kind", AVERAGING_CHOICES)
    if t.averaging.kind == "lookahead":
        _lookahead(t.averaging)
    if t.averaging.kind == "ema":
        decay = t.averaging.get("ema_decay")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ConfigError(f"trainer.averaging.ema_decay={decay!r} is invalid: must be a number in [0, 1)")
    clock_includes(t)
    _one_of(cfg, "trainer.on_bad_checkpoint", ON_BAD_CHECKPOINT_CHOICES)
    world = world_size or t.nproc
    per_step = t.grad_accum * world
    if t.batch_size % per_step:
        raise ConfigError(
            f"trainer.batch_size={t.batch_size} is not divisible by grad_accum x world size "
            f"= {t.grad_accum} x {world}; choose a multiple of {per_step}"
        )
    if t.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.device='cuda' but no CUDA device is available; valid choices here: auto, cpu")
    from optbench.optim import validate_optimizer_config
    from optbench.schedules import validate_optimizer_schedules, validate_schedule_config
    from optbench.tasks import validate_task_config

    # the meta-keys' types first (optbench/schema.py): the checks below read them
    check_meta(cfg.optimizer, OptimizerMetaSchema, "optimizer")
    check_meta(cfg.scheduler, SchedulerMetaSchema, "scheduler")
    validate_optimizer_config(cfg.optimizer)
    _closure_compatible(cfg)
    validate_schedule_config(cfg.scheduler, t.max_steps, metric=cfg.task.get("metric"), eval_every=t.eval_every)
    validate_optimizer_schedules(cfg.optimizer, t.max_steps)
    validate_task_config(cfg)
