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
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)
        _maybe_channels_last(self, channels_last)

    def forward(self, x):
        return self.head(self.features(x).amax(dim=(2, 3)))


# --------------------------------------------------------------------------- airbench94
class _AirbenchBatchNorm(nn.BatchNorm2d):
    """airbench's BatchNorm: frozen unit scale (only the bias learns), tiny eps, and a fast
    running-statistics momentum (airbench writes 0.6 meaning 1 - PyTorch's momentum)."""

    def __init__(self, channels: int, momentum: float):
        super().__init__(channels, eps=1e-12, momentum=1 - momentum)
        self.weight.requires_grad = False


class _DiracConv(nn.Conv2d):
    """3x3 'same' conv whose first in_channels filters start as the identity: an implicit
    residual path at initialisation (airbench's dirac init)."""

    def __init__(self, c_in: int, c_out: int, dirac: bool):
        super().__init__(c_in, c_out, kernel_size=3, padding="same", bias=False)
        if dirac:
            with torch.no_grad():
                nn.init.dirac_(self.weight[:min(c_in, c_out)])


class _ConvGroup(nn.Module):
    """conv -> maxpool 2 -> BN -> GELU -> conv -> BN -> GELU."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float, dirac: bool):
        super().__init__()
        self.conv1 = _DiracConv(c_in, c_out, dirac)
        self.norm1 = _AirbenchBatchNorm(c_out, bn_momentum)
        self.conv2 = _DiracConv(c_out, c_out, dirac)
        self.norm2 = _AirbenchBatchNorm(c_out, bn_momentum)

    def forward(self, x):
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """The airbench94 network (Jordan 2024, arXiv:2404.00498; KellerJordan/cifar10-airbench):
    a 2x2 patch-whitening conv (frozen; weights from the eigenvectors of the training patches'
    covariance, see init_from_data), GELU, three conv groups, global max pool, a bias-free
    linear head scaled by `output_scale`.

    whiten=False keeps the same first layer but trains it from a random init (an ablation)."""

    def __init__(self, widths=(64, 256, 256), whiten: bool = True, whiten_kernel: int = 2,
                 batchnorm_momentum: float = 0.6, output_scale: float = 1 / 9, dirac_init: bool = True,
                 num_classes: int = 10, channels_last: bool = False):
        super().__init__()
        c_whiten = 2 * 3 * whiten_kernel ** 2   # each eigenvector and its negation
        self.whiten = nn.Conv2d(3, c_whiten, whiten_kernel, padding=0, bias=True)
        nn.init.zeros_(self.whiten.bias)
        self.whitening = whiten
        if whiten:
            self.whiten.weight.requires_grad = False   # frozen: the optimizer never sees it
        groups, c = [], c_whiten
        for w in widths:
            groups.append(_ConvGroup(c, w, batchnorm_momentum, dirac_init))
            c = w
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(c, num_classes, bias=False)
        self.output_scale = output_scale
        _maybe_channels_last(self, channels_last)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4, chunk: int = 500) -> None:
        """Whitening init from normalised training images (N x 3 x H x W): filters are the
        eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue + eps), and their
        negations (so the GELU after it passes both signs)."""
        if not self.whitening:
            return
        k = self.whiten.kernel_size[0]
        dim = 3 * k * k
        cov = torch.zeros(dim, dim, dtype=torch.float64, device=images.device)
        count = 0
        for start in range(0, len(images), chunk):  # chunks: patches of 5000 images are ~230 MB
            x = images[start:start + chunk].float()
            patches = F.unfold(x, k).transpose(1, 2).reshape(-1, dim).double()  # (c, ky, kx) order
            cov += patches.T @ patches
            count += len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov / count)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).reshape(dim, 3, k, k)
        weight = torch.cat([filters, -filters]).to(self.whiten.weight)
        self.whiten.weight.copy_(weight)

    def forward(self, x):
        x = self.groups(F.gelu(self.whiten(x)))
        return self.head(x.amax(dim=(2, 3))) * self.output_scale


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

    def __init__(self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), num_classes: int = 10,
                 channels_last: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
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
