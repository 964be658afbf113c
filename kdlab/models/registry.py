"""Build classifiers by name; wrap them so normalisation lives inside the model; number their blocks.

``build_classifier("wrn-34-10", 10)`` returns an :class:`ImageClassifier` whose ``forward`` takes images in
[0, 1] and returns logits, so attacks and distillation losses need no knowledge of dataset statistics. The default
statistics are CIFAR-10's (:mod:`kdlab.config.datasets`, the facts of every dataset).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdlab.config.datasets import CIFAR10_MEAN, CIFAR10_STD
from kdlab.errors import KdlabError, did_you_mean
from kdlab.models.cifar import PreActResNet18, SmallResNet, WideResNet

__all__ = [
    "Block",
    "ImageClassifier",
    "available_architectures",
    "build_classifier",
    "count_parameters",
    "describe_blocks",
]

_WRN_PATTERN = re.compile(r"^wrn-(\d+)-(\d+)$")
_WRN_EXAMPLES = ("wrn-16-4", "wrn-28-10", "wrn-34-10")
# Options every architecture accepts, then the architecture-specific ones (with defaults, for messages).
_COMMON_OPTIONS = {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}
_ARCH_OPTIONS: dict[str, dict[str, Any]] = {
    "preact_resnet18": {},
    "wrn": {"dropout": 0.0},
    "resnet_small": {"width": 16, "blocks_per_stage": 1, "stages": 3, "norm": "batch"},
}


@dataclass(frozen=True)
class Block:
    """One numbered block of a classifier: ``path`` is relative to the wrapper (``get_submodule(path)``)."""

    index: int
    path: str
    module: nn.Module


class ImageClassifier(nn.Module):
    """A network with input normalisation inside: ``forward(x in [0, 1]) -> logits``.

    ``mean``/``std`` are registered buffers (saved in the state dict, moved with ``.to()``).
    ``blocks()`` numbers the wrapped network's stem and stages: block 1 = stem output, 2..N = stages in
    forward order (the MixACM supplement's numbering). The network must expose ``block_names`` (attribute
    names of the stem and stages, in order) for ``blocks()`` to work.
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        arch: str | None = None,
    ):
        super().__init__()
        try:
            mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
            std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        except (TypeError, ValueError, RuntimeError):
            raise KdlabError(f"normalisation mean={mean!r} / std={std!r} must be lists of numbers, "
                             "one per image channel") from None
        if mean_t.numel() != std_t.numel():
            raise KdlabError(f"normalisation mean has {mean_t.numel()} values but std has {std_t.numel()}: "
                             "give one value per image channel for both")
        if bool((std_t <= 0).any()):
            raise KdlabError(f"normalisation std {tuple(std)} must be positive: fix the model's std option")
        self.net = net
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.arch = arch or type(net).__name__
        self.num_classes = getattr(net, "num_classes", None)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"{self.arch} expects N x {self.mean.shape[1]} x H x W images in [0, 1], "
                             f"got shape {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def blocks(self) -> list[Block]:
        names = getattr(self.net, "block_names", None)
        if not names:
            raise KdlabError(
                f"model {self.arch} does not number its blocks: tap it by module path (e.g. 'net.layer1') instead"
            )
        return [Block(i + 1, f"net.{name}", self.net.get_submodule(name)) for i, name in enumerate(names)]

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}"


def available_architectures() -> list[str]:
    """Architecture names for help text (WRN accepts any ``wrn-<6n+4>-<k>``; these are examples)."""
    return ["preact_resnet18", *_WRN_EXAMPLES, "resnet_small"]


def _arch_help() -> str:
    return "preact_resnet18, wrn-<depth>-<widen> with depth = 6n+4 (e.g. wrn-34-10, wrn-16-4), resnet_small"


def _arch_family(arch: str) -> tuple[str, dict[str, int]]:
    if arch == "preact_resnet18":
        return "preact_resnet18", {}
    if arch == "resnet_small":
        return "resnet_small", {}
    match = _WRN_PATTERN.match(arch)
    if match:
        return "wrn", {"depth": int(match.group(1)), "widen_factor": int(match.group(2))}
    if arch.startswith("wrn"):
        raise KdlabError(f"unknown architecture '{arch}': write Wide ResNets as wrn-<depth>-<widen>, "
                         "e.g. wrn-34-10 (depth = 6n+4)")
    hint = did_you_mean(arch, available_architectures(), cutoff=0.5)
    raise KdlabError(f"unknown architecture '{arch}'{hint}: "
                     f"valid architectures are {_arch_help()}")


def build_classifier(arch: str, num_classes: int, **options: Any) -> ImageClassifier:
    """Build ``arch`` wrapped in an :class:`ImageClassifier`.

    Options: every arch takes ``mean`` and ``std`` (default CIFAR-10 statistics); ``wrn-D-K`` takes
    ``dropout`` (0.0); ``resnet_small`` takes ``width`` (16), ``blocks_per_stage`` (1), ``stages`` (3) and
    ``norm`` (``batch``; ``none`` leaves out every BatchNorm).
    Unknown names raise :class:`KdlabError` with the closest valid name.
    """
    if not isinstance(arch, str):
        raise KdlabError(f"architecture must be a name like 'wrn-34-10', got {arch!r}")
    name = arch.strip().lower()
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise KdlabError(f"num_classes={num_classes!r} is invalid for {name}: use a positive integer")
    family, fixed = _arch_family(name)
    allowed = {**_COMMON_OPTIONS, **_ARCH_OPTIONS[family]}
    for key in options:
        if key not in allowed:
            valid = ", ".join(f"{k} (default {v})" for k, v in allowed.items())
            hint = did_you_mean(key, list(allowed), cutoff=0.5)
            raise KdlabError(f"unknown option '{key}' for architecture {name}{hint}: "
                             f"valid options are {valid}")
    settings = {**allowed, **options}
    mean, std = settings.pop("mean"), settings.pop("std")
    try:
        mean_len, std_len = len(mean), len(std)
    except TypeError:
        raise KdlabError(f"model mean/std must be lists of 3 numbers, got mean={mean!r}, std={std!r}") from None
    if mean_len != 3 or std_len != 3:
        raise KdlabError(f"model mean/std must have 3 values (one per RGB channel), got {mean!r} and {std!r}")
    if family == "preact_resnet18":
        net: nn.Module = PreActResNet18(num_classes=num_classes)
    elif family == "wrn":
        net = WideResNet(fixed["depth"], fixed["widen_factor"], dropout=settings["dropout"],
                         num_classes=num_classes)
    else:
        net = SmallResNet(width=settings["width"], blocks_per_stage=settings["blocks_per_stage"],
                          stages=settings["stages"], num_classes=num_classes, norm=settings["norm"])
    return ImageClassifier(net, mean=mean, std=std, arch=name)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe_blocks(model: ImageClassifier, image_size: Sequence[int] = (3, 32, 32)) -> list[dict[str, Any]]:
    """Dry-run one zero image through ``model`` and describe each numbered block.

    Returns one dict per block: ``index``, ``path``, ``shape`` (C, H, W), ``shape_str`` ("CxHxW"),
    ``channels``, ``params`` (parameters inside that block) and ``model_params`` (whole model, same in every
    row). The model's train/eval mode is restored afterwards.
    """
    from kdlab.models.taps import FeatureTaps  # lazy: keeps kdlab.models importable without kdlab.models.taps

    blocks = model.blocks()
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = torch.zeros(1, *image_size, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FeatureTaps(model, [b.index for b in blocks], detach=True) as taps:
            try:
                model(x)
            except (RuntimeError, ValueError) as error:
                shape = "x".join(str(s) for s in image_size)
                detail = " ".join(str(error).split())[:160]
                raise KdlabError(f"model {model.arch} cannot take {shape} images ({detail}): "
                                 "give the image size the model was built for") from None
    finally:
        model.train(was_training)
    total = count_parameters(model)
    rows = []
    for block in blocks:
        shape = tuple(int(s) for s in taps.features[block.index].shape[1:])
        rows.append({
            "index": block.index,
            "path": block.path,
            "shape": shape,
            "shape_str": "x".join(str(s) for s in shape),
            "channels": shape[0],
            "params": count_parameters(block.module),
            "model_params": total,
        })
    return rows
