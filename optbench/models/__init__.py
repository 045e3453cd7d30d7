"""Models by name: `model.name` in the config picks the builder, other keys are its arguments.
`init_from` starts a model from saved weights (ours, or a reference script's: see translate_state_dict)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
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


def _gpt_track3(**kw) -> nn.Module:
    from optbench.models.gpt_track3 import Track3GPT

    return Track3GPT(**kw)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn_small": _small_cnn,
    "airbench": _airbench,
    "resnet18": _resnet18,
    "gpt": _gpt,
    "gpt_track3": _gpt_track3,
}


def build_model(cfg: dict) -> nn.Module:
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; valid choices: {choices(MODELS)}")
    return MODELS[name](**cfg)


def init_from(model: nn.Module, state_dict_or_path) -> nn.Module:
    """Load weights into `model` (trainer.init_from): a state_dict, or a file torch.save'd from one
    (a checkpoint dict holding it under "model" or "state_dict" works too). A model that defines
    `translate_state_dict(sd) -> sd` maps a reference script's key names onto its own first.
    Loading is strict; each tensor is cast to the dtype of the parameter it replaces (the reference
    may keep a tensor in another precision). Mismatching keys or shapes: one ConfigError line."""
    sd = state_dict_or_path
    source = "the given state_dict"
    if isinstance(sd, (str, Path)):
        source = str(sd)
        if not Path(sd).is_file():
            raise ConfigError(f"trainer.init_from={source!r} is not a file")
        sd = torch.load(sd, map_location="cpu", weights_only=True)
        if isinstance(sd, dict):
            for key in ("model", "state_dict"):
                if isinstance(sd.get(key), dict):
                    sd = sd[key]
                    break
    if not isinstance(sd, dict):
        raise ConfigError(f"init_from: {source} holds a {type(sd).__name__}, not a state_dict")
    if hasattr(model, "translate_state_dict"):
        sd = model.translate_state_dict(dict(sd))
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:

        def head(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = ([f"missing keys {head(missing)}"] if missing else []) + (
            [f"unexpected keys {head(unexpected)}"] if unexpected else []
        )
        raise ConfigError(f"init_from: {source} does not fit {type(model).__name__}: {'; '.join(parts)}")
    bad = [k for k in own if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise ConfigError(
            f"init_from: {source} does not fit {type(model).__name__}: {k} has shape "
            f"{tuple(sd[k].shape)}, the model's is {tuple(own[k].shape)}"
        )
    model.load_state_dict({k: torch.as_tensor(sd[k]).to(own[k].dtype) for k in own}, strict=True)
    return model
