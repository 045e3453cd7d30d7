"""The train clock (speedrun rules): counts training steps only; paused for evaluation,
checkpointing and compile warm-up; the device is synchronised before every read."""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainClock:
    def __init__(self, device: torch.device, elapsed: float = 0.0):
        self.device = device
        self.elapsed = elapsed
        self._started: float | None = None

    @property
    def running(self) -> bool:
        return self._started is not None

    def start(self) -> None:
        if self._started is None:
            synchronize(self.device)
            self._started = time.perf_counter()

    def stop(self) -> float:
        if self._started is not None:
            synchronize(self.device)
            self.elapsed += time.perf_counter() - self._started
            self._started = None
        return self.elapsed

    def read(self) -> float:
        if self._started is None:
            return self.elapsed
        synchronize(self.device)
        return self.elapsed + time.perf_counter() - self._started

    class _Paused:
        def __init__(self, clock):
            self.clock, self.was_running = clock, clock.running

        def __enter__(self):
            self.clock.stop()

        def __exit__(self, *exc):
            if self.was_running:
                self.clock.start()

    def paused(self) -> TrainClock._Paused:
        """`with clock.paused():` for evaluation and checkpointing."""
        return TrainClock._Paused(self)
