"""Process-group set-up from torchrun's environment: NCCL on GPUs, gloo on CPU.

torchrun (single or multi-node) sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT. A SLURM job
started by the submitit launcher with several tasks has only SLURM_* variables: submitit's own
helper translates them into the same torchrun-style environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @staticmethod
    def from_env() -> DistInfo:
        if (
            "RANK" not in os.environ
            and int(os.environ.get("SLURM_NTASKS", 1)) > 1
            and "SUBMITIT_EXECUTOR" in os.environ
        ):
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return DistInfo(
            int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        )


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    torch.cuda.set_device(device)
    return device


def init_process_group(info: DistInfo, device: torch.device) -> None:
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            rank=info.rank,
            world_size=info.world_size,
            device_id=device if device.type == "cuda" else None,
        )


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: float, device: torch.device) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if any rank says True (stop requests, divergence)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every rank (e.g. the run directory, which Hydra's ${now:...} may
    name differently on each rank)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def sync_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics are updated from each rank's
    own micro-batch), so that evaluation, split across ranks, scores one and the same model."""
    if not dist.is_initialized():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)
