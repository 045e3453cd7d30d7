"""The bookkeeping every optimizer of our own does the same way (AdamX, LAMB, LARS, Cautious
AdamW, Muon): the closure of `step(closure)` and the per-parameter moment buffers."""

from __future__ import annotations

import torch


def closure_loss(closure):
    """`optimizer.step(closure)`: the closure re-evaluates the model, so it runs with grad enabled
    inside the step's no_grad; None without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def moment_step(state: dict, p: torch.Tensor, buffers=("exp_avg", "exp_avg_sq")) -> int:
    """Zero moment buffers on a parameter's first step (in its memory layout), then the 1-based
    step count t the bias corrections use."""
    if not state:
        state["step"] = 0
        for name in buffers:
            state[name] = torch.zeros_like(p)
    state["step"] += 1
    return state["step"]
