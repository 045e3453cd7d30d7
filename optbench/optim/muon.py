"""Muon (Jordan et al. 2024): momentum, then Newton–Schulz orthogonalisation of each hidden matrix.

Our own implementation because torch.optim.Muon takes 2D parameters only, has no fallback for
the other roles and has none of the variants the community benchmarks use. Here:
- conv filters are flattened to (out, in*kh*kw) = (rows, cols); the NS iteration and the shape
  scale both use that flattened matrix;
- `scale_rule` (the update's multiplier, on the flattened matrix):
    original        sqrt(max(1, rows/cols))   (Keller Jordan's code; torch.optim.Muon "original")
    match_rms_adamw 0.2 * sqrt(max(rows, cols)) (Moonlight; torch.optim.Muon "match_rms_adamw")
    none            1                          (airbench94_muon)
  e.g. a (64, 32, 3, 3) filter is a 64 x 288 matrix: original 1, match_rms_adamw 0.2*sqrt(288);
- `momentum_form`: lerp (buf <- buf.lerp(g, 1-mu), Nesterov g.lerp(buf, mu): KellerJordan/Muon,
  modded-nanogpt, torch.optim.Muon) or sgd (buf <- mu*buf + g, Nesterov g + mu*buf: airbench94_muon);
- Newton–Schulz: `ns_coefficients` (a, b, c), `ns_steps`, the normalisation `ns_norm` (clamp:
  X / max(||X||_F, eps), torch.optim.Muon; add: X / (||X||_F + eps), modded-nanogpt and airbench)
  and the dtype it runs in, `ns_dtype` (bf16 as every reference; fp32 for exact comparisons);
  every matrix of one shape in one batched call (a lone matrix of its shape is not stacked);
- `weight_renorm`: before its update each tensor is rescaled to Frobenius norm sqrt(rows)
  (airbench94_muon's per-step filter renormalisation);
- order within a step: momentum, (weight_renorm), decoupled decay p *= 1 - lr*wd, p -= lr*scale*NS(update);
- only groups with role `matrix` use Muon; the other groups (embedding, head, scalar) go to a
  fallback optimizer (AdamW by default) that lives inside this object: one optimizer for the
  loop, one state_dict for checkpoints; with `optimizer.first_conv: fallback` (the default) the
  input conv (first trainable 4-D parameter) is given the embedding role, so the fallback trains it
  (catalog._muon_roles; `muon` keeps every trainable filter here, as airbench94_muon);
- under torch.distributed each rank orthogonalises only its share of each shape's matrices and
  the results are all-gathered (gradients and momentum are replicated, the NS work is not).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from optbench.errors import ConfigError
from optbench.optim._common import closure_loss

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MOMENTUM_FORMS = ("lerp", "sgd")
NS_NORMS = ("clamp", "add")
NS_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
SCALE_RULES = ("original", "none", "match_rms_adamw")


FIRST_CONV = ("fallback", "muon")


def check_choice(key: str, value, valid, prefix: str = "optimizer") -> None:
    """One line naming the bad value and the valid choices (config time and constructor alike)."""
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(f"{prefix}.{key}={value!r} is invalid; valid choices: {', '.join(valid)}")


def newton_schulz(
    x: Tensor, steps: int, coefficients=NS_COEFFICIENTS, eps: float = 1e-7, norm: str = "clamp", dtype: str = "bf16"
) -> Tensor:
    """Approximate U V^T of a (rows, cols) matrix or of each matrix of a (n, rows, cols) stack,
    in `dtype`. The input is never modified."""
    a, b, c = coefficients
    y = x.to(NS_DTYPES[dtype])
    # a lone matrix: the plain full reduction (a little faster than the per-matrix one)
    scale = torch.linalg.vector_norm(y) if y.ndim == 2 else torch.linalg.vector_norm(y, dim=(-2, -1), keepdim=True)
    scale = scale.clamp_(min=eps) if norm == "clamp" else scale.add_(eps)
    y = y.div_(scale) if y is not x else y / scale  # in place on our own copy only
    tall = y.size(-2) > y.size(-1)
    if tall:  # iterate on the wide orientation: the Gram matrix is the smaller one
        y = y.mT
    mm = torch.baddbmm if y.ndim == 3 else torch.addmm
    for _ in range(steps):
        gram = y @ y.mT
        poly = mm(gram, gram, gram, beta=b, alpha=c)  # b*A + c*A@A
        y = mm(y, poly, y, beta=a)  # a*X + (bA + cA^2) X
    return y.mT if tall else y


def matrix_view(p: Tensor) -> tuple[int, int]:
    """The 2D shape Muon sees: (out, everything else) — conv filters flattened."""
    return p.shape[0], math.prod(p.shape[1:])  # shape arithmetic: no tensor op per matrix


def shape_scale(rule: str, rows: int, cols: int) -> float:
    """The update multiplier of `scale_rule` for a (flattened) rows x cols matrix."""
    if rule == "original":
        return math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Muon(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_coefficients=NS_COEFFICIENTS,
        eps: float = 1e-7,
        weight_decay: float = 0.0,
        momentum_form: str = "lerp",
        ns_norm: str = "clamp",
        ns_dtype: str = "bf16",
        scale_rule: str = "original",
        weight_renorm: bool = False,
        fallback: Callable[[list[dict]], torch.optim.Optimizer] | None = None,
    ):
        check_choice("momentum_form", momentum_form, MOMENTUM_FORMS)
        check_choice("ns_norm", ns_norm, NS_NORMS)
        check_choice("ns_dtype", ns_dtype, tuple(NS_DTYPES))
        check_choice("scale_rule", scale_rule, SCALE_RULES)
        params = list(params)
        if params and isinstance(params[0], dict):
            groups = params
        else:  # a plain parameter list: 2D+ tensors are Muon's, the rest the fallback's
            groups = [
                {"params": [p for p in params if p.ndim >= 2], "role": "matrix"},
                {"params": [p for p in params if p.ndim < 2], "role": "scalar"},
            ]
            groups = [g for g in groups if g["params"]]
        for g in groups:
            g["params"] = list(g["params"])
            g["use_muon"] = g.get("role", "matrix") == "matrix"
        rest = [g for g in groups if not g["use_muon"]]
        fallback = fallback or (lambda gs: torch.optim.AdamW(gs))
        # the fallback fills its own defaults (betas, eps, ...) into the very group dicts we keep
        self.fallback = fallback(rest) if rest else None
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=int(ns_steps),
            ns_coefficients=tuple(ns_coefficients),
            eps=eps,
            weight_decay=weight_decay,
            momentum_form=momentum_form,
            ns_norm=ns_norm,
            ns_dtype=ns_dtype,
            scale_rule=scale_rule,
            weight_renorm=bool(weight_renorm),
        )
        super().__init__(groups, defaults)
        self._link_fallback()

    def add_param_group(self, param_group: dict) -> None:
        param_group.setdefault("use_muon", param_group.get("role", "matrix") == "matrix")
        if param_group["use_muon"]:
            return super().add_param_group(param_group)
        # a fallback group carries its own optimizer's settings; Muon's defaults stay out of it
        defaults, self.defaults = self.defaults, {}
        try:
            super().add_param_group(param_group)
        finally:
            self.defaults = defaults
        if getattr(self, "fallback", None) is not None:  # a group added after construction
            self._link_fallback()

    def _link_fallback(self) -> None:
        """Point the fallback at our group dicts and our state, so both share one state_dict."""
        if self.fallback is not None:
            self.fallback.param_groups = [g for g in self.param_groups if not g["use_muon"]]
            self.fallback.state = self.state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)  # replaces group dicts and the state mapping
        for g in self.param_groups:  # checkpoints from before these options: today's behaviour
            if g["use_muon"]:
                for k, v in (
                    ("momentum_form", "lerp"),
                    ("ns_norm", "clamp"),
                    ("ns_dtype", "bf16"),
                    ("scale_rule", "original"),
                    ("weight_renorm", False),
                ):
                    g.setdefault(k, v)
        self._link_fallback()

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_group(group)
        if self.fallback is not None:
            self.fallback.step()
        return loss

    def _muon_group(self, group: dict) -> None:
        lr = group["lr"]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        by_shape: dict[tuple[int, int], list[Tensor]] = defaultdict(list)
        for p in params:
            by_shape[matrix_view(p)].append(p)
        # foreach kernels on accelerators (a few launches per shape, not several per matrix); on a
        # CPU torch runs them as a per-tensor loop that also boxes each scalar: plain ops are faster
        each = params[0].device.type != "cpu"
        _, world = _world()
        for (rows, cols), mine in by_shape.items():
            # shape by shape, momentum right before its NS: the tensors are still in cache
            updates = self._momentum(mine, group, each)
            alpha = -lr * shape_scale(group["scale_rule"], rows, cols)
            if len(mine) == 1 and world == 1:  # a lone matrix: no stack, no copy
                p, u = mine[0], updates[0]
                flat = p.ndim != 2
                ortho = self._ns(u.reshape(rows, cols) if flat else u, group)
                self._rescale([p], group, each)
                p.add_(ortho.view_as(p) if flat else ortho, alpha=alpha)
                continue
            # stack straight into the NS dtype: one cast-and-copy pass instead of stack then cast
            stack = torch.empty((len(mine), rows, cols), dtype=NS_DTYPES[group["ns_dtype"]], device=mine[0].device)
            for k, u in enumerate(updates):
                stack[k].copy_(u.reshape(rows, cols))
            ortho = self._orthogonalise(stack, group)
            # the param's dtype takes the NS result as it adds it (no separate cast pass)
            news = [u.view_as(p) for p, u in zip(mine, ortho.unbind(0))]
            self._rescale(mine, group, each)
            if each:
                torch._foreach_add_(mine, news, alpha=alpha)
            else:
                for p, u in zip(mine, news):
                    p.add_(u, alpha=alpha)

    def _momentum(self, params: list[Tensor], group: dict, each: bool) -> list[Tensor]:
        """Update the buffers; return what NS orthogonalises (the Nesterov form, or the buffers)."""
        mu = group["momentum"]
        grads = [p.grad for p in params]
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            bufs.append(state["momentum_buffer"])
        if group["momentum_form"] == "lerp":
            if each:
                torch._foreach_lerp_(bufs, grads, 1 - mu)
            else:
                for b, g in zip(bufs, grads):
                    b.lerp_(g, 1 - mu)
            if not group["nesterov"]:
                return bufs
            return torch._foreach_lerp(grads, bufs, mu) if each else [g.lerp(b, mu) for g, b in zip(grads, bufs)]
        if each:
            torch._foreach_mul_(bufs, mu)
            torch._foreach_add_(bufs, grads)
        else:
            for b, g in zip(bufs, grads):
                b.mul_(mu).add_(g)
        if not group["nesterov"]:
            return bufs
        return torch._foreach_add(grads, bufs, alpha=mu) if each else [g.add(b, alpha=mu) for g, b in zip(grads, bufs)]

    @staticmethod
    def _rescale(params: list[Tensor], group: dict, each: bool) -> None:
        """(weight_renorm), then decoupled decay: right before the update is added, so the tensor is
        still in cache (the NS input does not depend on the weights: same numbers as doing it first)."""
        if group["weight_renorm"]:
            for p in params:  # Frobenius norm sqrt(out channels), as airbench94_muon (0 stays 0)
                p.mul_(p.shape[0] ** 0.5 / p.norm().clamp(min=1e-30))
        decay = 1 - group["lr"] * group["weight_decay"]
        if decay != 1:
            if each:
                torch._foreach_mul_(params, decay)
            else:
                for p in params:
                    p.mul_(decay)

    @staticmethod
    def _ns(x: Tensor, group: dict) -> Tensor:
        return newton_schulz(
            x, group["ns_steps"], group["ns_coefficients"], group["eps"], group["ns_norm"], group["ns_dtype"]
        )

    @classmethod
    def _orthogonalise(cls, stack: Tensor, group: dict) -> Tensor:
        rank, world = _world()
        if world == 1:
            return cls._ns(stack, group)
        n = stack.size(0)
        per_rank = -(-n // world)
        padded = torch.zeros((per_rank * world, *stack.shape[1:]), dtype=stack.dtype, device=stack.device)
        padded[:n] = stack
        mine = cls._ns(padded[rank * per_rank : (rank + 1) * per_rank], group).contiguous()
        # gloo has no bf16 collectives; NCCL gathers bf16 directly (half the bytes)
        wire = mine if dist.get_backend() == "nccl" else mine.float()
        parts = [torch.empty_like(wire) for _ in range(world)]
        dist.all_gather(parts, wire)
        return torch.cat(parts)[:n].to(mine.dtype)
