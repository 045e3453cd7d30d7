"""Weight averaging usable with any optimizer: EMA and SWA (Izmailov et al. 2018), and
airbench94's Lookahead-EMA.

EMA and SWA are built on torch.optim.swa_utils. Evaluation uses the averaged weights; for SWA the BatchNorm
statistics are recomputed on training batches, since averaged weights invalidate them. The same
recomputation serves Schedule-Free optimizers, whose evaluation point x is not where BN measured.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

BN_RECOMPUTE_BATCHES = 50
BN_RECOMPUTE_SEED = 10_000  # a data stream of its own, the same at every evaluation


class WarmupEMA:
    """EMA whose decay ramps up as min(decay, (1+t)/(10+t)) over its first updates (as in TF's
    ExponentialMovingAverage with num_updates, and timm): with a fixed 0.999 a short run's average
    would still be mostly its initial weights. Counts updates itself: no device sync per step."""

    def __init__(self, decay: float):
        self.decay, self.count = decay, 0

    def current(self) -> float:
        return min(self.decay, (1 + self.count) / (10 + self.count))

    def next_decay(self) -> float:
        """The decay of the next averaging update (after the first, which copies)."""
        self.count += 1
        return self.current()


class Averager:
    """The averaged copy lives in a torch.optim.swa_utils.AveragedModel (its state_dict layout,
    n_averaged included), but the update is ours: AveragedModel.update_parameters reads its
    n_averaged device counter on the host twice per call (a device sync every step on a GPU).
    Here the count is a Python int, and the arithmetic is the same as torch's EMA / SWA
    functions (foreach lerp by 1 - decay or 1/(n+1); integer buffers as decay x a + (1-decay) x b),
    so the averages are bit-identical to AveragedModel's."""

    def __init__(
        self, model: nn.Module, kind: str, ema_decay: float, start_step: int, every: int, ema_warmup: bool = False
    ):
        self.kind, self.start_step, self.every = kind, start_step, max(1, every)
        self.ema_decay = ema_decay
        self.warmup = WarmupEMA(ema_decay) if kind == "ema" and ema_warmup else None
        self.averaged = AveragedModel(model, use_buffers=(kind == "ema"))
        self.model = model
        self.updates = 0
        self._bn_measured_at = -1

    @property
    def active(self) -> bool:
        return self.updates > 0

    def update(self, step: int) -> None:
        if step >= self.start_step and (step - self.start_step) % self.every == 0:
            self._average()
            self.updates += 1

    @torch.no_grad()
    def _average(self) -> None:
        avg, use_buffers = self.averaged, self.kind == "ema"
        mine = list(avg.module.parameters()) + (list(avg.module.buffers()) if use_buffers else [])
        theirs = [
            t.detach() for t in itertools.chain(self.model.parameters(), self.model.buffers() if use_buffers else ())
        ]
        if self.updates == 0:  # the first update copies the weights
            for a, b in zip(mine, theirs, strict=True):
                a.copy_(b)
        else:
            if self.kind == "ema":
                decay = self.warmup.next_decay() if self.warmup is not None else self.ema_decay
                weight = 1 - decay
            else:
                decay, weight = None, 1 / (self.updates + 1)  # the running mean of updates + 1 snapshots
            floats = [(a, b) for a, b in zip(mine, theirs, strict=True) if a.is_floating_point() or a.is_complex()]
            if floats:
                torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], weight)
            for a, b in zip(mine, theirs, strict=True):
                if not (a.is_floating_point() or a.is_complex()):
                    # EMA: BN's num_batches_tracked, as torch does; SWA: an integer has no mean, it follows
                    a.copy_(a * decay + b * (1 - decay) if decay is not None else b)
        if not use_buffers:  # SWA keeps the buffers in step with the model (BN is re-measured for eval)
            for a, b in zip(avg.module.buffers(), self.model.buffers(), strict=True):
                a.copy_(b.detach())
        avg.n_averaged.add_(1)  # kept for the state_dict layout; never read on the host

    def prepare_eval(self, task) -> nn.Module:
        module = self.averaged.module
        # SWA averages weights only: the BN statistics of the average must be measured afresh,
        # once per new average (EMA averages the BN buffers along with the weights)
        if self.kind == "swa" and self._bn_measured_at != self.updates and can_recompute_bn(module, task):
            recompute_bn(module, task)
            self._bn_measured_at = self.updates
        return module

    def state_dict(self) -> dict:
        return {"averaged": self.averaged.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.updates = int(state["updates"])
        self._bn_measured_at = -1
        if self.warmup is not None:  # the first update copies the weights; the rest average
            self.warmup.count = max(0, self.updates - 1)


class Lookahead:
    """airbench94's Lookahead-EMA (legacy/airbench94.py LookaheadState; Zhang et al. 2019's
    lookahead with an EMA as the slow weights): after every `every`-th step t the slow copy moves
    toward the live weights, slow <- lerp(slow, live, 1 - decay_t), and the live weights are reset
    to it. decay_t = decay x (t / T)^power, computed in float32 as the script does (its alpha
    schedule tensor); after the last step (t = T) one more update with decay 1 makes the final
    weights the slow copy. The copy covers every floating-point entry of the state_dict, BatchNorm
    running statistics included, and starts from the weights the run starts with (the script
    snapshots before its whitening init, which only moves the frozen whitening filters by
    ~1e-6 relative at step 5, below their fp16 resolution there).

    Unlike EMA/SWA it changes the trained weights themselves: evaluation uses the live model."""

    kind = "lookahead"
    active = False  # evaluation_model: the live weights are the ones to evaluate

    def __init__(
        self,
        model: nn.Module,
        total_steps: int,
        every: int = 5,
        decay: float = 0.95**5,
        power: float = 3.0,
        final: bool = True,
    ):
        self.model, self.total_steps, self.every, self.final = model, int(total_steps), int(every), bool(final)
        t = torch.arange(self.total_steps + 1)
        self.decays = decay * (t / self.total_steps) ** power  # float32, as the script's alpha_schedule
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        self.updates = 0

    def decay_at(self, step: int) -> float:
        return self.decays[step].item()

    @torch.no_grad()
    def _move(self, decay: float) -> None:
        live = self.model.state_dict()
        for k, slow in self.slow.items():
            slow.lerp_(live[k], 1 - decay)
            live[k].copy_(slow)
        self.updates += 1

    def update(self, step: int) -> None:
        """Called after optimizer step number `step` (1-based)."""
        if step % self.every == 0 and step <= self.total_steps:
            self._move(self.decay_at(step))
        if self.final and step == self.total_steps:
            self._move(1.0)

    def prepare_eval(self, task) -> nn.Module:
        return self.model

    def state_dict(self) -> dict:
        return {"slow": self.slow, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state["slow"].items():
            self.slow[k].copy_(v)
        self.updates = int(state["updates"])


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def can_recompute_bn(module: nn.Module, task) -> bool:
    return has_batchnorm(module) and getattr(task, "make_train_batches", None) is not None


@torch.no_grad()
def recompute_bn(module: nn.Module, task, batches: int = BN_RECOMPUTE_BATCHES) -> None:
    """Exact (cumulative) BN statistics over a fixed stream of training batches, as
    swa_utils.update_bn does; the stream is separate from the run's, so training data is untouched."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = module.training
    module.train()
    for micro_batches in itertools.islice(task.make_train_batches(BN_RECOMPUTE_SEED), batches):
        for x, _ in micro_batches:
            module(x)
    for m in bns:
        m.momentum = momenta[m]
    module.train(was_training)


def evaluates_elsewhere(optimizer) -> bool:
    """Schedule-Free optimizers train at y and evaluate at x; their eval() moves the weights."""
    return callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))


def evaluation_model(model: nn.Module, optimizer, averager: Averager | None, task) -> nn.Module:
    """The module an evaluation must run: the averaged weights when averaging is on; otherwise the
    live model, with its BN statistics re-measured when a Schedule-Free optimizer (already in eval
    mode) has moved the weights to x -- the running statistics were gathered at y (schedulefree
    README, "Caveats")."""
    if averager is not None and averager.active:
        return averager.prepare_eval(task)
    if evaluates_elsewhere(optimizer) and can_recompute_bn(model, task):
        recompute_bn(model, task)
    return model


def build_averager(cfg, model: nn.Module, max_steps: int) -> Averager | Lookahead | None:
    if cfg.kind == "none":
        return None
    if cfg.kind == "lookahead":
        return Lookahead(
            model,
            max_steps,
            every=cfg.get("lookahead_every", 5),
            decay=cfg.get("lookahead_decay", 0.95**5),
            power=cfg.get("lookahead_power", 3.0),
            final=bool(cfg.get("lookahead_final", True)),
        )
    start = 0 if cfg.kind == "ema" else int(cfg.swa_start * max_steps)
    return Averager(
        model, cfg.kind, cfg.ema_decay, start, cfg.get("swa_every", 1), ema_warmup=bool(cfg.get("ema_warmup", False))
    )
