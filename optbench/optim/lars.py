"""LARS (You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks",
arXiv:1708.03888, Algorithm 1), as the paper writes it. Per weight tensor w (a "layer") at step t,
with the global lr gamma_t (optimizer.lr times the schedule), LARS coefficient eta
(trust_coefficient), weight decay beta and momentum m:

    lambda_t = eta ||w_t|| / (||g_t|| + beta ||w_t||)            (the local lr; 1 where a norm is 0)
    v_{t+1}  = m v_t + gamma_t lambda_t (g_t + beta w_t)
    w_{t+1}  = w_t - v_{t+1}

The global lr sits inside the momentum buffer, as in the paper (torch's SGD and pytorch-optimizer's
LARS multiply the buffer by the current lr instead; the two differ once the lr changes).

1-D tensors (biases, norm gains) are excluded from the trust ratio and from weight decay, the
common practice (SimCLR, BYOL, Barlow Twins; the paper's Algorithm 1 does not say): for them
v = m v + gamma g, so their step is plain momentum SGD at their group's lr. The yaml gives those
groups (role `scalar`) an lr of their own (lr_mult), because the global lr of LARS (order 1) is
not a sane lr for a raw gradient step.
"""

from __future__ import annotations

import torch

from optbench.optim._common import closure_loss


class LARS(torch.optim.Optimizer):
    def __init__(
        self, params, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0, trust_coefficient: float = 1e-3
    ):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(
            params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient)
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr, mom, wd, eta = group["lr"], group["momentum"], group["weight_decay"], group["trust_coefficient"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if p.ndim > 1:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    denom = g_norm + wd * w_norm
                    # on the device (no host sync); 1 where a norm is 0, as common implementations do
                    local = torch.where((w_norm > 0) & (denom > 0), eta * w_norm / denom, torch.ones_like(w_norm))
                    d = g.add(p, alpha=wd).mul_(local * lr)
                else:
                    d = g.mul(lr)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d
                else:
                    state["momentum_buffer"].mul_(mom).add_(d)
                p.sub_(state["momentum_buffer"])
        return loss
