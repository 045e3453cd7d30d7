"""task.kind=language_model: FineWeb token shards (real or synthetic) with a GPT, validation loss."""

from __future__ import annotations

from omegaconf import DictConfig

from optbench.tasks import register_task_kind


def language_model(cfg: DictConfig, device, rank: int, world_size: int):
    from optbench.data.fineweb import build_language_model_task

    return build_language_model_task(cfg, device, rank, world_size)


def validate(cfg: DictConfig) -> None:
    from optbench.data.fineweb import validate_language_model_config

    validate_language_model_config(cfg)


register_task_kind(
    "language_model",
    language_model,
    validate=validate,
    models=("gpt", "gpt_track3"),
    description="next-token prediction on FineWeb shards (real or synthetic), validation loss",
)
