"""RobustBench model-zoo checkpoints as kdlab classifiers: teachers to distil from, models to evaluate.

The ``robustbench`` package (1.1.1, PyPI) cannot be imported beside kdlab's dependencies: its ``__init__``
imports ``autoattack``, a module only the GitHub ``auto-attack`` package provides (the PyPI ``pyautoattack``
that robustbench requires installs ``pyautoattack``), and ``pkg_resources``, gone from setuptools >= 81. So
kdlab reads the zoo's checkpoint files directly, for the zoo's common CIFAR-10 architectures:

- ``WideResNet`` (robustbench ``model_zoo/architectures/wide_resnet.py``): pre-activation blocks whose 1x1
  shortcut takes the activated input, exactly kdlab's :class:`~kdlab.models.cifar.WideResNet`; the keys are
  renamed (``conv1`` -> ``stem``, ``blockK.layer.i`` -> ``stageK.i``, ``convShortcut`` -> ``shortcut``,
  ``bn1``/``fc`` -> ``head.norm``/``head.fc``) and the unused ``sub_block1`` of some checkpoints is dropped;
- ``PreActResNet`` (``architectures/resnet.py``, PreActBlock [2, 2, 2, 2]): its shortcut takes the *raw*
  input and it has no BN-ReLU before the pooling, so it is kdlab's PreActResNet-18 with those two differences
  (:class:`ZooPreActResNet18`).

The catalogue (names, the ``robustbench:`` prefix, each entry's architecture, weight layout and normalisation,
and where each file lives) is :mod:`kdlab.config.zoo`; this module builds and loads the networks. Blocks are
numbered as for kdlab's own networks (stem = 1, stages = 2..N), so ACM, FitNet, AT and RRM tap them by index.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config.zoo import PREFIX, existing_checkpoint, zoo_entry
from kdlab.errors import KdlabError
from kdlab.models.cifar import ClassifierHead, PreActBlock, PreActResNet18, WideResNet
from kdlab.models.registry import ImageClassifier


class _InputShortcutBlock(PreActBlock):
    """RobustBench's PreActBlock: like kdlab's, but the 1x1 shortcut takes the raw input, not BN-ReLU(input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(out)))))
        return out + shortcut


class ZooPreActResNet18(PreActResNet18):
    """RobustBench's ``PreActResNet(PreActBlock, [2, 2, 2, 2])``: raw-input shortcuts, no BN-ReLU before the
    pooling (``bn_before_fc=False``). Blocks: 1 = stem, 2..5 = stage1..stage4."""

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes)
        for stage in ("stage1", "stage2", "stage3", "stage4"):
            for i, block in enumerate(getattr(self, stage)):
                swapped = _InputShortcutBlock(block.bn1.num_features, block.conv1.out_channels,
                                              block.conv1.stride[0])
                getattr(self, stage)[i] = swapped
        self.head = ClassifierHead(512, num_classes, pre_activation=False)


def _build(arch: str, num_classes: int) -> nn.Module:
    if arch == "preact_resnet18":
        return ZooPreActResNet18(num_classes)
    _, depth, widen = arch.split("-")
    return WideResNet(int(depth), int(widen), num_classes=num_classes)


def _renamed(state: dict, arch: str) -> dict:
    """The zoo's state-dict keys as kdlab's module paths."""
    renamed = {}
    for key, value in state.items():
        for prefix in ("module.", "model."):
            key = key.replace(prefix, "")
        if key.startswith("sub_block1.") or key in ("mu", "sigma"):
            continue  # sub_block1: built but never called by the zoo's forward; mu/sigma: in the wrapper
        if arch == "preact_resnet18":
            key = key.replace("conv1.", "stem.", 1) if key.startswith("conv1.") else key
            key = key.replace("layer", "stage", 1) if key.startswith("layer") else key
            key = key.replace("shortcut.0.", "shortcut.").replace("linear.", "head.fc.")
        else:
            key = key.replace("conv1.", "stem.", 1) if key.startswith("conv1.") else key
            for k in (1, 2, 3):
                key = key.replace(f"block{k}.layer.", f"stage{k}.")
            key = key.replace("convShortcut.", "shortcut.")
            key = "head.norm." + key[4:] if key.startswith("bn1.") else key
            key = key.replace("fc.", "head.fc.", 1) if key.startswith("fc.") else key
        renamed[key] = value
    return renamed


def zoo_network(arch: str, state: dict, num_classes: int = 10) -> nn.Module:
    """A kdlab network of the zoo architecture ``arch`` holding the zoo-format ``state`` (strict)."""
    net = _build(arch, num_classes)
    try:
        net.load_state_dict(_renamed(state, arch), strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise KdlabError(f"the checkpoint does not match RobustBench's {arch}: {first}") from None
    return net


def load_zoo_model(name: str, dataset: str = "cifar10", threat_model: str = "Linf",
                   model_dir: str | Path = "models") -> tuple[ImageClassifier, Path]:
    """The zoo model ``name`` as an :class:`ImageClassifier` (images in [0, 1]) and its checkpoint file."""
    path = existing_checkpoint(name, dataset, threat_model, model_dir)
    return load_zoo_file(name, path, dataset, threat_model), path


def load_zoo_file(name: str, path: str | Path, dataset: str = "cifar10", threat_model: str = "Linf"
                  ) -> ImageClassifier:
    """The zoo model ``name`` from its checkpoint file ``path`` (the zoo's format), in eval mode."""
    entry = zoo_entry(name, dataset, threat_model)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if entry.wrap == "last" and isinstance(payload, dict) and "last" in payload:
        payload = payload["last"]
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise KdlabError(f"{path}: not a RobustBench checkpoint (no state dict inside): re-download {name}.pt")
    mean, std = entry.normalisation
    model = ImageClassifier(zoo_network(entry.arch, state), mean=mean, std=std, arch=f"{PREFIX}{name}")
    return model.eval()


def zoo_architecture(name: str, dataset: str = "cifar10", threat_model: str = "Linf") -> ImageClassifier:
    """The zoo model's architecture, untrained (``kdlab inspect robustbench:NAME`` needs no checkpoint)."""
    entry = zoo_entry(name, dataset, threat_model)
    mean, std = entry.normalisation
    return ImageClassifier(_build(entry.arch, 10), mean=mean, std=std, arch=f"{PREFIX}{name}")
