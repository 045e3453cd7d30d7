"""task.kind=digits: scikit-learn's digits (1,797 8x8 images, shipped with the library, no download).

Three models (task.model): an MLP, a small CNN, and multinomial logistic regression, the convex
workload. Its training objective is the mean cross-entropy over the training images plus
(l2/2)·||W||² (weights only, not the intercept, as scikit-learn does), strictly convex in W, and its
minimum is computed once in float64 by L-BFGS (cached in memory, keyed by a hash of the data and the
objective), so every evaluation reports `excess_loss` = objective − optimum (the metric of
task=digits_logreg) beside test accuracy. The train/test split is fixed (seed 0), independent of the
run seed, which only orders the minibatches.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from optbench.errors import ConfigError
from optbench.tasks import register_task_kind
from optbench.tasks._small import limit_cpu_threads, validate_cpu_threads
from optbench.tasks.base import Task, loss_reduction

MODELS = ("mlp", "cnn", "logreg")
N_TEST = 297  # 1,797 = 1,300 train + 200 validation + 297 test
N_VAL = 200  # what `optbench tune` selects on (val_acc), so that the test set stays unseen
SUITE_EXTRA = "pip install 'optbench[suite]'"


def load_digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images as float64 in [0, 1] (pixels are 0..16) and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ConfigError(f"task.kind=digits needs scikit-learn (the suite extra): {SUITE_EXTRA}") from None
    data = load_digits()
    return torch.from_numpy(data.data).double() / 16.0, torch.from_numpy(data.target).long()


def split(x: torch.Tensor, y: torch.Tensor, with_val: bool = False):
    """The fixed split of a seed-0 permutation: the last N_TEST images for test, the N_VAL before
    them for validation, the rest for training. Returns train and test (and val with with_val)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, val, test = order[: -(N_TEST + N_VAL)], order[-(N_TEST + N_VAL) : -N_TEST], order[-N_TEST:]
    out = (x[train], y[train], x[test], y[test])
    return (*out, x[val], y[val]) if with_val else out


# --------------------------------------------------------------------------- models
class MLP(nn.Module):
    def __init__(self, width: int = 128, depth: int = 2):
        super().__init__()
        layers, d = [], 64
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        self.net = nn.Sequential(nn.Flatten(), *layers, nn.Linear(d, 10))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
            nn.Flatten(),
            nn.Linear(2 * width * 16, 10),
        )

    def forward(self, x):
        return self.net(x)


class LogReg(nn.Module):
    def __init__(self):
        super().__init__()
        # zero init: the same starting point every seed, as for a convex problem it should be
        self.weight = nn.Parameter(torch.zeros(10, 64))
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return x @ self.weight.T + self.bias


def build_model(name: str, cfg: DictConfig) -> nn.Module:
    if name == "mlp":
        return MLP(int(cfg.get("width", 128)), int(cfg.get("depth", 2)))
    if name == "cnn":
        return CNN(int(cfg.get("width", 16)))
    return LogReg()


# --------------------------------------------------------------------------- the convex objective
def logreg_objective(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float
) -> torch.Tensor:
    """Mean cross-entropy + (l2/2)·||W||²: scikit-learn's LogisticRegression objective divided by
    C·n, i.e. C = 1 / (n · l2)."""
    return F.cross_entropy(x @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()


_OPTIMA: dict[str, tuple[float, torch.Tensor, torch.Tensor]] = {}


def objective_key(x: torch.Tensor, y: torch.Tensor, l2: float) -> str:
    h = hashlib.sha256()
    h.update(x.double().contiguous().numpy().tobytes())
    h.update(y.contiguous().numpy().tobytes())
    h.update(f"mean_ce+l2/2|W|^2;l2={l2!r}".encode())
    return h.hexdigest()


def logreg_optimum(
    x: torch.Tensor, y: torch.Tensor, l2: float, cache_dir=None
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The minimum of logreg_objective (float64, max |gradient| < 1e-8: the value to ~1e-13 since
    the objective is strongly convex in W), with its minimiser; computed once per data + objective,
    kept in memory and, with cache_dir, in a file named by the key (a new process reads it back)."""
    key = objective_key(x, y, l2)
    path = None
    if cache_dir is not None:
        from pathlib import Path

        path = Path(str(cache_dir)) / f"digits_logreg_optimum_{key[:16]}.pt"
        if key not in _OPTIMA and path.is_file():
            saved = torch.load(path, weights_only=True)
            if saved.get("key") == key:
                _OPTIMA[key] = (float(saved["value"]), saved["weight"], saved["bias"])
    if key not in _OPTIMA:
        try:
            from scipy.optimize import minimize
        except ImportError:
            raise ConfigError(f"task=digits_logreg needs scipy (the suite extra): {SUITE_EXTRA}") from None
        x, y = x.double(), y
        n_w = 10 * x.shape[1]

        def f(v):
            t = torch.from_numpy(v).requires_grad_(True)
            value = logreg_objective(t[:n_w].view(10, -1), t[n_w:], x, y, l2)
            (grad,) = torch.autograd.grad(value, t)
            return value.item(), grad.numpy()

        import numpy as np

        res = minimize(
            f,
            np.zeros(n_w + 10),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 20000, "maxcor": 30, "gtol": 1e-11, "ftol": 0.0},
        )
        v = torch.from_numpy(res.x)
        _, g = f(res.x)
        if not np.isfinite(res.fun) or np.abs(g).max() > 1e-8:
            raise RuntimeError(f"digits logreg optimum did not converge: {res.message} (|g|max={np.abs(g).max():.3g})")
        _OPTIMA[key] = (float(res.fun), v[:n_w].view(10, -1).clone(), v[n_w:].clone())
        if path is not None:
            import os

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            value, w, b = _OPTIMA[key]
            torch.save({"key": key, "value": value, "weight": w, "bias": b}, tmp)
            os.replace(tmp, path)  # atomic: a concurrent run reads the old file or the new one
    return _OPTIMA[key]


# --------------------------------------------------------------------------- the task
def _unwrap(model: nn.Module) -> nn.Module:
    """The LogReg inside DDP / torch.compile / an averaging wrapper."""
    while not isinstance(model, LogReg):
        model = getattr(model, "module", None) or model._orig_mod
    return model


class MinibatchStream:
    """Epochs of seeded random order over the training set; each step a list of micro-batches.
    Its position (epoch, offset) is its state, for resume."""

    def __init__(self, x, y, batch_size: int, micro: int, seed: int):
        self.x, self.y, self.batch, self.micro, self.seed = x, y, batch_size, micro, seed
        self.epoch, self.offset = 0, 0
        self.order = self._order()

    def _order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(len(self.x), generator=g)

    def __iter__(self):
        return self

    def __next__(self):
        if self.offset + self.batch > len(self.x):  # drop the ragged end: every step the same size
            self.epoch, self.offset = self.epoch + 1, 0
            self.order = self._order()
        idx = self.order[self.offset : self.offset + self.batch]
        self.offset += self.batch
        return [(self.x[i], self.y[i]) for i in idx.split(self.micro)]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self.order = self._order()


def digits(cfg: DictConfig, device: torch.device, rank: int, world_size: int) -> Task:
    """Digits arrays on the device, seeded minibatches, cross-entropy (+ L2 for logreg), test accuracy."""
    t, task = cfg.trainer, cfg.task
    limit_cpu_threads(cfg, device)
    name = str(task.model)
    x, y = load_digits_arrays()
    train_x, train_y, test_x, test_y, val_x, val_y = split(x, y, with_val=True)
    l2 = float(task.get("l2", 0.0) or 0.0)
    optimum = logreg_optimum(train_x, train_y, l2, task.get("cache_dir"))[0] if name == "logreg" else None
    model = build_model(name, task)
    dtype = torch.float32
    tx, ty = train_x.to(device, dtype), train_y.to(device)
    ex, ey = test_x.to(device, dtype), test_y.to(device)
    vx, vy = val_x.to(device, dtype), val_y.to(device)
    micro = t.batch_size // (t.grad_accum * world_size)
    reduction = loss_reduction(cfg)

    def make_stream(seed: int) -> MinibatchStream:
        # ranks: each its own seeded stream (a task this small runs on one process in practice)
        return MinibatchStream(tx, ty, t.batch_size // world_size, micro, seed * max(world_size, 1) + rank)

    stream = make_stream(cfg.seed)
    weight_penalty = name == "logreg" and l2 > 0

    def loss(model: nn.Module, batch) -> torch.Tensor:
        bx, by = batch
        out = F.cross_entropy(model(bx), by, reduction=reduction)
        if weight_penalty:  # the objective's own L2 (not the optimizer's weight decay): per example for sum
            out = out + 0.5 * l2 * _unwrap(model).weight.pow(2).sum() * (len(by) if reduction == "sum" else 1)
        return out

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict:
        out = {}
        for split_name, sx, sy in (("test", ex, ey), ("val", vx, vy)):
            logits = model(sx).float()
            out[f"{split_name}_acc"] = (logits.argmax(1) == sy).float().mean().item()
            out[f"{split_name}_loss"] = F.cross_entropy(logits, sy).item()
        train_logits = model(tx).float()
        out["train_loss"] = F.cross_entropy(train_logits, ty).item()
        if optimum is not None:
            m = _unwrap(model)
            w, b = m.weight.detach().double().cpu(), m.bias.detach().double().cpu()
            objective = logreg_objective(w, b, train_x, train_y, l2).item()  # exact, float64
            out["objective"] = objective
            out["excess_loss"] = objective - optimum
        return out

    extra = {"train_images": len(tx), "val_images": len(vx), "test_images": len(ex), "digits_model": name}
    if optimum is not None:
        extra.update({"optimum": optimum, "l2": l2, "sklearn_C": 1.0 / (len(tx) * l2) if l2 else math.inf})
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
        state_dict=stream.state_dict,
        load_state_dict=stream.load_state_dict,
        make_train_batches=make_stream,
        loss_reduction=reduction,
        summary_extra=extra,
    )


def validate_digits(cfg: DictConfig) -> None:
    task = cfg.task
    validate_cpu_threads(cfg)
    if task.get("model") not in MODELS:
        raise ConfigError(f"task.model={task.get('model')!r} is invalid; valid choices: {', '.join(MODELS)}")
    if cfg.get("model") is not None:
        raise ConfigError(
            "task.kind=digits builds its own model (task.model=mlp|cnn|logreg); drop the "
            f"model={cfg.model.get('name')} override"
        )
    l2 = task.get("l2", 0.0)
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or l2 < 0 or (task.model == "logreg" and l2 <= 0):
        raise ConfigError(
            f"task.l2={l2!r} is invalid: must be a number >= 0 (> 0 for logreg: its optimum must be unique)"
        )
    n_train = 1797 - N_TEST - N_VAL
    b = cfg.trainer.batch_size
    if b > n_train:
        raise ConfigError(
            f"trainer.batch_size={b} exceeds the {n_train} digits training images; "
            f"choose a batch size of at most {n_train}"
        )
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ConfigError(f"task.kind=digits needs scikit-learn (the suite extra): {SUITE_EXTRA}") from None


register_task_kind(
    "digits",
    digits,
    validate=validate_digits,
    description="scikit-learn digits (8x8, offline): MLP, CNN or convex logistic regression",
)
