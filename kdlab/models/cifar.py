"""CIFAR-style (32x32 input) classification networks.

Every network here has the same layout so that feature taps read the same way for all of them:

- ``stem``: the first convolution (plus BN-ReLU for post-activation nets);
- ``stage1``, ``stage2``, ...: ``nn.Sequential`` groups of residual blocks;
- ``head``: :class:`ClassifierHead` = (BN-ReLU for pre-activation nets) -> global average pool -> linear.

``block_names`` lists the stem and the stages in forward order; :class:`kdlab.models.registry.ImageClassifier`
numbers them 1..N (block 1 = stem output).

Networks take *normalised* images; normalisation lives in the ``ImageClassifier`` wrapper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.errors import KdlabError

__all__ = [
    "BasicBlock",
    "ClassifierHead",
    "PreActBlock",
    "PreActResNet18",
    "SmallResNet",
    "WideResNet",
]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class ClassifierHead(nn.Module):
    """Optional BN-ReLU (pre-activation nets), global average pool, flatten, linear."""

    def __init__(self, in_channels: int, num_classes: int, pre_activation: bool):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels) if pre_activation else nn.Identity()
        self.relu = nn.ReLU(inplace=True) if pre_activation else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.norm(x)))
        return self.fc(torch.flatten(x, 1))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings"): BN-ReLU-conv-BN-ReLU-(dropout)-conv.

    When the shape changes, the 1x1 projection shortcut takes the pre-activated input, as in the paper
    and in the Wide-ResNet reference code.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + shortcut


def _norm(channels: int, norm: str) -> nn.Module:
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


class BasicBlock(nn.Module):
    """Post-activation basic block (He et al. 2015): conv-BN-ReLU-conv-BN (+ shortcut) -ReLU
    (``norm="none"``: without the BatchNorms)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = _norm(out_channels, norm)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = _norm(out_channels, norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                _norm(out_channels, norm),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _StagedNet(nn.Module):
    """Shared forward: stem -> stage1 -> ... -> head. Subclasses set ``block_names``."""

    block_names: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.block_names:
            x = getattr(self, name)(x)
        return self.head(x)


class PreActResNet18(_StagedNet):
    """Pre-activation ResNet-18 for 32x32 inputs: 3x3 stem conv, 4 stages (64/128/256/512) of 2 blocks.

    Blocks: 1 = stem, 2..5 = stage1..stage4.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        widths = (64, 128, 256, 512)
        self.stem = _conv3x3(3, widths[0])
        in_channels = widths[0]
        names = ["stem"]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(
                PreActBlock(in_channels, width, stride),
                PreActBlock(width, width, 1),
            )
            setattr(self, f"stage{i + 1}", stage)
            names.append(f"stage{i + 1}")
            in_channels = width
        self.head = ClassifierHead(in_channels, num_classes, pre_activation=True)
        self.block_names = tuple(names)
        self.num_classes = num_classes
        _init_weights(self)


class WideResNet(_StagedNet):
    """Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016): 3 groups of n=(depth-4)/6 pre-activation
    blocks with widths 16k/32k/64k, dropout between the two convolutions of each block.

    Blocks: 1 = stem, 2..4 = stage1..stage3.
    """

    def __init__(self, depth: int = 34, widen_factor: int = 10, dropout: float = 0.0, num_classes: int = 10):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise KdlabError(
                f"WideResNet depth {depth!r} is invalid: depth must be 6n+4 with n >= 1 "
                "(e.g. 10, 16, 22, 28, 34, 40)"
            )
        if isinstance(widen_factor, bool) or not isinstance(widen_factor, int) or widen_factor < 1:
            raise KdlabError(f"WideResNet widen_factor {widen_factor!r} is invalid: use a positive integer")
        if not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) < 1.0:
            raise KdlabError(f"WideResNet dropout {dropout!r} is invalid: use a number in [0, 1)")
        n = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.stem = _conv3x3(3, 16)
        in_channels = 16
        names = ["stem"]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [PreActBlock(in_channels, width, stride, float(dropout))]
            blocks += [PreActBlock(width, width, 1, float(dropout)) for _ in range(n - 1)]
            setattr(self, f"stage{i + 1}", nn.Sequential(*blocks))
            names.append(f"stage{i + 1}")
            in_channels = width
        self.head = ClassifierHead(in_channels, num_classes, pre_activation=True)
        self.block_names = tuple(names)
        self.depth, self.widen_factor, self.dropout = depth, widen_factor, float(dropout)
        self.num_classes = num_classes
        _init_weights(self)


class SmallResNet(_StagedNet):
    """A small post-activation basic-block ResNet, scalable in width, depth and number of stages.

    Stem conv3x3-BN-ReLU (``width`` channels), then ``stages`` stages of ``blocks_per_stage`` basic blocks with
    widths width, 2*width, 4*width, ... (stride 2 at the start of every stage but the first).
    Blocks: 1 = stem, 2..stages+1 = stage1..stageN. The default (16, 1, 3) is a ResNet-8 with ~78k parameters.
    ``norm``: ``batch`` (BatchNorm after every convolution) or ``none`` (no normalisation layer: every sample's
    output is independent of its batch, e.g. to compare multi-process with one-process training exactly).
    """

    def __init__(self, width: int = 16, blocks_per_stage: int = 1, stages: int = 3, num_classes: int = 10,
                 norm: str = "batch"):
        super().__init__()
        for name, value, upper in (("width", width, 1024), ("blocks_per_stage", blocks_per_stage, 64),
                                   ("stages", stages, 6)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
                raise KdlabError(f"resnet_small {name}={value!r} is invalid: use an integer from 1 to {upper}")
        if norm not in ("batch", "none"):
            raise KdlabError(f"resnet_small norm={norm!r} is invalid: use batch or none")
        self.stem = nn.Sequential(_conv3x3(3, width), _norm(width, norm), nn.ReLU(inplace=True))
        in_channels = width
        names = ["stem"]
        for i in range(stages):
            out_channels = width * 2**i
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_channels, out_channels, stride, norm)]
            blocks += [BasicBlock(out_channels, out_channels, 1, norm) for _ in range(blocks_per_stage - 1)]
            setattr(self, f"stage{i + 1}", nn.Sequential(*blocks))
            names.append(f"stage{i + 1}")
            in_channels = out_channels
        self.head = ClassifierHead(in_channels, num_classes, pre_activation=False)
        self.block_names = tuple(names)
        self.width, self.blocks_per_stage, self.stages = width, blocks_per_stage, stages
        self.num_classes = num_classes
        _init_weights(self)
