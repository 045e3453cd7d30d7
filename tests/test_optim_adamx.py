"""AdamX (our own code) against a direct transcription of Algorithm 2 of Phuong & Phong (2019)."""

from __future__ import annotations

import math

import pytest
import torch

from optbench.optim.adamx import AdamX


def paper_adamx(x0, grads, lr, beta1, beta2, lam, eps, wd):
    """Element-wise, in float64, one coordinate list at a time: the paper's loop as written."""
    x = [float(v) for v in x0]
    m = [0.0] * len(x)
    v = [0.0] * len(x)
    vhat = [0.0] * len(x)
    for t, g in enumerate(grads, start=1):
        b1_t = beta1 * lam ** (t - 1)
        b1_prev = beta1 * lam ** (t - 2)
        for i, gi in enumerate(g):
            m[i] = b1_t * m[i] + (1 - b1_t) * gi
            v[i] = beta2 * v[i] + (1 - beta2) * gi * gi
            vhat[i] = v[i] if t == 1 else max(((1 - b1_t) / (1 - b1_prev)) ** 2 * vhat[i], v[i])
            x[i] = x[i] * (1 - lr * wd) - lr * m[i] / (math.sqrt(vhat[i]) + eps)
    return x


@pytest.mark.parametrize("lam, wd", [(0.999, 0.0), (0.5, 0.1), (1.0, 0.0)])
def test_steps_match_the_paper(lam, wd):
    torch.manual_seed(0)
    x0 = torch.randn(50, dtype=torch.float64)
    # gradients that shrink: the rescaled max then matters, v_t alone would not be the answer
    grads = [torch.randn(50, dtype=torch.float64) * (0.7**t) for t in range(8)]
    p = torch.nn.Parameter(x0.clone())
    opt = AdamX([p], lr=0.01, betas=(0.9, 0.999), beta1_decay=lam, eps=1e-8, weight_decay=wd)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    expected = paper_adamx(x0.tolist(), [g.tolist() for g in grads], 0.01, 0.9, 0.999, lam, 1e-8, wd)
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    assert (p.detach() - x0).abs().max() > 1e-3


def test_without_beta1_decay_it_is_amsgrad_without_bias_correction():
    """lambda = 1 makes the rescaling factor 1: vhat is AMSGrad's running max (torch.optim.Adam)."""
    torch.manual_seed(1)
    x0 = torch.randn(20)
    grads = [torch.randn(20) * (0.5**t) for t in range(6)]
    p = torch.nn.Parameter(x0.clone())
    opt = AdamX([p], lr=0.01, beta1_decay=1.0)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    vmax = opt.state[p]["max_exp_avg_sq"]
    v = torch.zeros(20)
    running = torch.zeros(20)
    for g in grads:
        v = 0.999 * v + 0.001 * g * g
        running = torch.maximum(running, v)
    torch.testing.assert_close(vmax, running)
