"""Muon (Jordan et al. 2024): momentum, then Newton–Schulz orthogonalisation of each hidden matrix.

Our own implementation because torch.optim.Muon takes 2D parameters only, has no fallback for
the other roles and orthogonalises one matrix at a time. Here:
- conv filters are flattened to (out, in*kh*kw); the shape scaling sqrt(max(1, rows/cols)) uses
  that flattened matrix ("original" scaling of torch.optim.Muon / Keller Jordan's code);
- Newton–Schulz runs in bf16 with the quintic coefficients (3.4445, -4.7750, 2.0315), ns_steps
  configurable, every matrix of one shape in one batched call;
- Nesterov momentum and decoupled weight decay as torch.optim.Muon;
- only groups with role `matrix` use Muon; the other groups (embedding, head, scalar) go to a
  fallback optimizer (AdamW by default) that lives inside this object: one optimizer for the
  loop, one state_dict for checkpoints;
- under torch.distributed each rank orthogonalises only its share of each shape's matrices and
  the results are all-gathered (gradients and momentum are replicated, the NS work is not).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(stack: Tensor, steps: int, coefficients=NS_COEFFICIENTS, eps: float = 1e-7) -> Tensor:
    """Approximate U V^T of each matrix of a (n, rows, cols) stack, in bf16."""
    a, b, c = coefficients
    x = stack.bfloat16()
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide orientation: the Gram matrix is the smaller one
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)   # b*A + c*A@A
        x = torch.baddbmm(x, poly, x, beta=a)                     # a*X + (bA + cA^2) X
    return x.mT if tall else x


def matrix_view(p: Tensor) -> tuple[int, int]:
    """The 2D shape Muon sees: (out, everything else) — conv filters flattened."""
    return p.shape[0], p[0].numel()


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, ns_coefficients=NS_COEFFICIENTS, eps: float = 1e-7,
                 weight_decay: float = 0.0,
                 fallback: Callable[[list[dict]], torch.optim.Optimizer] | None = None):
        params = list(params)
        if params and isinstance(params[0], dict):
            groups = params
        else:  # a plain parameter list: 2D+ tensors are Muon's, the rest the fallback's
            groups = [{"params": [p for p in params if p.ndim >= 2], "role": "matrix"},
                      {"params": [p for p in params if p.ndim < 2], "role": "scalar"}]
            groups = [g for g in groups if g["params"]]
        for g in groups:
            g["params"] = list(g["params"])
            g["use_muon"] = g.get("role", "matrix") == "matrix"
        rest = [g for g in groups if not g["use_muon"]]
        fallback = fallback or (lambda gs: torch.optim.AdamW(gs))
        # the fallback fills its own defaults (betas, eps, ...) into the very group dicts we keep
        self.fallback = fallback(rest) if rest else None
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=int(ns_steps),
                        ns_coefficients=tuple(ns_coefficients), eps=eps, weight_decay=weight_decay)
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
        self._link_fallback()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_group(group)
        if self.fallback is not None:
            self.fallback.step()
        return loss

    def _muon_group(self, group: dict) -> None:
        mu, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
        by_shape: dict[tuple[int, int], list[tuple[Tensor, Tensor]]] = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - mu)
            update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
            shape = matrix_view(p)
            by_shape[shape].append((p, update.reshape(shape)))
        for (rows, cols), items in by_shape.items():
            ortho = self._orthogonalise(torch.stack([u for _, u in items]), group)
            scale = math.sqrt(max(1.0, rows / cols))
            params = [p for p, _ in items]
            updates = ortho.to(params[0].dtype).unbind(0)
            # one foreach kernel per shape instead of two launches per matrix
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_add_(params, [u.view_as(p) for p, u in zip(params, updates)], alpha=-lr * scale)

    @staticmethod
    def _orthogonalise(stack: Tensor, group: dict) -> Tensor:
        steps, coeffs, eps = group["ns_steps"], group["ns_coefficients"], group["eps"]
        rank, world = _world()
        if world == 1:
            return newton_schulz(stack, steps, coeffs, eps)
        n = stack.size(0)
        per_rank = -(-n // world)
        padded = torch.zeros((per_rank * world, *stack.shape[1:]), dtype=stack.dtype, device=stack.device)
        padded[:n] = stack
        mine = newton_schulz(padded[rank * per_rank:(rank + 1) * per_rank], steps, coeffs, eps).contiguous()
        # gloo has no bf16 collectives; NCCL gathers bf16 directly (half the bytes)
        wire = mine if dist.get_backend() == "nccl" else mine.float()
        parts = [torch.empty_like(wire) for _ in range(world)]
        dist.all_gather(parts, wire)
        return torch.cat(parts)[:n].to(mine.dtype)
