"""One entry point that builds any kdlab model from (task, arch, options): used by recipes and checkpoints."""

from __future__ import annotations

from typing import Any

from torch import nn

from kdlab.errors import KdlabError


def build_model(task: str, arch: str, num_classes: int, options: dict[str, Any]) -> nn.Module:
    if task == "classification":
        from kdlab.models.registry import build_classifier

        return build_classifier(arch, num_classes, **options)
    if task == "detection":
        from kdlab.models.detection import build_detector

        return build_detector(arch, num_classes=num_classes, **options)
    raise KdlabError(f"unknown task '{task}': use classification or detection")
