"""Weight averaging usable with any optimizer: EMA and SWA (Izmailov et al. 2018).

Built on torch.optim.swa_utils. Evaluation uses the averaged weights; for SWA the BatchNorm
statistics are recomputed on training batches, since averaged weights invalidate them.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

BN_RECOMPUTE_BATCHES = 50


class Averager:
    def __init__(self, model: nn.Module, kind: str, ema_decay: float, start_step: int, every: int):
        self.kind, self.start_step, self.every = kind, start_step, max(1, every)
        fn = get_ema_multi_avg_fn(ema_decay) if kind == "ema" else None
        self.averaged = AveragedModel(model, multi_avg_fn=fn, use_buffers=(kind == "ema"))
        self.model = model
        self.updates = 0

    @property
    def active(self) -> bool:
        return self.updates > 0

    def update(self, step: int) -> None:
        if step >= self.start_step and (step - self.start_step) % self.every == 0:
            self.averaged.update_parameters(self.model)
            self.updates += 1

    def prepare_eval(self, task) -> nn.Module:
        module = self.averaged.module
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
        if self.kind == "swa" and has_bn and task.make_train_batches is not None:
            self._recompute_bn(module, task)
        return module

    @torch.no_grad()
    def _recompute_bn(self, module: nn.Module, task) -> None:
        """Cumulative BN statistics over a fixed stream of training batches (swa_utils.update_bn)."""
        bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = {m: m.momentum for m in bns}
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        was_training = module.training
        module.train()
        for micro_batches in itertools.islice(task.make_train_batches(10_000), BN_RECOMPUTE_BATCHES):
            for x, _ in micro_batches:
                module(x)
        for m in bns:
            m.momentum = momenta[m]
        module.train(was_training)

    def state_dict(self) -> dict:
        return {"averaged": self.averaged.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.updates = int(state["updates"])


def build_averager(cfg, model: nn.Module, max_steps: int) -> Averager | None:
    if cfg.kind == "none":
        return None
    start = 0 if cfg.kind == "ema" else int(cfg.swa_start * max_steps)
    return Averager(model, cfg.kind, cfg.ema_decay, start, cfg.get("swa_every", 1))
