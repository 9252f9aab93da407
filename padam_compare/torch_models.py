"""The networks of ``padam compare``, in plain PyTorch (no torchvision).

* ``cnn1d``: a small 1-D convolutional network for MNIST-1D (three convolutions with batch
  normalization, like the paper's networks; about 10k parameters).
* ``mlp``: two hidden layers of 128 units; any input, flattened.
* ``vgg16``: VGG-16 with batch normalization, CIFAR variant (13 conv layers of 3x3, five 2x2
  max-pools, one linear layer on the 512 features), as in the paper's experiments.
* ``resnet18``: ResNet-18, CIFAR variant (3x3 stem, no max-pool, four stages of two basic blocks,
  64-128-256-512 channels; He et al., 2016).
* ``wrn16_4``: Wide ResNet 16-4 (Zagoruyko and Komodakis, 2016): pre-activation basic blocks,
  two per group, widths 64-128-256, no dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["build_model"]


class CNN1d(nn.Module):
    """Three 1-D convolutions (32 channels, two with stride 2), each followed by batch
    normalization and ReLU, and a linear classifier."""

    def __init__(self, length: int, num_classes: int, channels: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, kernel_size=5, padding=2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        reduced = (length + 3) // 4  # two stride-2 convolutions with padding 1
        self.classifier = nn.Linear(channels * reduced, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.unsqueeze(1)).flatten(1))


class MLP(nn.Module):
    """Flatten, then two hidden ReLU layers."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


_VGG16_LAYERS = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


class VGG16BN(nn.Module):
    """VGG-16 with batch normalization for 32x32 inputs (1x1x512 features after five pools)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [
                    nn.Conv2d(channels, int(item), kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(int(item)),
                    nn.ReLU(inplace=True),
                ]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs."""

    def __init__(self, num_classes: int, blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        stages: list[nn.Module] = []
        in_channels = 64
        for index, (channels, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                stages.append(BasicBlock(in_channels, channels, stride))
                in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


class WideBlock(nn.Module):
    """Pre-activation block of a wide ResNet: BN-ReLU-conv, BN-ReLU-conv, plus shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = torch.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(torch.relu(self.bn2(out)))
        # The projection takes the activated input, as in the original wide ResNet.
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-depth-width for 32x32 inputs; depth = 6 * blocks_per_group + 4."""

    def __init__(self, num_classes: int, depth: int = 16, width: int = 4) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"wide ResNet depth must be 6n + 4, got {depth}")
        per_group = (depth - 4) // 6
        widths = (16 * width, 32 * width, 64 * width)
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        in_channels = 16
        for index, channels in enumerate(widths):
            for block in range(per_group):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(WideBlock(in_channels, channels, stride))
                in_channels = channels
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_channels)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The network ``name`` for inputs of ``input_shape`` (one example) and ``num_classes``."""
    if name == "cnn1d":
        if len(input_shape) != 1:
            raise ValueError(f"cnn1d takes 1-D signals, got examples of shape {input_shape}")
        return CNN1d(input_shape[0], num_classes)
    if name == "mlp":
        return MLP(int(torch.tensor(input_shape).prod()), num_classes)
    if name in ("vgg16", "resnet18", "wrn16_4") and tuple(input_shape) != (3, 32, 32):
        raise ValueError(f"{name} takes 3x32x32 images, got examples of shape {input_shape}")
    if name == "vgg16":
        return VGG16BN(num_classes)
    if name == "resnet18":
        return ResNet18(num_classes)
    if name == "wrn16_4":
        return WideResNet(num_classes, depth=16, width=4)
    raise ValueError(f"unknown model {name!r}")
