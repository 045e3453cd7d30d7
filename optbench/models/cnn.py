"""Convolutional networks for CIFAR-10: a CPU-sized CNN, the airbench94 fast net, ResNet-18.

Every model takes `channels_last` (the task passes the same flag to the data pipeline, so
inputs and weights share a memory format) and names its output layer `head`, which is how
optim/groups.py finds the `head` role.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _maybe_channels_last(model: nn.Module, channels_last: bool) -> None:
    if channels_last:
        model.to(memory_format=torch.channels_last)


class SmallCNN(nn.Module):
    """conv-BN-ReLU-pool blocks, global max pool, linear head: learns CIFAR-shaped data on a CPU
    in seconds (tests, the demo)."""

    def __init__(self, widths=(16, 32, 64), num_classes: int = 10, channels_last: bool = False):
        super().__init__()
        layers, c = [], 3
        for w in widths:
            layers += [
                nn.Conv2d(c, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)
        _maybe_channels_last(self, channels_last)

    def forward(self, x):
        return self.head(self.features(x).amax(dim=(2, 3)))


# --------------------------------------------------------------------------- airbench94
# The net of KellerJordan/cifar10-airbench (legacy/airbench94.py and airbench94_muon.py, snapshot
# f1c599c). The two scripts share the layers and differ only at initialisation and in the logit
# scale; each difference is a constructor argument, so conf/model/airbench94*.yaml are the scripts.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
WHITEN_ORDERS = ("descending", "ascending")
WHITEN_BIAS_INITS = ("zero", "default")


class _AirbenchBatchNorm(nn.BatchNorm2d):
    """airbench's BatchNorm: frozen unit scale (only the bias learns), eps 1e-12, and a fast
    running-statistics momentum (airbench writes 0.6 meaning 1 - PyTorch's momentum)."""

    def __init__(self, channels: int, momentum: float, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad = False


class _DiracConv(nn.Conv2d):
    """3x3 'same' conv without bias whose first in_channels filters start as the identity after
    PyTorch's default init: an implicit residual path at initialisation (airbench's dirac init)."""

    def __init__(self, c_in: int, c_out: int, dirac: bool):
        super().__init__(c_in, c_out, kernel_size=3, padding="same", bias=False)
        if dirac:
            with torch.no_grad():
                nn.init.dirac_(self.weight[:c_in])


class _ConvGroup(nn.Module):
    """conv -> maxpool 2 -> BN -> GELU -> conv -> BN -> GELU (the pool before the first BN, as airbench)."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float, bn_eps: float, dirac: bool):
        super().__init__()
        self.conv1 = _DiracConv(c_in, c_out, dirac)
        self.norm1 = _AirbenchBatchNorm(c_out, bn_momentum, bn_eps)
        self.conv2 = _DiracConv(c_out, c_out, dirac)
        self.norm2 = _AirbenchBatchNorm(c_out, bn_momentum, bn_eps)

    def forward(self, x):
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


def _choice(key: str, value, valid) -> None:
    if value not in valid:
        from optbench.errors import ConfigError

        raise ConfigError(f"model.{key}={value!r} is invalid; valid choices: {', '.join(map(str, valid))}")


class AirbenchNet(nn.Module):
    """The airbench94 network (Jordan 2024, arXiv:2404.00498; KellerJordan/cifar10-airbench):
    a 2x2 patch-whitening conv (weights frozen, from the eigenvectors of the training patches'
    covariance, see init_from_data; bias trainable), GELU, three conv groups, max pool 3, a
    bias-free linear head, logits x `output_scale`.

    The two reference scripts differ only in what these arguments say:
      legacy/airbench94.py:  output_scale 1/9, whiten_order descending, whiten_bias_init zero,
                             head_unit_std false
      airbench94_muon.py:    output_scale inverse_width (logits / 256), whiten_order ascending,
                             whiten_bias_init default (PyTorch's conv bias init), head_unit_std true
    dtype fp16 is the scripts' precision: every module in fp16 except the BatchNorms (fp32), no
    autocast; fp32 is the same net in float32 (CPU runs, the fidelity check).
    whiten=False keeps the same first layer but trains it from a random init (an ablation)."""

    def __init__(
        self,
        widths=(64, 256, 256),
        whiten: bool = True,
        whiten_kernel: int = 2,
        whiten_eps: float = 5e-4,
        whiten_order: str = "descending",
        whiten_bias_init: str = "zero",
        batchnorm_momentum: float = 0.6,
        batchnorm_eps: float = 1e-12,
        output_scale=1 / 9,
        head_unit_std: bool = False,
        dirac_init: bool = True,
        num_classes: int = 10,
        dtype: str = "fp32",
        channels_last: bool = False,
    ):
        super().__init__()
        _choice("whiten_order", whiten_order, WHITEN_ORDERS)
        _choice("whiten_bias_init", whiten_bias_init, WHITEN_BIAS_INITS)
        _choice("dtype", dtype, (*DTYPES, "auto"))
        dtype = "fp32" if dtype == "auto" else dtype  # auto is resolved by the task (fp16 on CUDA)
        if not (
            output_scale == "inverse_width"
            or (isinstance(output_scale, (int, float)) and not isinstance(output_scale, bool))
        ):
            from optbench.errors import ConfigError

            raise ConfigError(
                f"model.output_scale={output_scale!r} is invalid: must be a number or "
                "inverse_width (logits / the head's input width)"
            )
        c_whiten = 2 * 3 * whiten_kernel**2  # each eigenvector and its negation
        # construction order = the scripts' (whitening conv, conv groups, head): same RNG draws
        self.whiten = nn.Conv2d(3, c_whiten, whiten_kernel, padding=0, bias=True)
        if whiten_bias_init == "zero":
            nn.init.zeros_(self.whiten.bias)
        self.whitening, self.whiten_eps, self.whiten_order = whiten, whiten_eps, whiten_order
        if whiten:
            self.whiten.weight.requires_grad = False  # frozen: the optimizer never sees it
        groups, c = [], c_whiten
        for w in widths:
            groups.append(_ConvGroup(c, w, batchnorm_momentum, batchnorm_eps, dirac_init))
            c = w
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(c, num_classes, bias=False)
        if head_unit_std:
            with torch.no_grad():
                self.head.weight.mul_(1 / self.head.weight.std())
        self.output_scale = output_scale
        if dtype == "fp16":
            self.half()
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.float()
        _maybe_channels_last(self, channels_last)

    def param_subroles(self) -> dict[str, str]:
        """Parameters a role rule can address by name (optim/groups.py): the whitening bias has its
        own lr schedule and freeze in both scripts."""
        return {"whiten.bias": "whiten_bias"}

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Whitening init from normalised training images (N x 3 x H x W), computed as the scripts
        do (float32 patch covariance, eigh on its upper triangle): filters are the eigenvectors
        scaled by 1/sqrt(eigenvalue + eps), in ascending or descending eigenvalue order, then
        their negations (so the GELU after it passes both signs)."""
        if not self.whitening:
            return
        c, (h, w) = images.shape[1], self.whiten.weight.shape[2:]
        patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()
        flat = patches.view(len(patches), -1)
        covariance = (flat.T @ flat) / len(flat)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance, UPLO="U")
        filters = eigenvectors.T.reshape(-1, c, h, w) / torch.sqrt(eigenvalues.view(-1, 1, 1, 1) + self.whiten_eps)
        if self.whiten_order == "descending":
            filters = filters.flip(0)
        self.whiten.weight.copy_(torch.cat((filters, -filters)).to(self.whiten.weight))

    def forward(self, x):
        x = x.to(self.whiten.weight.dtype)  # fp16 nets take the pipeline's fp32 batches
        x = self.groups(F.gelu(self.whiten(x)))
        x = F.max_pool2d(x, 3)
        x = x.reshape(len(x), -1)
        if self.output_scale == "inverse_width":
            return self.head(x) / x.size(-1)
        return self.head(x) * self.output_scale

    # the reference scripts' key names -> ours, for init_from (contract C5)
    _LEGACY_BLOCKS = {"0": "whiten", "2": "groups.0", "3": "groups.1", "4": "groups.2", "7": "head"}

    def translate_state_dict(self, sd: dict) -> dict:
        """A state_dict saved from airbench94_muon.py's CifarNet (whiten.*, layers.{1,2,3}.*,
        head.weight) or legacy/airbench94.py's nn.Sequential (0.*, {2,3,4}.*, 7.weight), with or
        without torch.compile's `_orig_mod.` prefix, renamed to this module's keys; our own keys
        pass unchanged."""
        out = {}
        for key, value in sd.items():
            key = key.removeprefix("_orig_mod.")
            first, _, rest = key.partition(".")
            if first == "layers":
                index, _, tail = rest.partition(".")
                key = f"groups.{int(index) - 1}.{tail}"  # layers.0 is the GELU, layers.4 the pool
            elif first in self._LEGACY_BLOCKS and rest:
                key = f"{self._LEGACY_BLOCKS[first]}.{rest}"
            out[key] = value
        return out


# --------------------------------------------------------------------------- ResNet-18
class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) in its CIFAR form: 3x3 stride-1 stem, no max pool, four stages
    of two basic blocks (strides 1, 2, 2, 2), global average pool, linear head."""

    def __init__(
        self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), num_classes: int = 10, channels_last: bool = False
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages, c = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                stages.append(_BasicBlock(c, w, stride=2 if (i > 0 and j == 0) else 1))
                c = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c, num_classes)
        _maybe_channels_last(self, channels_last)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))
