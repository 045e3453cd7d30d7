"""Cautious AdamW (C-AdamW; Liang, Chen, Liu & Liu 2024, "Cautious Optimizers: Improving Training
with One Line of Code", arXiv:2411.16085, Algorithm 1).

AdamW, except that the update's coordinates whose sign disagrees with the current gradient are
zeroed and the rest rescaled so that the mask keeps the update's average size:
    u = m_hat / (sqrt(v_hat) + eps);  phi = 1[u * g > 0];  u <- u * phi * n / (nnz(phi) + 1)
per tensor, with decoupled weight decay x <- x (1 - lr wd) as AdamW. The n / (nnz + 1) rescale is
the one pytorch-optimizer uses for its cautious variants (Lion, ADOPT, ...), so C-AdamW and C-Lion
here mask alike. Our own code only because no installed library has a cautious AdamW.
"""

from __future__ import annotations

import math

import torch

from optbench.optim._common import closure_loss, moment_step


class CautiousAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                t = moment_step(state, p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - lr * wd)
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
                update = (m / (1 - beta1**t)).div_(denom)
                mask = (update * g > 0).to(g.dtype)
                update.mul_(mask * (mask.numel() / (mask.sum() + 1)))
                p.add_(update, alpha=-lr)
        return loss
