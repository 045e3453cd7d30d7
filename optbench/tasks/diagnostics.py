"""task.kind=diagnostic: small analytic problems, each exposing one failure mode of an optimizer.

A task yaml (conf/task/diag_<problem>.yaml) names `problem:` (one of PROBLEMS below), a
`difficulty:` (easy | medium | hard) and `levels:` mapping each difficulty to the problem's
parameters (the yaml shows what a difficulty changes; `task.levels.hard.kappa=1e8` changes one).
The metric `loss` is each problem's objective measured from its known minimum (0 at the optimum,
exact, noise-free: the noisy problems are scored on their expected objective), mode min; the target
is the success threshold.

What is fixed and what the seed draws: the problem instance (curvatures, rotations, targets) comes
from `task.instance_seed` (default 0), so every run of a task solves the same problem; the run seed
draws the starting point's jitter (or the random init of the matrix problems) and the gradient
noise. Noise and sparsity masks are functions of (seed, step), so a resumed run sees the same ones.

Every parameter is an nn.Parameter of an nn.Module (2-D where the problem has matrices: the
layer-scale and deep-linear problems, the quadratics' 8x8 blocks), so every optimizer of the zoo
runs, Muon on the matrices and its fallback on the vectors. Problems whose gradient is not the
gradient of the reported value (additive noise, sparse masks, stale gradients, the rotational
field of a game) return a surrogate from `loss()`: its value is the objective, its gradient the
field the problem defines (`with_gradient`), since the loop calls loss.backward().
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from optbench.errors import ConfigError, choices
from optbench.tasks import register_task_kind
from optbench.tasks._small import limit_cpu_threads, validate_cpu_threads
from optbench.tasks.base import Task

DIFFICULTIES = ("easy", "medium", "hard")


class Params(nn.Module):
    """The problem's variables as named nn.Parameters (2-D ones are `matrix` role, others `scalar`)."""

    def __init__(self, **tensors: torch.Tensor):
        super().__init__()
        for name, value in tensors.items():
            self.register_parameter(name, nn.Parameter(value.float().clone()))

    def forward(self):  # not used: the problem reads the parameters
        raise RuntimeError("a diagnostic problem has no forward; its task's loss reads the parameters")


def unwrap(model: nn.Module) -> Params:
    while not isinstance(model, Params):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def with_gradient(value: torch.Tensor, params: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """A tensor equal to `value` (detached) whose gradient w.r.t. params is `grads` exactly:
    value + Σ<p, g> − Σ<p, g>.detach() (the last two cancel to 0 in the value, not in the gradient)."""
    return add_gradient(value.detach(), params, grads)


def add_gradient(value: torch.Tensor, params: list[torch.Tensor], extra: list[torch.Tensor]) -> torch.Tensor:
    """`value` (with its own gradient, if attached) plus `extra` on each param's gradient, same value."""
    inner = sum((p * g.detach()).sum() for p, g in zip(params, extra))
    return value + inner - inner.detach()


@dataclass
class Context:
    instance: torch.Generator  # the problem instance's randomness (task.instance_seed): fixed
    start: torch.Generator  # the starting point's (the run seed)
    seed: int  # the run seed, for per-step noise (with the step: reproducible on resume)


@dataclass
class Problem:
    module: Params
    objective: Callable[[Params], torch.Tensor]  # the scored value, 0 at the optimum
    # the training loss at (step, micro-batch), a surrogate where the gradient is not ∇objective
    train_loss: Callable[[Params, int, int], torch.Tensor] | None = None
    state: dict = field(default_factory=dict)  # per-run state to checkpoint (delayed: history)
    info: dict = field(default_factory=dict)  # into summary.json


def _seed_of(*keys: int) -> int:
    h = 0
    for k in keys:
        h = (h * 1_000_003 + int(k) + 1) % (2**63 - 1)
    return h


def _generator(*keys: int) -> torch.Generator:
    """A generator seeded by a tuple of ints (seed, step, micro): noise reproducible on resume."""
    return torch.Generator().manual_seed(_seed_of(*keys))


def _orthogonal(n: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def _spectrum(d: int, kappa: float) -> torch.Tensor:
    """Curvatures log-spaced from 1 down to 1/kappa."""
    return torch.logspace(0, -math.log10(kappa), d, dtype=torch.float64).float()


def _equal_share_start(h: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A start where every eigendirection holds the same share of an initial loss of 1 (random signs)."""
    signs = torch.randint(0, 2, h.shape, generator=g).float() * 2 - 1
    return signs * torch.sqrt(2.0 / (h.numel() * h))


# --------------------------------------------------------------------------- the problems
def quadratic(ctx: Context, *, kappa: float = 1e4, side: int = 8, rotated: bool = False) -> Problem:
    """½ θᵀHθ with H's eigenvalues log-spaced in [1/kappa, 1], axis-aligned (diagonal
    preconditioners fix it) or rotated by a random orthogonal matrix (they do not); f(θ0) = 1."""
    d = side * side
    h = _spectrum(d, kappa)
    q = _orthogonal(d, ctx.instance) if rotated else None
    u0 = _equal_share_start(h, ctx.start)
    theta0 = (q @ u0 if rotated else u0).view(side, side)

    def objective(m: Params) -> torch.Tensor:
        u = m.theta.reshape(-1)
        if q is not None:
            u = q.T @ u
        return 0.5 * (h * u * u).sum()

    return Problem(Params(theta=theta0), objective, info={"kappa": kappa, "dim": d, "rotated": rotated})


def rotated_quadratic(ctx: Context, *, kappa: float = 1e4, side: int = 8) -> Problem:
    return quadratic(ctx, kappa=kappa, side=side, rotated=True)


def rosenbrock(ctx: Context, *, dim: int = 2, jitter: float = 0.1) -> Problem:
    """Chained Rosenbrock Σ 100(x_{i+1} − x_i²)² + (1 − x_i)², averaged over its dim−1 terms;
    the classic start (−1.2, 1, −1.2, 1, ...) plus seeded jitter; minimum 0 at all ones."""
    if dim < 2:
        raise ConfigError(f"task.levels.<difficulty>.dim={dim} is invalid for rosenbrock: must be >= 2")
    x0 = torch.tensor([-1.2 if i % 2 == 0 else 1.0 for i in range(dim)])
    x0 = x0 + jitter * torch.randn(dim, generator=ctx.start)

    def objective(m: Params) -> torch.Tensor:
        x = m.x
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).mean()

    return Problem(Params(x=x0), objective, info={"dim": dim})


def beale(ctx: Context, *, dim: int = 2, jitter: float = 0.1) -> Problem:
    """Beale's function on each of dim/2 coordinate pairs, averaged; start (1, 1) per pair plus
    seeded jitter; minimum 0 at (3, 0.5). Steep walls for |y| > 1, a flat valley towards x = 3."""
    if dim % 2:
        raise ConfigError(f"task.levels.<difficulty>.dim={dim} is invalid for beale: must be even")
    x0 = torch.ones(dim // 2, 2) + jitter * torch.randn(dim // 2, 2, generator=ctx.start)

    def objective(m: Params) -> torch.Tensor:
        x, y = m.xy[:, 0], m.xy[:, 1]
        return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2).mean()

    return Problem(Params(xy=x0), objective, info={"dim": dim})


def noisy_quadratic(
    ctx: Context,
    *,
    sigma: float = 0.1,
    kappa: float = 10.0,
    side: int = 8,
    noise: str = "gaussian",
    df: float = 2.0,
    seed: int = 0,
) -> Problem:
    """½ θᵀHθ (kappa, f(θ0) = 1) whose gradient carries additive noise σ·ξ per step, ξ i.i.d.
    standard normal, or Student-t with `df` degrees of freedom (heavy tails: no variance for
    df <= 2). Scored on the noise-free objective: reaching it needs lr decay, averaging or
    robustness to outliers (clipping)."""
    if noise not in ("gaussian", "student_t"):
        raise ConfigError(f"task noise={noise!r} is invalid; valid choices: gaussian, student_t")
    d = side * side
    h = _spectrum(d, kappa)
    theta0 = _equal_share_start(h, ctx.start).view(side, side)

    def objective(m: Params) -> torch.Tensor:
        u = m.theta.reshape(-1)
        return 0.5 * (h * u * u).sum()

    def train_loss(m: Params, step: int, micro: int) -> torch.Tensor:
        if noise == "gaussian":
            xi = torch.randn(side, side, generator=_generator(ctx.seed, step, micro))
        else:
            import numpy as np

            xi = torch.from_numpy(
                np.random.default_rng(_seed_of(ctx.seed, step, micro)).standard_t(df, (side, side))
            ).float()
        return add_gradient(objective(m), [m.theta], [sigma * xi])

    return Problem(
        Params(theta=theta0),
        objective,
        train_loss,
        info={"sigma": sigma, "kappa": kappa, "noise": noise, **({"df": df} if noise != "gaussian" else {})},
    )


def layer_scale(ctx: Context, *, span: float = 1e6, layers: int = 6, side: int = 8) -> Problem:
    """`layers` 8x8 weight matrices, each fitting its own target, their losses weighted by scales
    log-spaced over `span` (1e-3 ... 1e3 for 1e6): per-layer gradient scales that one global lr
    cannot serve. Scored unweighted: the mean relative error over the layers, 1 at the start (0)."""
    scales = torch.logspace(-math.log10(span) / 2, math.log10(span) / 2, layers, dtype=torch.float64).float()
    targets = [torch.randn(side, side, generator=ctx.instance) for _ in range(layers)]
    norms = [t.pow(2).sum() for t in targets]
    module = Params(**{f"w{k}": torch.zeros(side, side) for k in range(layers)})

    def errors(m: Params) -> list[torch.Tensor]:
        return [(getattr(m, f"w{k}") - targets[k]).pow(2).sum() / norms[k] for k in range(layers)]

    def objective(m: Params) -> torch.Tensor:
        return torch.stack(errors(m)).mean()

    def train_loss(m: Params, step: int, micro: int) -> torch.Tensor:
        # the loss the optimizer sees: layer k's error x its scale (what a global lr must serve)
        return (scales * torch.stack(errors(m))).mean()

    return Problem(module, objective, train_loss, info={"scales": scales.tolist()})


def delayed(ctx: Context, *, delay: int = 4, kappa: float = 10.0, side: int = 8) -> Problem:
    """½ θᵀHθ (kappa, f(θ0) = 1) trained on stale gradients: step t's gradient is taken at the
    parameters of step t − delay (asynchronous / pipelined training); the first steps use θ0's.
    The history is the parameters at the start of each step (a closure optimizer's repeated calls
    within one step reuse that step's), checkpointed with the run."""
    d = side * side
    h = _spectrum(d, kappa).view(side, side)
    theta0 = _equal_share_start(h.reshape(-1), ctx.start).view(side, side)
    history: dict[int, torch.Tensor] = {}

    def objective(m: Params) -> torch.Tensor:
        return 0.5 * (h * m.theta * m.theta).sum()

    def train_loss(m: Params, step: int, micro: int) -> torch.Tensor:
        if step not in history:
            history[step] = m.theta.detach().clone()
            for s in [s for s in history if s < step - delay]:
                del history[s]
        old = history.get(step - delay, history[min(history)])
        return with_gradient(objective(m), [m.theta], [h * old])  # ∇f at the stale point

    def state() -> dict:
        return {"history": {int(k): v.clone() for k, v in history.items()}}

    def load(s: dict) -> None:
        history.clear()
        history.update({int(k): v for k, v in (s.get("history") or {}).items()})

    return Problem(
        Params(theta=theta0),
        objective,
        train_loss,
        state={"get": state, "set": load},
        info={"delay": delay, "kappa": kappa},
    )


def saddle(ctx: Context, *, eps: float = 1e-4, lam: float = 0.03, side: int = 4) -> Problem:
    """Σ ½x² + λ Σ (¼y⁴ − ½y²): a strict saddle at y = 0 whose escape direction has curvature
    −λ, λ small against the x curvature 1 (which caps a stable lr); start with x random and
    y = ±eps (near the saddle). Minimum at y = ±1. Trained on f − f*, scored as (f − f*) / (λ n/4):
    1 at the saddle point, 0 at a minimum."""
    n = side * side
    x0 = torch.randn(side, side, generator=ctx.start)
    y0 = eps * (torch.randint(0, 2, (side, side), generator=ctx.start).float() * 2 - 1)
    f_star = -lam * n / 4

    def excess(m: Params) -> torch.Tensor:
        return 0.5 * m.x.pow(2).sum() + lam * (0.25 * m.y.pow(4) - 0.5 * m.y.pow(2)).sum() - f_star

    def objective(m: Params) -> torch.Tensor:
        return excess(m) / (lam * n / 4)

    def train_loss(m: Params, step: int, micro: int) -> torch.Tensor:
        return excess(m)  # the curvatures as stated (1 and −λ), not rescaled by the score's normaliser

    return Problem(Params(x=x0, y=y0), objective, train_loss, info={"eps": eps, "lam": lam})


def plateau(ctx: Context, *, radius: float = 3.5, side: int = 4) -> Problem:
    """1 − exp(−|θ − c|²/2): a well of width 1 in a flat plain; the start lies `radius` widths away
    where the gradient is ~radius·exp(−radius²/2) (3.5: 8e-3; 4.5: 2e-4). Minimum 0 at c."""
    c = torch.randn(side, side, generator=ctx.instance)
    direction = torch.randn(side, side, generator=ctx.start)
    theta0 = c + radius * direction / direction.norm()

    def objective(m: Params) -> torch.Tensor:
        return 1 - torch.exp(-0.5 * (m.theta - c).pow(2).sum())

    return Problem(Params(theta=theta0), objective, info={"radius": radius})


def sparse(ctx: Context, *, p_min: float = 0.01, batch: int = 8, side: int = 8) -> Problem:
    """Least squares with sparse features: coordinate i of the 64 appears in each of a step's
    `batch` samples with probability p_i, log-spaced from 1 down to p_min; a sample's loss is
    ½(θ_i − θ*_i)² over the coordinates it holds, the step's the batch mean, so rare coordinates
    get rare, small gradients (exactly 0 when absent). Scored unweighted: mean (θ − θ*)² / mean θ*²."""
    d = side * side
    p = torch.logspace(0, math.log10(p_min), d, dtype=torch.float64).float().view(side, side)
    target = torch.randn(side, side, generator=ctx.instance)
    scale = target.pow(2).mean()

    def objective(m: Params) -> torch.Tensor:
        return (m.theta - target).pow(2).mean() / scale

    def train_loss(m: Params, step: int, micro: int) -> torch.Tensor:
        counts = (torch.rand(batch, side, side, generator=_generator(ctx.seed, step, micro)) < p).sum(0)
        # the gradient of the batch's mean sample loss ½ Σ_i (count_i / batch)(θ_i − θ*_i)²
        return with_gradient(objective(m), [m.theta], [counts / batch * (m.theta - target)])

    return Problem(Params(theta=torch.zeros(side, side)), objective, train_loss, info={"p_min": p_min})


def bilinear(ctx: Context, *, eps: float = 0.1, side: int = 4) -> Problem:
    """The game min_x max_y xᵀAy + (eps/2)(|x|² − |y|²), A a random orthogonal 16x16: its descent
    field (Ay + eps·x, −Aᵀx + eps·y) rotates around the equilibrium 0 (simultaneous gradient
    descent spirals out at eps = 0, in for eps large enough against the lr). The loop calls
    backward() on a loss, so loss() returns a surrogate whose gradient is that field:
    xᵀA·sg(y) − sg(x)ᵀA·y + eps/2(|x|² + |y|²) (sg = stop-gradient), valued at the score:
    (|x|² + |y|²) / (|x0|² + |y0|²)."""
    n = side * side
    a = _orthogonal(n, ctx.instance)
    x0, y0 = torch.randn(n, generator=ctx.start), torch.randn(n, generator=ctx.start)
    r0 = float(x0.pow(2).sum() + y0.pow(2).sum())

    def objective(m: Params) -> torch.Tensor:
        return (m.x.pow(2).sum() + m.y.pow(2).sum()) / r0

    def train_loss(m: Params, step: int, micro: int) -> torch.Tensor:
        x, y = m.x.reshape(-1), m.y.reshape(-1)
        field_loss = x @ a @ y.detach() - x.detach() @ a @ y + 0.5 * eps * (x.pow(2).sum() + y.pow(2).sum())
        return objective(m).detach() + field_loss - field_loss.detach()

    return Problem(Params(x=x0.view(side, side), y=y0.view(side, side)), objective, train_loss, info={"eps": eps})


def deep_linear(ctx: Context, *, depth: int = 4, width: int = 8, init_scale: float = 0.5) -> Problem:
    """A deep linear network W_L···W_1 fitting a target matrix (singular values in [0.5, 2]):
    ½|W_L···W_1 − A|²_F / ½|A|²_F. Small random init (each W of spectral scale ~init_scale) puts
    the product near the saddle at 0: a plateau whose length grows with depth."""
    u, v = _orthogonal(width, ctx.instance), _orthogonal(width, ctx.instance)
    s = torch.linspace(2.0, 0.5, width)
    target = u @ torch.diag(s) @ v.T
    norm = target.pow(2).sum()
    weights = {
        f"w{k}": init_scale * torch.randn(width, width, generator=ctx.start) / math.sqrt(width) for k in range(depth)
    }

    def objective(m: Params) -> torch.Tensor:
        prod = m.w0
        for k in range(1, depth):
            prod = getattr(m, f"w{k}") @ prod
        return (prod - target).pow(2).sum() / norm

    return Problem(Params(**weights), objective, info={"depth": depth, "init_scale": init_scale})


PROBLEMS: dict[str, Callable[..., Problem]] = {
    "quadratic": quadratic,
    "rotated_quadratic": rotated_quadratic,
    "rosenbrock": rosenbrock,
    "beale": beale,
    "noisy_quadratic": noisy_quadratic,
    "layer_scale": layer_scale,
    "delayed": delayed,
    "saddle": saddle,
    "plateau": plateau,
    "sparse": sparse,
    "bilinear": bilinear,
    "deep_linear": deep_linear,
}


def problem_params(cfg: DictConfig) -> dict:
    """The chosen difficulty's parameters (task.levels[task.difficulty])."""
    task = cfg.task
    levels = task.get("levels") or {}
    level = task.get("difficulty")
    return OmegaConf.to_container(levels[level], resolve=True) if level in levels else {}


def build_problem(cfg: DictConfig) -> Problem:
    task = cfg.task
    ctx = Context(
        instance=torch.Generator().manual_seed(int(task.get("instance_seed", 0))),
        start=_generator(cfg.seed, -1),
        seed=int(cfg.seed),
    )
    return PROBLEMS[str(task.problem)](ctx, **problem_params(cfg))


# --------------------------------------------------------------------------- the task
class StepStream:
    """Each step's micro-batches are just (step, micro) keys: the problem draws its noise from them."""

    def __init__(self, n_micro: int):
        self.step, self.n_micro = 0, n_micro

    def __iter__(self):
        return self

    def __next__(self):
        keys = [(self.step, i) for i in range(self.n_micro)]
        self.step += 1
        return keys


def diagnostic(cfg: DictConfig, device: torch.device, rank: int, world_size: int) -> Task:
    """The problem's parameters as the model, its (surrogate) loss per step, its exact objective as the metric."""
    limit_cpu_threads(cfg, device)
    problem = build_problem(cfg)
    stream = StepStream(int(cfg.trainer.grad_accum))
    objective, train_loss = problem.objective, problem.train_loss

    def loss(model: nn.Module, batch) -> torch.Tensor:
        m = unwrap(model)
        step, micro = batch
        return objective(m) if train_loss is None else train_loss(m, step, micro)

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict:
        return {"loss": float(objective(unwrap(model)))}

    def state_dict() -> dict:
        out = {"step": stream.step}
        if "get" in problem.state:
            out["problem"] = problem.state["get"]()
        return out

    def load_state_dict(s: dict) -> None:
        stream.step = int(s.get("step", 0))
        if "set" in problem.state:
            problem.state["set"](s.get("problem") or {})

    task = cfg.task
    return Task(
        name=task.name,
        model=problem.module,
        train_batches=stream,
        loss=loss,
        evaluate=evaluate,
        metric=task.metric,
        mode=task.mode,
        target=task.target,
        samples_per_step=1,
        state_dict=state_dict,
        load_state_dict=load_state_dict,
        summary_extra={"problem": str(task.problem), "difficulty": str(task.difficulty), "problem_info": problem.info},
    )


def validate_diagnostic(cfg: DictConfig) -> None:
    task = cfg.task
    validate_cpu_threads(cfg)
    if task.get("problem") not in PROBLEMS:
        raise ConfigError(f"task.problem={task.get('problem')!r} is invalid; valid choices: {choices(PROBLEMS)}")
    if task.get("difficulty") not in DIFFICULTIES:
        raise ConfigError(
            f"task.difficulty={task.get('difficulty')!r} is invalid; valid choices: {', '.join(DIFFICULTIES)}"
        )
    levels = task.get("levels") or {}
    missing = [d for d in DIFFICULTIES if d not in levels]
    if missing:
        raise ConfigError(
            f"task.levels lacks {', '.join(missing)}: task {task.name} must say what each "
            f"difficulty ({', '.join(DIFFICULTIES)}) sets"
        )
    if cfg.get("model") is not None:
        raise ConfigError(
            f"task.kind=diagnostic builds its own parameters (task.problem={task.problem}); drop "
            f"the model={cfg.model.get('name')} override"
        )
    builder = PROBLEMS[task.problem]
    known = [p for p in inspect.signature(builder).parameters if p != "ctx"]
    for level in DIFFICULTIES:
        for key, value in (OmegaConf.to_container(levels[level], resolve=True) or {}).items():
            if key not in known:
                raise ConfigError(
                    f"task.levels.{level}.{key} is not a parameter of problem {task.problem}; "
                    f"valid keys: {', '.join(known)}"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ConfigError(f"task.levels.{level}.{key}={value!r} is invalid: must be a number (or a name)")
    if task.mode != "min" or task.metric != "loss":
        raise ConfigError(
            f"task.metric={task.metric}/task.mode={task.mode} is invalid for a diagnostic: "
            "the metric is `loss` (its objective above the known minimum), mode min"
        )


register_task_kind(
    "diagnostic",
    diagnostic,
    validate=validate_diagnostic,
    description="small analytic problems, each exposing one optimizer failure mode",
)
