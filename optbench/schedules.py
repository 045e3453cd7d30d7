"""Learning-rate schedules as plain functions of the step, plus the two lr mechanisms beside them.

A schedule returns a multiplier of each group's base lr, so per-role lrs keep their ratios.
`build_schedule(name, total_steps, warmup_steps=0, warmup_fraction=0.0, **kwargs)` -> callable
step -> multiplier. Linear warmup composes with every schedule: during the first `w` steps the
multiplier ramps (step+1)/w; after it the schedule runs on its own clock over the remaining
`total_steps - w` steps (the usual "warmup, then cosine" reading).

Positions and lengths inside a schedule (milestones, periods, cooldowns) are fractions of the
run, so a config keeps its shape when `trainer.max_steps` changes; per-step rates (exponential
gamma, inverse-time decay, inverse-sqrt timescale) are per step, as in their formulas.

Also here, because they are lr/momentum arithmetic the loop applies once per run or per step:
- `lr_scale` / `resolve_lr`: batch-size scaling (`optimizer.lr_scaling` = none | linear | sqrt,
  relative to `optimizer.reference_batch_size`).
- `MomentumSchedule`: an optional `optimizer.momentum_schedule` block that ramps a param-group
  key (`momentum` or `betas[0]`) from `start` to `end` over `steps`, optionally only in some
  roles (the NanoGPT-speedrun Muon momentum warmup 0.85 -> 0.95 is
  `{key: momentum, start: 0.85, end: 0.95, steps: 300, roles: [matrix]}`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch

from optbench.confdir import as_dict
from optbench.errors import ConfigError, choices

Schedule = Callable[[int], float]


# --------------------------------------------------------------------------- the schedules
# Each factory takes the schedule's own length (steps after warmup) and its yaml keys.
def constant(total_steps: int) -> Schedule:
    return lambda t: 1.0


def step(total_steps: int, step_fraction: float = 0.3, gamma: float = 0.1) -> Schedule:
    """gamma ** floor(t / (step_fraction * T))."""
    size = max(1, round(step_fraction * total_steps))
    return lambda t: gamma ** (t // size)


def multistep(total_steps: int, milestones=(0.5, 0.75), gamma: float = 0.1) -> Schedule:
    """gamma ** (number of milestones, as fractions of T, already passed)."""
    at = sorted(round(m * total_steps) for m in milestones)
    return lambda t: gamma ** sum(t >= m for m in at)


def exponential(total_steps: int, gamma: float = 0.99) -> Schedule:
    return lambda t: gamma**t


def inverse_time(total_steps: int, decay: float = 0.01) -> Schedule:
    return lambda t: 1.0 / (1.0 + decay * t)


def inverse_sqrt(total_steps: int, timescale: float = 100.0) -> Schedule:
    return lambda t: 1.0 / math.sqrt(1.0 + t / timescale)


def _progress(t: int, total_steps: int) -> float:
    return min(max(t, 0), total_steps) / max(total_steps, 1)


def poly(total_steps: int, power: float = 1.0, min_ratio: float = 0.0) -> Schedule:
    """min + (1 - min) (1 - t/T) ** power; power 1 is linear decay."""
    return lambda t: min_ratio + (1 - min_ratio) * (1 - _progress(t, total_steps)) ** power


def _cosine_shape(p: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * p))


def cosine(total_steps: int, min_ratio: float = 0.0) -> Schedule:
    return lambda t: min_ratio + (1 - min_ratio) * _cosine_shape(_progress(t, total_steps))


def cosine_restarts(
    total_steps: int, first_period: float = 1 / 7, period_mult: float = 2.0, min_ratio: float = 0.0
) -> Schedule:
    """SGDR (Loshchilov & Hutter 2017): cosine to the floor within a period, then back to 1;
    the first period is first_period x T steps and each next one period_mult times longer."""
    first = max(1.0, first_period * total_steps)

    def f(t: int) -> float:
        pos, period = float(t), first
        while pos >= period:
            pos -= period
            period *= period_mult
        return min_ratio + (1 - min_ratio) * _cosine_shape(pos / period)

    return f


def onecycle(
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    end_at: str = "last_step",
) -> Schedule:
    """Smith & Topin: cosine from 1/div up to 1 over pct_start of the run, then cosine down to
    1/(div x final_div). The base lr is the peak. end_at=last_step is torch's OneCycleLR: the
    peak at step pct_start T - 1 and the floor at the last trained step T - 1; after_run puts
    the peak at pct_start T and the floor at step T (one step after torch's, never trained)."""
    lo, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
    last = _end_step(total_steps, end_at)
    up = max(pct_start * total_steps - (1 if end_at == "last_step" else 0), 1e-12)

    def f(t: int) -> float:
        if t < up:
            return _cosine_between(lo, 1.0, t / up)
        return _cosine_between(1.0, end, min((t - up) / max(last - up, 1e-12), 1.0))

    return f


def _cosine_between(a: float, b: float, p: float) -> float:
    """Cosine interpolation from a (p=0) to b (p=1)."""
    return b + (a - b) * _cosine_shape(p)


COOLDOWN_SHAPES: dict[str, Callable[[float], float]] = {
    "linear": lambda p: 1 - p,
    "cosine": _cosine_shape,
    "1-sqrt": lambda p: 1 - math.sqrt(p),  # Hägele et al. 2024
}


def wsd(
    total_steps: int,
    decay_fraction: float = 0.2,
    decay_shape: str = "linear",
    min_ratio: float = 0.0,
    end_at: str = "last_step",
) -> Schedule:
    """Warmup-stable-decay: 1 until the last decay_fraction of the run, then a cooldown to the
    floor (warmup is the generic warmup). The speedrun "trapezoid" is wsd with linear decay.
    The cooldown starts at step T - decay_fraction T and reaches the floor at the last trained
    step T - 1 (end_at=last_step) or at step T, which is never trained (end_at=after_run: the
    modded-nanogpt trapezoid, whose last step trains at 1/cooldown-steps of the peak)."""
    shape = COOLDOWN_SHAPES[decay_shape]
    decay_steps = decay_fraction * total_steps
    start = total_steps - decay_steps
    span = _end_step(total_steps, end_at) - start

    def f(t: int) -> float:
        if end_at == "after_run":
            # written as modded-nanogpt's set_hparams computes it, so the linear cooldown's multipliers
            # are its values to the last bit: stable while t/T < 1 - d, then (1 - t/T) / d of it is left
            progress = t / total_steps
            if decay_fraction <= 0 or progress < 1 - decay_fraction:
                return 1.0
            left = max((1 - progress) / decay_fraction, 0.0)
            return min_ratio + (1 - min_ratio) * (left if decay_shape == "linear" else shape(1 - left))
        if t < start or decay_steps <= 0:
            return 1.0
        p = min((t - start) / span, 1.0) if span > 0 else 1.0
        return min_ratio + (1 - min_ratio) * shape(p)

    return f


END_AT = ("last_step", "after_run")


def _end_step(total_steps: int, end_at: str) -> int:
    """The step at which a schedule with an end convention reaches its floor."""
    if end_at not in END_AT:
        raise ConfigError(f"scheduler.end_at={end_at!r} is invalid; valid choices: {choices(END_AT)}")
    return total_steps - 1 if end_at == "last_step" else total_steps


def piecewise_linear(total_steps: int, points=((0.0, 1.0), (1.0, 0.0))) -> Schedule:
    """Linear between knots [position, multiplier]; a knot at position f (a fraction of the run)
    sits at step int(f x T) (floor, as airbench94's `int(total_train_steps * 0.23)`); before the
    first and after the last knot the multiplier holds. Between knots (s0, a) and (s1, b) the value
    is a (1 - p) + b p with p = (t - s0) / (s1 - s0): airbench94's get_lr, float for float, is
    points [[0, 0.2], [0.23, 1.0], [1.0, 0.07]]."""
    knots = [(int(f * total_steps), float(v)) for f, v in points]

    def f(t: int) -> float:
        if t < knots[0][0]:
            return knots[0][1]
        for (s0, a), (s1, b) in zip(knots, knots[1:]):
            if t < s1:
                return _between((s0, a), (s1, b), t)
        return knots[-1][1]

    return f


def _between(k0, k1, t: int) -> float:
    (s0, a), (s1, b) = k0, k1
    if s1 == s0:
        return b
    p = (t - s0) / (s1 - s0)
    return a * (1 - p) + b * p


class Plateau:
    """Reduce on plateau, driven by the evaluation metric: the trainer calls `observe(value)`
    after each evaluation. The bookkeeping is torch's ReduceLROnPlateau, run on a stand-in
    one-parameter optimizer whose lr is the multiplier."""

    def __init__(
        self,
        total_steps: int,
        mode: str = "max",
        factor: float = 0.1,
        patience: int = 2,
        threshold: float = 1e-4,
        cooldown: int = 0,
        min_ratio: float = 0.0,
    ):
        self._holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        self._reducer = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self._holder,
            mode=mode,
            factor=factor,
            patience=patience,
            threshold=threshold,
            cooldown=cooldown,
            min_lr=min_ratio,
        )

    def __call__(self, t: int) -> float:
        return self._holder.param_groups[0]["lr"]

    def observe(self, metric: float) -> None:
        self._reducer.step(metric)

    def state_dict(self) -> dict:
        return {"multiplier": self(0), "reducer": self._reducer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._holder.param_groups[0]["lr"] = state["multiplier"]
        self._reducer.load_state_dict(state["reducer"])


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "step": step,
    "multistep": multistep,
    "exponential": exponential,
    "inverse_time": inverse_time,
    "inverse_sqrt": inverse_sqrt,
    "poly": poly,
    "cosine": cosine,
    "cosine_restarts": cosine_restarts,
    "onecycle": onecycle,
    "wsd": wsd,
    "plateau": Plateau,
    "piecewise_linear": piecewise_linear,
}
WARMUP_KEYS = ("warmup_steps", "warmup_fraction")


# --------------------------------------------------------------------------- warmup composition
class WarmupThen:
    """Linear warmup (step+1)/w for the first w steps, then `inner` on its own clock (t - w).
    Forwards observe/state_dict when the inner schedule has them (plateau)."""

    def __init__(self, inner: Schedule, warmup_steps: int):
        self.inner, self.warmup_steps = inner, warmup_steps
        for hook in ("observe", "state_dict", "load_state_dict"):
            if hasattr(inner, hook):
                setattr(self, hook, getattr(inner, hook))

    def __call__(self, t: int) -> float:
        w = self.warmup_steps
        if t < w:
            return (t + 1) / w * self.inner(0)
        return self.inner(t - w)


def warmup_steps_of(total_steps: int, warmup_steps: int = 0, warmup_fraction: float = 0.0) -> int:
    return int(warmup_steps) if warmup_steps else round(warmup_fraction * total_steps)


def build_schedule(
    name: str, total_steps: int, warmup_steps: int = 0, warmup_fraction: float = 0.0, **kwargs
) -> Schedule:
    """A ready schedule: step -> multiplier of the base lr."""
    _check_name_and_keys(name, kwargs)
    w = warmup_steps_of(total_steps, warmup_steps, warmup_fraction)
    inner = SCHEDULES[name](max(total_steps - w, 1), **kwargs)
    return WarmupThen(inner, w) if w > 0 else inner


def build_schedule_from_config(cfg, total_steps: int) -> Schedule:
    kwargs = as_dict(cfg)
    name = kwargs.pop("name")
    kwargs.pop("metric", None)  # plateau's yaml names the metric it follows, for readers
    return build_schedule(name, total_steps, **kwargs)


# --------------------------------------------------------------------------- validation
def _schedule_keys(name: str) -> list[str]:
    params = list(inspect.signature(SCHEDULES[name]).parameters)[1:]  # all but total_steps
    return params + list(WARMUP_KEYS) + (["metric"] if name == "plateau" else [])


def _check_name_and_keys(name: str, kwargs: dict) -> None:
    if name not in SCHEDULES:
        raise ConfigError(f"unknown scheduler '{name}'; valid choices: {choices(SCHEDULES)}")
    valid = _schedule_keys(name)
    unknown = sorted(set(kwargs) - set(valid) - {"name"})
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} for scheduler '{name}'; valid keys: {choices(valid)}")


def _number(
    key: str, value, low: float | None = None, high: float | None = None, low_open: bool = False, whole: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low)) and (high is None or value <= high)
    ok = ok and (not whole or int(value) == value)
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        hi = "inf)" if high is None else f"{high}]"
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"scheduler.{key}={value!r} is invalid: must be {kind} in {lo}{hi}")


def validate_schedule_config(cfg, total_steps: int, metric: str | None = "", eval_every: int | None = None) -> None:
    """One line for each mistake, before training. `metric`/`eval_every` come from the task and
    trainer so a plateau schedule can check it will be fed (None metric = the task has none)."""
    c = as_dict(cfg)
    name = c.pop("name", None)
    c.pop("metric", None)
    _check_name_and_keys(name, c)
    _number("warmup_steps", c.get("warmup_steps", 0), 0, whole=True)
    _number("warmup_fraction", c.get("warmup_fraction", 0.0), 0, 1)
    if c.get("warmup_steps") and c.get("warmup_fraction"):
        raise ConfigError("scheduler.warmup_steps and scheduler.warmup_fraction are both set; set one of them")
    w = warmup_steps_of(total_steps, c.get("warmup_steps", 0), c.get("warmup_fraction", 0.0))
    if w > total_steps:
        raise ConfigError(
            f"scheduler warmup of {w} steps is longer than the run "
            f"(trainer.max_steps={total_steps}); lower scheduler.warmup_steps"
        )
    for key in ("min_ratio",):
        if key in c:
            _number(key, c[key], 0, 1)
    for key in ("decay_fraction", "pct_start", "first_period", "step_fraction"):
        if key in c:
            _number(key, c[key], 0, 1, low_open=key != "decay_fraction")
    for key in ("gamma", "factor"):
        if key in c:
            _number(key, c[key], 0, 1, low_open=True)
    for key in ("decay", "power", "patience", "cooldown", "threshold"):
        if key in c:
            _number(key, c[key], 0)
    for key in ("timescale", "div_factor", "final_div_factor"):
        if key in c:
            _number(key, c[key], 0, low_open=True)
    if "period_mult" in c:
        _number("period_mult", c["period_mult"], 1)
    if name == "multistep":
        ms = c.get("milestones", [])
        if not isinstance(ms, (list, tuple)) or not all(isinstance(m, (int, float)) and 0 < m < 1 for m in ms):
            raise ConfigError(
                f"scheduler.milestones={ms!r} is invalid: must be a list of fractions of the run in (0, 1)"
            )
    if c.get("end_at", "last_step") not in END_AT:
        raise ConfigError(f"scheduler.end_at={c['end_at']!r} is invalid; valid choices: {choices(END_AT)}")
    if name == "piecewise_linear":
        _check_points(c.get("points", [[0.0, 1.0], [1.0, 0.0]]))
    if name == "wsd" and c.get("decay_shape", "linear") not in COOLDOWN_SHAPES:
        raise ConfigError(
            f"scheduler.decay_shape={c['decay_shape']!r} is invalid; valid choices: {choices(COOLDOWN_SHAPES)}"
        )
    if name == "plateau":
        if c.get("mode", "max") not in ("max", "min"):
            raise ConfigError(f"scheduler.mode={c['mode']!r} is invalid; valid choices: max, min")
        if metric is None or metric == "null":
            raise ConfigError(
                "scheduler=plateau needs an evaluation metric, and this task has none "
                "(task.metric is null); choose another scheduler"
            )
        if eval_every is not None and eval_every >= total_steps:
            raise ConfigError(
                f"scheduler=plateau reacts to evaluations, but trainer.eval_every={eval_every} "
                f">= trainer.max_steps={total_steps} evaluates only at the end; lower trainer.eval_every"
            )


def _check_points(points) -> None:
    bad = ConfigError(
        f"scheduler.points={points!r} is invalid: must be a list of [position, multiplier] "
        "pairs, positions fractions of the run in [0, 1], increasing, multipliers >= 0, "
        "e.g. [[0, 0.2], [0.23, 1.0], [1.0, 0.07]]"
    )
    if not isinstance(points, (list, tuple)) or not points:
        raise bad
    last = -1.0
    for pt in points:
        if (
            not isinstance(pt, (list, tuple))
            or len(pt) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pt)
        ):
            raise bad
        if not 0 <= pt[0] <= 1 or pt[0] <= last or pt[1] < 0:
            raise bad
        last = pt[0]


# --------------------------------------------------------------------------- batch-size scaling
LR_SCALINGS = ("none", "linear", "sqrt")


def lr_scale(optimizer_cfg, batch_size: int) -> float:
    """Factor on every group's lr for `batch_size` relative to optimizer.reference_batch_size
    (linear: Goyal et al. 2017; sqrt: Krizhevsky 2014 / Malladi et al. 2022 for Adam)."""
    rule = optimizer_cfg.get("lr_scaling") or "none"
    if rule == "none":
        return 1.0
    ratio = batch_size / optimizer_cfg.get("reference_batch_size")
    return ratio if rule == "linear" else math.sqrt(ratio)


def resolve_lr(optimizer_cfg, batch_size: int) -> float:
    """The base lr the run actually uses: optimizer.lr x lr_scale."""
    return float(optimizer_cfg.get("lr")) * lr_scale(optimizer_cfg, batch_size)


# --------------------------------------------------------------------------- momentum schedules
MOMENTUM_SHAPES = ("linear", "cosine")
MOMENTUM_KEYS = ("momentum", "betas[0]", "betas[1]")


class MomentumSchedule:
    """Ramp a param-group hyperparameter from `start` to `end` over `steps`, then hold `end`.
    Applied to every param group that has the key, or only to the groups of the listed `roles`
    (e.g. [matrix] for Muon's own groups, not its fallback's)."""

    def __init__(
        self, key: str, start: float, end: float, steps: int, shape: str = "linear", roles: list[str] | None = None
    ):
        self.key, self.start, self.end, self.steps, self.shape = key, start, end, steps, shape
        self.roles = set(roles) if roles else None

    def value(self, t: int) -> float:
        p = min(t / self.steps, 1.0) if self.steps > 0 else 1.0
        if self.shape == "cosine":
            p = 1 - _cosine_shape(p)
        return self.start + (self.end - self.start) * p

    def apply(self, optimizer: torch.optim.Optimizer, t: int) -> float:
        v = self.value(t)
        for g in optimizer.param_groups:
            if self.roles is not None and g.get("role") not in self.roles:
                continue
            if self.key == "momentum" and "momentum" in g:
                g["momentum"] = v
            elif self.key.startswith("betas[") and "betas" in g:
                i = int(self.key[6])
                betas = list(g["betas"])
                betas[i] = v
                g["betas"] = tuple(betas)
        return v

    def check(self, optimizer: torch.optim.Optimizer, name: str = "this optimizer") -> None:
        """A schedule that would change no param group would be recorded as applied and do nothing:
        refuse it, naming the keys the groups do have."""
        groups = [g for g in optimizer.param_groups if self.roles is None or g.get("role") in self.roles]
        where = f"optimizer.momentum_schedule.key={self.key}"
        if not groups:
            roles = sorted({str(g.get("role")) for g in optimizer.param_groups})
            raise ConfigError(
                f"{where}: no param group of {name} has a role in {sorted(self.roles)}; "
                f"its groups' roles: {', '.join(roles)}"
            )
        field = "momentum" if self.key == "momentum" else "betas"
        if not any(field in g for g in groups):
            have = [
                k
                for k in MOMENTUM_KEYS
                if (k == "momentum" and any("momentum" in g for g in groups))
                or (k.startswith("betas") and any("betas" in g for g in groups))
            ]
            raise ConfigError(
                f"{where} is invalid: {name}'s param groups have no '{field}'; valid choices: "
                f"{', '.join(have) if have else 'none (drop optimizer.momentum_schedule)'}"
            )


def build_momentum_schedule(
    block, optimizer: torch.optim.Optimizer | None = None, name: str = "this optimizer"
) -> MomentumSchedule | None:
    """The schedule of an optimizer.momentum_schedule block; given the optimizer, checked against
    its param groups (the keys it ramps must exist there)."""
    if not block:
        return None
    schedule = MomentumSchedule(**as_dict(block))
    if optimizer is not None:
        schedule.check(optimizer, name)
    return schedule


def validate_optimizer_schedules(optimizer_cfg, max_steps: int) -> None:
    """optimizer.lr_scaling / reference_batch_size / momentum_schedule: the keys this module reads."""
    rule = optimizer_cfg.get("lr_scaling") or "none"
    if rule not in LR_SCALINGS:
        raise ConfigError(f"optimizer.lr_scaling={rule!r} is invalid; valid choices: {', '.join(LR_SCALINGS)}")
    ref = optimizer_cfg.get("reference_batch_size")
    if rule != "none" and (not isinstance(ref, int) or isinstance(ref, bool) or ref <= 0):
        raise ConfigError(
            f"optimizer.lr_scaling={rule} needs optimizer.reference_batch_size (a whole "
            f"number > 0, the batch size the lr was tuned at); got {ref!r}"
        )
    block = optimizer_cfg.get("momentum_schedule")
    if not block:
        return
    b = as_dict(block)
    valid = ("key", "start", "end", "steps", "shape", "roles")
    unknown = sorted(set(b) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in optimizer.momentum_schedule; valid keys: {', '.join(valid)}")
    missing = [k for k in ("key", "start", "end", "steps") if k not in b]
    if missing:
        raise ConfigError(
            f"optimizer.momentum_schedule lacks {', '.join(missing)}; "
            "e.g. {key: momentum, start: 0.85, end: 0.95, steps: 300}"
        )
    if b["key"] not in MOMENTUM_KEYS:
        raise ConfigError(
            f"optimizer.momentum_schedule.key={b['key']!r} is invalid; valid choices: {', '.join(MOMENTUM_KEYS)}"
        )
    if b.get("shape", "linear") not in MOMENTUM_SHAPES:
        raise ConfigError(
            f"optimizer.momentum_schedule.shape={b['shape']!r} is invalid; valid choices: {', '.join(MOMENTUM_SHAPES)}"
        )
    from optbench.optim.groups import ROLES

    bad_roles = sorted(set(b.get("roles") or []) - set(ROLES))
    if bad_roles:
        raise ConfigError(
            f"optimizer.momentum_schedule.roles has unknown role(s) {bad_roles}; valid roles: {', '.join(ROLES)}"
        )
    for k in ("start", "end"):
        v = b[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
            raise ConfigError(f"optimizer.momentum_schedule.{k}={v!r} is invalid: must be in [0, 1)")
    if not isinstance(b["steps"], int) or isinstance(b["steps"], bool) or not 0 <= b["steps"] <= max_steps:
        raise ConfigError(
            f"optimizer.momentum_schedule.steps={b['steps']!r} is invalid: must be a whole "
            f"number in [0, trainer.max_steps={max_steps}]"
        )
