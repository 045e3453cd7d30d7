"""Stop signals: the run checkpoints at the end of the step it is in, then stops.

SIGTERM (preemption, scancel, torchrun stopping), SIGUSR1 (SLURM's --signal warning) and SIGUSR2
(submitit's default preemption signal). The handler only records the signal: the loop acts on it
at a step boundary, where the state is whole. After the checkpoint the handler we replaced gets
its turn (submitit's requeues the job).
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class StopSignals:
    def __init__(self) -> None:
        self.received: int | None = None  # the last stop signal that arrived
        self.previous: dict = {}  # signal -> the handler install() replaced

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def install(self) -> None:
        self.previous = {}
        for sig in STOP_SIGNALS:
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def name(self) -> str:
        return signal.Signals(self.received or signal.SIGTERM).name

    def pass_on(self) -> None:
        """After our checkpoint: let the handler we replaced act on the signal we received."""
        handler = self.previous.get(self.received)
        if callable(handler) and handler != self._handle:
            handler(self.received, None)
