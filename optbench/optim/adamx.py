"""AdamX (Phuong & Phong 2019, "On the Convergence Proof of AMSGrad and a New Version",
arXiv:1904.03590, Algorithm 2): AMSGrad whose running maximum of v is rescaled when beta1 decays.

Our own code: no library (torch.optim, pytorch-optimizer) has it. Per parameter, at step t:

    b1_t   = beta1 * beta1_decay ** (t - 1)                      (Corollary: b1_t = b1 lambda^(t-1))
    m_t    = b1_t m_{t-1} + (1 - b1_t) g_t
    v_t    = beta2 v_{t-1} + (1 - beta2) g_t^2
    vhat_t = v_1 if t == 1 else max(((1 - b1_t) / (1 - b1_{t-1}))^2 vhat_{t-1}, v_t)
    x_t    = x_{t-1} - lr * m_t / (sqrt(vhat_t) + eps)

The paper has no bias correction and no eps (eps only guards a zero denominator here); its
alpha_t = alpha / sqrt(t) is left to the learning-rate schedule. Weight decay is decoupled
(x <- x (1 - lr wd)) so the parameter-group policy means the same as for AdamW.
"""

from __future__ import annotations

import torch

from optbench.optim._common import closure_loss, moment_step


class AdamX(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        beta1_decay: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        if not 0.0 < beta1_decay <= 1.0:
            raise ValueError(f"beta1_decay must be in (0, 1], got {beta1_decay}")
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), beta1_decay=beta1_decay, eps=eps, weight_decay=weight_decay)
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd, decay = group["lr"], group["eps"], group["weight_decay"], group["beta1_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                t = moment_step(state, p, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
                b1_t = beta1 * decay ** (t - 1)
                m, v, vhat = state["exp_avg"], state["exp_avg_sq"], state["max_exp_avg_sq"]
                m.mul_(b1_t).add_(g, alpha=1 - b1_t)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                if t == 1:
                    vhat.copy_(v)
                else:
                    b1_prev = beta1 * decay ** (t - 2)
                    torch.maximum(vhat * ((1 - b1_t) / (1 - b1_prev)) ** 2, v, out=vhat)
                if wd:
                    p.mul_(1 - lr * wd)
                p.addcdiv_(m, vhat.sqrt().add_(eps), value=-lr)
        return loss
