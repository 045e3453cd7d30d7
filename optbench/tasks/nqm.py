"""task.kind=nqm: the noisy quadratic model of Zhang et al. 2019 ("Which Algorithmic Choices Matter
at Which Batch Sizes? Insights From a Noisy Quadratic Model", NeurIPS).

The loss is L(θ) = ½ Σ_i h_i θ_i², its stochastic gradient at batch size B is Hθ + ε with
ε ~ N(0, C/B): a mini-batch mean of B per-example gradients whose noise has covariance C. The
paper's setup, our defaults: d = 10^4, h_i = 1/i (section 3.5: the 1/i spectrum), C = H (c_i = h_i);
θ0 = 1 in every coordinate, as init2winit's NQM model (google/init2winit model_lib/nqm.py, by
co-authors of the paper) initialises it. B is trainer.batch_size; with trainer.grad_accum = k each
micro-batch carries noise C/(B/k) and the loop's mean over the k gives C/B again. Noise is drawn
from (seed, step, micro-batch): a resumed run sees the same noise.

θ is held as a task.shape tensor (default 100x100; [10000]: a vector): the loss is separable, so
the layout only matters to optimizers that act on matrices (Muon orthogonalises a 100x100 step;
Shampoo's preconditioners are 100x100 per side, where a 10^4 vector would need a 10^4 x 10^4
inverse root every step, hours on a CPU).

The metric `loss` is L(θ) itself, exact (float64 over the float32 parameters): the noise is on the
gradient, not on the loss. For SGD the expected loss has a closed form (`sgd_expected_loss`); the
tests check the task against it, which pins the noise scale.
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import nn

from optbench.errors import ConfigError
from optbench.tasks import register_task_kind
from optbench.tasks._small import limit_cpu_threads, validate_cpu_threads
from optbench.tasks.base import Task


def spectrum(dim: int, power: float) -> torch.Tensor:
    """1 / i^power for i = 1..dim (float64)."""
    return 1.0 / torch.arange(1, dim + 1, dtype=torch.float64) ** power


class NQMParams(nn.Module):
    def __init__(self, theta0: torch.Tensor):
        super().__init__()
        self.theta = nn.Parameter(theta0.float().clone())

    def forward(self):
        raise RuntimeError("the NQM has no forward; its task's loss reads theta")


def _unwrap(model: nn.Module) -> NQMParams:
    while not isinstance(model, NQMParams):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def _noise_seed(seed: int, step: int, micro: int) -> int:
    return ((int(seed) * 1_000_003 + int(step)) * 1_000_003 + int(micro) + 7) % (2**63 - 1)


def sgd_expected_loss(
    h: torch.Tensor, c: torch.Tensor, theta0: torch.Tensor, lr: float, batch_size: int, steps: int
) -> float:
    """E[L(θ_t)] under SGD θ ← θ − lr·(Hθ + ε), ε ~ N(0, C/B), in closed form: per coordinate
    E[θ_t²] = r^t θ0² + lr² (c/B) (1 − r^t) / (1 − r), r = (1 − lr·h)², from the recursion
    E[θ²_{t+1}] = r E[θ_t²] + lr² c/B (the noise is independent of θ_t and zero-mean)."""
    h, c, theta0 = h.double(), c.double(), theta0.double()
    r = (1 - lr * h) ** 2
    rt = r**steps
    one_minus_r = 1 - r
    exact = one_minus_r.abs() > 1e-15  # else (1 − r^t)/(1 − r) is its limit t
    geo = torch.where(exact, (1 - rt) / torch.where(exact, one_minus_r, torch.ones_like(r)), float(steps))
    second = rt * theta0**2 + lr**2 * c / batch_size * geo
    return float(0.5 * (h * second).sum())


def nqm(cfg: DictConfig, device: torch.device, rank: int, world_size: int) -> Task:
    """θ as the model, the noisy-gradient surrogate as the loss, the exact loss as the metric."""
    limit_cpu_threads(cfg, device)
    task, t = cfg.task, cfg.trainer
    dim = int(task.dim)
    h64 = spectrum(dim, float(task.hessian_power))
    c64 = float(task.get("noise_scale", 1.0)) * spectrum(dim, float(task.noise_power))
    shape = tuple(int(n) for n in task.get("shape") or (dim,))
    theta0 = torch.full((dim,), float(task.init), dtype=torch.float64)
    model = NQMParams(theta0.view(shape))
    h = h64.float().view(shape).to(device)
    micro_batch = t.batch_size // t.grad_accum  # per micro-batch examples: its noise is C / micro_batch
    noise_std = (c64 / micro_batch).sqrt().float().view(shape).to(device)
    seed = int(cfg.seed)

    class Stream:
        step = 0

        def __iter__(self):
            return self

        def __next__(self):
            keys = [(self.step, i) for i in range(int(t.grad_accum))]
            self.step += 1
            return keys

    stream = Stream()

    def loss(model: nn.Module, batch) -> torch.Tensor:
        theta = _unwrap(model).theta
        step, micro = batch
        g = torch.Generator(device="cpu").manual_seed(_noise_seed(seed, step, micro))
        eps = torch.randn(shape, generator=g).to(device) * noise_std
        value = 0.5 * (h * theta * theta).sum()
        noise = (eps * theta).sum()  # gradient eps; cancelled in the value (the loss is noise-free)
        return value + noise - noise.detach()

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict:
        theta = _unwrap(model).theta.detach().double().cpu().reshape(-1)
        return {"loss": float(0.5 * (h64 * theta * theta).sum())}

    def state_dict() -> dict:
        return {"step": stream.step}

    def load_state_dict(s: dict) -> None:
        stream.step = int(s.get("step", 0))

    return Task(
        name=task.name,
        model=model,
        train_batches=stream,
        loss=loss,
        evaluate=evaluate,
        metric=task.metric,
        mode=task.mode,
        target=task.target,
        samples_per_step=t.batch_size,
        state_dict=state_dict,
        load_state_dict=load_state_dict,
        summary_extra={
            "nqm": {
                "dim": dim,
                "shape": list(shape),
                "hessian_power": float(task.hessian_power),
                "noise_power": float(task.noise_power),
                "noise_scale": float(task.get("noise_scale", 1.0)),
                "init": float(task.init),
                "batch_size": int(t.batch_size),
                "initial_loss": float(0.5 * (h64 * theta0**2).sum()),
            }
        },
    )


def validate_nqm(cfg: DictConfig) -> None:
    task = cfg.task
    validate_cpu_threads(cfg)
    dim = task.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"task.dim={dim!r} is invalid: must be a whole number >= 1")
    shape = task.get("shape")
    if shape is not None and (not all(isinstance(n, int) and n > 0 for n in shape) or math.prod(shape) != dim):
        raise ConfigError(
            f"task.shape={list(shape)} is invalid: whole numbers whose product is task.dim={dim} "
            "(e.g. [100, 100] or [10000])"
        )
    for key in ("hessian_power", "noise_power", "init", "noise_scale"):
        v = task.get(key, 1.0)
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not math.isfinite(v)
            or (key == "noise_scale" and v < 0)
        ):
            raise ConfigError(
                f"task.{key}={v!r} is invalid: must be a finite number" + (" >= 0" if key == "noise_scale" else "")
            )
    t = cfg.trainer
    if t.batch_size % t.grad_accum:
        raise ConfigError(
            f"trainer.batch_size={t.batch_size} is invalid for task.kind=nqm: must be a multiple "
            f"of trainer.grad_accum={t.grad_accum}"
        )
    if cfg.get("model") is not None:
        raise ConfigError(
            f"task.kind=nqm builds its own parameters (θ); drop the model={cfg.model.get('name')} override"
        )
    if task.metric != "loss" or task.mode != "min":
        raise ConfigError(
            f"task.metric={task.metric}/task.mode={task.mode} is invalid for the nqm: its metric is `loss`, mode min"
        )


register_task_kind(
    "nqm",
    nqm,
    validate=validate_nqm,
    description="noisy quadratic model (Zhang et al. 2019): h_i = 1/i, C = H, noise C/B",
)
