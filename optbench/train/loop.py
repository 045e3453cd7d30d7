"""The one training loop. It knows a Task's interface and nothing about CIFAR or GPT.

Per step: lr from the schedule, forward/backward over the micro-batches (AMP, DDP no_sync on all
but the last), optional clipping, the optimizer step (with a closure where the optimizer needs
one). On a fixed cadence: a metrics line, an untimed evaluation, a checkpoint. The train clock
runs only across steps (docs/design.md timing rules). What the run directory holds (config.yaml,
summary.json) is train/rundir.py's; stop signals are train/signals.py's.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from optbench.config import amp_mode, clock_includes
from optbench.errors import ConfigError
from optbench.optim import build_optimizer_from_config
from optbench.optim.groups import GroupCourse, group_name
from optbench.schedules import build_momentum_schedule, build_schedule_from_config, lr_scale
from optbench.tasks import Task, build_task
from optbench.train import budget, rundir
from optbench.train import checkpoint as ckpt
from optbench.train.averaging import evaluation_model
from optbench.train.cadence import Cadence
from optbench.train.clock import TrainClock
from optbench.train.distributed import (
    DistInfo,
    all_reduce_sum,
    broadcast_flag,
    init_process_group,
    select_device,
    sync_buffers,
)
from optbench.train.memory import free_previous_job, reset_peak_memory
from optbench.train.signals import StopSignals
from optbench.train.sinks import ProgressBar, build_sinks


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # all devices
    set_deterministic(deterministic)


def set_deterministic(deterministic: bool) -> None:
    """Both ways: a multirun's jobs share the process, and one job's choice must not leak into the
    next. torch.use_deterministic_algorithms imports dynamo/inductor (~1 s of every start), so it
    is called only to turn the mode on, or off again after a job turned it on (the process's own
    state says which)."""
    if deterministic or torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic


def set_optimizer_mode(optimizer, mode: str) -> None:
    """Schedule-Free optimizers evaluate at a different point than they train at."""
    switch = getattr(optimizer, mode, None)
    if callable(switch) and hasattr(optimizer, "train") and hasattr(optimizer, "eval"):
        switch()


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, dist: DistInfo | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.t = cfg.trainer
        self.cadence = Cadence.of(self.t)  # the per-step knobs as plain numbers
        self.dist = dist or DistInfo.from_env()
        self.device = select_device(self.t.device, self.dist.local_rank)
        init_process_group(self.dist, self.device)
        free_previous_job(self.device, self.t.compile)
        reset_peak_memory(self.device)
        seed_everything(cfg.seed, self.t.deterministic)

        self.task: Task = build_task(cfg, self.device, self.dist.rank, self.dist.world_size)
        if self.t.get("init_from"):  # after any data-dependent init (which it overrides), before the optimizer
            from optbench.models import init_from

            init_from(self.task.model, self.t.init_from)
        self.model = self.task.model.to(self.device)
        self.optimizer = build_optimizer_from_config(cfg.optimizer, self.model)
        # batch-size scaling (optimizer.lr_scaling): base_lr is the lr this run really uses
        self.lr_scale = lr_scale(cfg.optimizer, self.t.batch_size)
        for g in self.optimizer.param_groups:
            g["lr"] *= self.lr_scale
            g.setdefault("base_lr", g["lr"])
        self.schedule = build_schedule_from_config(cfg.scheduler, self.t.max_steps)
        # groups with their own lr schedule or a freeze step (airbench's whitening bias)
        self.group_course = GroupCourse.of(self.optimizer, self.t.max_steps)
        self.clock_includes = clock_includes(self.t)
        self.momentum_schedule = build_momentum_schedule(
            cfg.optimizer.get("momentum_schedule"), self.optimizer, f"optimizer={cfg.optimizer.name}"
        )
        self.needs_closure = getattr(getattr(self.optimizer, "optbench_spec", None), "needs_closure", False)

        self.amp = amp_mode(self.t.amp)
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        # a partial, not a lambda over self: a cycle would keep this Trainer (model, optimizer state,
        # on-device data) alive into the next job of a multirun
        self.autocast = (
            functools.partial(torch.autocast, self.device.type, dtype=amp_dtype)
            if amp_dtype
            else contextlib.nullcontext
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        # MFU needs the device's peak FLOP/s (trainer.peak_flops, else a table of known GPUs)
        from optbench.train.mfu import peak_flops

        self.peak_flops = peak_flops(self.t.get("peak_flops"), self.device)

        self.train_model = self.model
        if self.dist.enabled:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.t.compile:
            self.train_model = torch.compile(self.train_model)

        from optbench.train.averaging import build_averager

        self.averager = build_averager(self.t.averaging, self.model, self.t.max_steps)

        # run state (everything a checkpoint must restore)
        self.step = 0
        self.clock = TrainClock(self.device)
        self.best: float | None = None
        self.best_step: int | None = None
        self.last_eval: dict | None = None
        self.target_step: int | None = None
        self.target_time: float | None = None
        self.initial_loss: float | None = None
        self.compile_warmup_s = 0.0
        # trainer.extend: each resume under a longer max_steps (checkpointed: survives later resumes)
        self.extensions: list[dict] = []
        # the train loss summed since the last metrics line (checkpointed: a resumed run logs the same)
        self.loss_sum = torch.zeros((), device=self.device)
        self.steps_since_log = 0
        self.status = "running"
        self.stop_reason: str | None = None
        self.signals = StopSignals()
        self.is_main = self.dist.is_main

    # ------------------------------------------------------------------ pieces of a step
    def set_lr(self, step: int) -> float:
        mult = self.schedule(step)
        course = self.group_course
        for i, g in enumerate(self.optimizer.param_groups):
            g["lr"] = g["base_lr"] * (mult if course is None else course.multiplier(i, step, mult))
        if self.momentum_schedule is not None:
            self.momentum_schedule.apply(self.optimizer, step)
        return mult

    def _forward_backward(self, micro_batches) -> torch.Tensor:
        """This rank's per-example mean loss over the micro-batches; gradients accumulated for the
        whole step: of the global batch's mean loss (task.loss_reduction=mean), or of its sum over
        every example of every micro-batch and rank (sum: task.loss returns micro-batch sums, and
        DDP's average over the ranks is undone by scaling each rank's loss by the world size)."""
        total = None  # no zero tensor to allocate and add to on every step
        n = len(micro_batches)
        summed = self.task.loss_reduction == "sum"
        world = self.dist.world_size
        for i, batch in enumerate(micro_batches):
            sync = self.dist.enabled and i < n - 1
            ctx = (
                self.train_model.no_sync()
                if sync and hasattr(self.train_model, "no_sync")
                else contextlib.nullcontext()
            )
            with ctx:
                with self.autocast():
                    loss = self.task.loss(self.train_model, batch)
                    if not summed:
                        loss = loss / n
                self.scaler.scale(loss * world if summed and world > 1 else loss).backward()
            total = loss.detach() if total is None else total + loss.detach()
        if summed:  # the logged train loss stays a per-example mean
            total = total / (self.task.examples_per_step / world)
        return total

    def train_step(self, micro_batches, want_grad_norm: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        grad_norm = None
        if self.needs_closure:

            def closure():
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._forward_backward(micro_batches)
                if self.group_course is not None:
                    self.group_course.drop_frozen_grads(self.step)
                return loss

            loss = self.optimizer.step(closure)
        else:
            loss = self._forward_backward(micro_batches)
            if self.group_course is not None:  # frozen groups: no gradient, so no update at all
                self.group_course.drop_frozen_grads(self.step)
            if self.t.grad_clip > 0:  # clipping is training: on the clock; the norm stays on the device
                self.scaler.unscale_(self.optimizer)
                params = [p for p in self.model.parameters() if p.grad is not None]
                grad_norm = torch.nn.utils.clip_grad_norm_(params, self.t.grad_clip)
            elif want_grad_norm:
                self.scaler.unscale_(self.optimizer)  # the step would unscale anyway
                with self.clock.paused():  # a measurement for the log: off the train clock
                    grad_norm = self.measure_grad_norm()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.averager is not None:
            self.averager.update(self.step + 1)
        return loss, grad_norm

    def measure_grad_norm(self) -> torch.Tensor:
        """The total gradient norm (a device tensor), without clipping anything."""
        return torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        # untimed, except the last evaluation where trainer.clock_includes has final_eval (airbench)
        timed = "final_eval" in self.clock_includes and self.step >= self.t.max_steps
        with contextlib.nullcontext() if timed else self.clock.paused():
            sync_buffers(self.model)  # ranks split the eval set: all must score rank 0's model
            set_optimizer_mode(self.optimizer, "eval")
            # averaged weights (EMA/SWA) or, for Schedule-Free, BN re-measured at the eval point
            eval_model = evaluation_model(self.model, self.optimizer, self.averager, self.task)
            if eval_model is not self.model:  # averaged / re-measured BN statistics are per rank too
                sync_buffers(eval_model)
            eval_model.eval()
            with torch.no_grad(), self.autocast():
                metrics = self.task.evaluate(eval_model)
            self.model.train()
            set_optimizer_mode(self.optimizer, "train")
        value = metrics[self.task.metric]
        if self.task.better(value, self.best):
            self.best, self.best_step = value, self.step
        if self.target_step is None and self.task.reached(value):
            self.target_step, self.target_time = self.step, self.clock.read()
        self.last_eval = metrics
        if hasattr(self.schedule, "observe"):  # metric-driven schedules (plateau)
            key = self.cfg.scheduler.get("metric") or self.task.metric
            if key not in metrics:
                raise ConfigError(
                    f"scheduler.metric={key!r} is not among this task's evaluation metrics; "
                    f"valid choices: {', '.join(sorted(metrics))}"
                )
            self.schedule.observe(metrics[key])
        return metrics

    # ------------------------------------------------------------------ bookkeeping
    def lr_by_role(self) -> dict:
        return {group_name(g, i): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}

    def progress_record(self, kind: str) -> dict:
        tokens = self.task.tokens_per_step
        return {
            "type": kind,
            "step": self.step,
            "samples": self.step * self.task.samples_per_step,
            **({"tokens": self.step * tokens} if tokens else {}),
            "time_s": round(self.clock.read(), 6),
        }

    def compile_warmup(self, micro_batches) -> None:
        """Compile outside the clock: a forward/backward whose effects (grads, BN stats) are undone."""
        if not self.t.compile:
            return
        import time

        buffers = {k: v.clone() for k, v in self.model.state_dict().items()}
        start = time.perf_counter()
        self._forward_backward(micro_batches)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.load_state_dict(buffers)
        self.compile_warmup_s = time.perf_counter() - start

    def checkpoint(self) -> None:
        """Untimed; Schedule-Free optimizers are saved at their evaluation point x, so the weights in a
        checkpoint are the ones that were (or would be) evaluated, and go back to y after."""
        with self.clock.paused():
            set_optimizer_mode(self.optimizer, "eval")
            ckpt.save(self)
            set_optimizer_mode(self.optimizer, "train")

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        cfg, t = self.cfg, self.t
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = ckpt.maybe_resume(self)
        if self.finished():
            # the same command again on a finished run: report it, change nothing (no retraining past a
            # stop-at-target point, no summary rewritten with this process's memory and clock)
            if self.is_main:
                self.repair_summary()
                print(f"optbench: {self.run_dir} already {self.status} at step {self.step}; nothing to do", flush=True)
            return json.loads((self.run_dir / "summary.json").read_text())
        if resumed is not None and self.is_main:
            print(f"optbench: resumed from step {self.step} ({resumed})", file=sys.stderr, flush=True)
        self.status, self.stop_reason = "running", None  # an interrupted run goes on
        set_optimizer_mode(self.optimizer, "train")  # Schedule-Free: train at y (a checkpoint holds x)
        if self.is_main:
            self.write_config()
            # a resumed run keeps the lines up to its checkpoint; a fresh one starts a new file
            ckpt.truncate_metrics(self.run_dir, self.step)
            self.sinks = build_sinks(cfg, self.run_dir)
        else:
            self.sinks = []
        self.write_summary()
        unit = "tok" if self.task.tokens_per_step else "img"
        bar = ProgressBar(
            t.max_steps,
            self.step,
            self.is_main and t.progress,
            desc=f"{cfg.task.name} {cfg.optimizer.name} seed={cfg.seed}",
        )
        self.signals.install()  # a stop signal is acted on at the end of the step it arrives in
        last_log_time = self.clock.read()
        try:
            first = next(self.task.train_batches)
            self.compile_warmup(first)
            pending = first
            if self.step == 0 and self.eval_due(0):  # the initial weights' score (trainer.eval_at_start)
                self.log({**self.progress_record("eval"), **self.evaluate()})
            self.model.train()
            if self.step == 0 and "data_init" in self.clock_includes:
                # the data-dependent init (airbench's whitening) ran while the task was built
                self.clock.elapsed += float(self.task.summary_extra.get("data_init_s", 0.0))
            self.clock.start()
            # The ways a run stops, all decided in this loop, each setting status and stop_reason:
            # max_steps (the loop's condition: completed, below), divergence (on log steps), the
            # target (on eval steps, trainer.stop_at_target), a stop signal (at the end of a step);
            # an exception (the except clause). summary.json reports them (rundir.build_summary).
            cadence = self.cadence
            while self.step < cadence.max_steps:
                micro_batches = pending if pending is not None else next(self.task.train_batches)
                pending = None
                self.set_lr(self.step)
                log_now = cadence.log_due(self.step)
                # the grad norm is only for the log: not measured where nothing logs it (logger=none, other ranks)
                loss, grad_norm = self.train_step(micro_batches, want_grad_norm=log_now and bool(self.sinks))
                self.step += 1
                self.loss_sum += loss
                self.steps_since_log += 1
                bar.update()
                if log_now:
                    loss_value = all_reduce_sum(self.loss_sum.item(), self.device) / (
                        self.steps_since_log * self.dist.world_size
                    )
                    now = self.clock.read()
                    throughput = self.steps_since_log * self.task.samples_per_step / max(now - last_log_time, 1e-9)
                    if self.task.tokens_per_step:
                        throughput *= self.task.tokens_per_step / self.task.samples_per_step
                    record = {
                        **self.progress_record("train"),
                        "loss": loss_value,
                        "lr": self.lr_by_role(),
                        f"{unit}_per_s": throughput,
                    }
                    if self.task.tokens_per_step and self.task.flops_per_token and self.peak_flops:
                        record["mfu"] = self.mfu(throughput)
                    if grad_norm is not None:
                        record["grad_norm"] = float(grad_norm)
                    self.log(record)
                    bar.show(loss_value, self.optimizer.param_groups[0]["lr"], throughput, unit)
                    if self.initial_loss is None:
                        self.initial_loss = loss_value
                    self.loss_sum.zero_()
                    self.steps_since_log, last_log_time = 0, now
                    if self.diverged(loss_value):
                        break
                if cadence.eval_due(self.step):
                    metrics = self.evaluate()
                    self.log({**self.progress_record("eval"), **metrics})
                    if cadence.stop_at_target and self.target_step is not None:
                        self.stop_reason = "target reached"
                        break
                if cadence.checkpoint_due(self.step):
                    self.checkpoint()
                if budget.out_of_time(self):  # trainer.max_time_s (train/budget.py)
                    break
                # under DDP agreeing on a stop is a collective (a device sync): only on log steps
                if (log_now or not self.dist.enabled) and broadcast_flag(
                    self.signals.received is not None, self.device
                ):
                    self.status = "interrupted"
                    self.stop_reason = f"signal {self.signals.name()}"
                    self.checkpoint()
                    break
            self.clock.stop()
            if self.status == "running":  # every way out of the loop but these set a status
                self.status = "completed"
            if self.status == "completed" and broadcast_flag(  # one decision for all ranks: save is collective
                bool(t.get("save_final", False) or t.checkpoint_every or ckpt.checkpoint_path(self.run_dir).exists()),
                self.device,
            ):
                # the same command run again finds the run finished instead of redoing its tail
                self.checkpoint()
        except BaseException as e:
            self.clock.stop()
            if self.status == "running":
                self.status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                self.stop_reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
            raise
        finally:
            self.signals.restore()
            bar.close()
            summary = self.write_summary()
            for sink in self.sinks:
                sink.summary(summary)
                sink.close()
        if self.status == "interrupted" and self.signals.received is not None:
            self.signals.pass_on()
        return summary

    def eval_due(self, step: int) -> bool:
        return self.cadence.eval_due(step)

    def repair_summary(self) -> None:
        """A finished run's summary.json torn or overwritten afterwards (invalid JSON or UTF-8): the
        final checkpoint holds the run, so write the summary again from it rather than fail."""
        path = self.run_dir / "summary.json"
        try:
            json.loads(path.read_text())
            return
        except (ValueError, OSError):
            pass
        print(
            f"optbench: warning: {path} is unreadable; rewritten from the final checkpoint (step {self.step})",
            file=sys.stderr,
            flush=True,
        )
        self.write_summary()

    def finished(self) -> bool:
        """Resumed from the final checkpoint of a run that has nothing left to do."""
        if self.status != "completed" or not (self.run_dir / "summary.json").exists():
            return False
        return (
            self.step >= self.t.max_steps
            or bool(self.t.stop_at_target and self.target_step is not None)
            or budget.time_spent(self.clock.read(), self.t.get("max_time_s"))
        )

    def diverged(self, loss: float) -> bool:
        factor = self.t.divergence_factor
        bad = not math.isfinite(loss) or bool(factor and self.initial_loss and loss > factor * self.initial_loss)
        if bad:
            self.status = "diverged"
            self.stop_reason = f"loss {loss:.4g} at step {self.step}" + (
                "" if not math.isfinite(loss) else f" > {factor} x initial loss {self.initial_loss:.4g}"
            )
        return bad

    def log(self, record: dict) -> None:
        for sink in self.sinks:
            sink.log(record)

    # ------------------------------------------------------------------ files (train/rundir.py)
    def write_config(self) -> None:
        rundir.write_config(
            self.run_dir,
            self.cfg,
            {
                "world_size": self.dist.world_size,
                "micro_batch_size": self.t.batch_size // (self.t.grad_accum * self.dist.world_size),
                "lr_scale": self.lr_scale,
                "lr_by_role": rundir.base_lr_by_role(self.optimizer),
            },
            self.device,
            self.dist.world_size,
            self.extensions,
        )

    def run_state(self) -> rundir.RunState:
        return rundir.RunState(
            status=self.status,
            stop_reason=self.stop_reason,
            steps=self.step,
            train_time_s=self.clock.read(),
            compile_warmup_s=self.compile_warmup_s,
            best=self.best,
            best_step=self.best_step,
            last_eval=self.last_eval,
            target_step=self.target_step,
            target_time=self.target_time,
            extensions=self.extensions,
            lr_scale=self.lr_scale,
            clock_includes=tuple(self.clock_includes),
            peak_flops=self.peak_flops,
            git_diff=rundir.GIT_DIFF if (self.run_dir / rundir.GIT_DIFF).is_file() else None,
        )

    def summary(self) -> dict:
        return rundir.build_summary(
            self.cfg, self.task, self.model, self.optimizer, self.device, self.dist.world_size, self.run_state()
        )

    def mfu(self, tokens_per_s: float) -> float | None:
        """Model FLOPs utilisation over all ranks (train/mfu.py); None without a known peak."""
        from optbench.train.mfu import mfu

        return mfu(tokens_per_s, self.task.flops_per_token, self.peak_flops, self.dist.world_size)

    def write_summary(self) -> dict:
        summary = self.summary()
        if self.is_main:
            rundir.write_json(self.run_dir / "summary.json", summary)
        return summary


def train(cfg: DictConfig, run_dir: str | Path, dist: DistInfo | None = None) -> dict:
    """Train one run into `run_dir`, holding its lock; returns the summary (also written to
    summary.json, a `failed` one when the run fails before the loop writes its own)."""
    from optbench.train import runlock

    run_dir, dist = Path(run_dir), dist or DistInfo.from_env()
    # rank 0 only (run_job has already made every rank agree on it under DDP: this re-enters)
    with runlock.hold(run_dir) if dist.is_main else contextlib.nullcontext():
        try:
            return Trainer(cfg, run_dir, dist).run()
        except Exception as e:
            if dist.is_main:
                rundir.write_failed_summary(run_dir, cfg, e)
            raise
