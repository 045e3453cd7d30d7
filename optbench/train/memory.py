"""What a run costs in memory, measured per run: the jobs of a multirun share one process, so each
job frees what the previous one left and restarts the peak before it measures its own."""

from __future__ import annotations

import gc
import resource

import torch


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    def size(v) -> int:
        if torch.is_tensor(v):
            return v.numel() * v.element_size()
        if isinstance(v, dict):
            return sum(size(x) for x in v.values())
        if isinstance(v, (list, tuple)):
            return sum(size(x) for x in v)
        return 0

    local = getattr(optimizer, "state_bytes", None)
    return int(local() if callable(local) else size(optimizer.state_dict().get("state", {})))


def free_previous_job(device: torch.device, compile: bool) -> None:
    """A multirun runs its jobs in one process: drop what the previous job left (unreachable objects,
    cached CUDA blocks, compiled graphs) so this job's memory and compile time are its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if compile:
        torch._dynamo.reset()


def reset_peak_memory(device: torch.device) -> None:
    """Start this run's peak from now: the jobs of a multirun share one process."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM) to its current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    try:
        with open("/proc/self/status") as f:
            hwm = next(line for line in f if line.startswith("VmHWM:"))
        return int(hwm.split()[1]) * 1024, "cpu_peak_rss"
    except (OSError, StopIteration):  # not Linux: lifetime peak of the process
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_max_rss"
