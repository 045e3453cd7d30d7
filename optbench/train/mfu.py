"""Model FLOPs utilisation: achieved model FLOPs per second over the hardware's peak.

MFU = tokens/s x task.flops_per_token / (peak FLOP/s per device x world size). The peak is
`trainer.peak_flops` when set, else looked up from the device name below (dense bf16 tensor-core
peaks from the vendors' datasheets, no sparsity); on a CPU or an unknown GPU there is no MFU.
"""

from __future__ import annotations

import torch

from optbench.errors import ConfigError

# substring of torch.cuda.get_device_name() -> dense bf16 FLOP/s; more specific names first
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("RTX 4090", 165e12),
)


def peak_flops(configured, device: torch.device) -> float | None:
    """Peak FLOP/s of one device: the configured value, else the table, else None."""
    if configured is not None:
        value = float(configured)
        if value <= 0:
            raise ConfigError(
                f"trainer.peak_flops={configured!r} is invalid: must be > 0 FLOP/s, or null to look up the device"
            )
        return value
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def mfu(
    tokens_per_s: float | None, flops_per_token: float | None, peak: float | None, world_size: int = 1
) -> float | None:
    if not tokens_per_s or not flops_per_token or not peak:
        return None
    return tokens_per_s * flops_per_token / (peak * world_size)
