"""LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76
minutes", ICLR, Algorithm 2), as the paper writes it. Per tensor x (a "layer"), at step t:

    m_t = beta1 m_{t-1} + (1 - beta1) g_t          v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
    r_t = (m_t / (1 - beta1^t)) / (sqrt(v_t / (1 - beta2^t)) + eps)
    u_t = r_t + lambda x_t
    x_{t+1} = x_t - lr * phi(||x_t||) / ||u_t|| * u_t

so every tensor moves by exactly lr * phi(||x||) in norm: the bias correction lives inside r_t
(where it only changes r's size relative to lambda x and eps), and the weight decay lambda x is
inside the ratio. phi is the identity (the authors' released code); where ||x|| or ||u|| is 0
(a zero-initialised tensor) the ratio is 1, as in that code, so such a tensor takes lr * u.

Our own code because pytorch-optimizer's Lamb cannot be configured to this: it has no bias
correction inside r and divides lr by (1 - beta1^t) outside the ratio (10x the step at t=1 for
beta1 0.9), decays weights outside the ratio by default, clamps ||x|| at 10 and adds eps to
||u||. No gradient clipping here: that is the trainer's (trainer.grad_clip).
The ratio is computed on the device (torch.where), without a host sync.
"""

from __future__ import annotations

import torch

from optbench.optim._common import closure_loss, moment_step


class Lamb(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
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
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                u = (v / (1 - beta2**t)).sqrt_().add_(eps)
                torch.div(m, u, out=u).div_(1 - beta1**t)
                if wd:
                    u.add_(p, alpha=wd)
                w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(u)
                ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(u.mul_(ratio), alpha=-lr)
        return loss
