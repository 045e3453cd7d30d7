"""Models by name: `model.name` in the config picks the builder, other keys are its arguments."""
from __future__ import annotations

from typing import Callable

from torch import nn

from optbench.errors import ConfigError, choices


def _small_cnn(**kw) -> nn.Module:
    from optbench.models.cnn import SmallCNN
    return SmallCNN(**kw)


def _airbench(**kw) -> nn.Module:
    from optbench.models.cnn import AirbenchNet
    return AirbenchNet(**kw)


def _resnet18(**kw) -> nn.Module:
    from optbench.models.cnn import ResNet18
    return ResNet18(**kw)


def _gpt(**kw) -> nn.Module:
    from optbench.models.gpt import GPT
    return GPT(**kw)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn_small": _small_cnn,
    "airbench": _airbench,
    "resnet18": _resnet18,
    "gpt": _gpt,
}


def build_model(cfg: dict) -> nn.Module:
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; valid choices: {choices(MODELS)}")
    return MODELS[name](**cfg)
