"""Convolutional networks for CIFAR-10."""
from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """conv-BN-ReLU-pool blocks, global max pool, linear head: learns CIFAR-shaped data on a CPU
    in seconds (tests, the demo)."""

    def __init__(self, widths=(16, 32, 64), num_classes: int = 10):
        super().__init__()
        layers, c = [], 3
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.head(self.features(x).amax(dim=(2, 3)))
