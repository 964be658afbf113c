"""Tiny detectors and tiny detection recipes shared by the detection-distillation tests (Structural KD and its
peers): 64 px synthetic shapes, 8-channel R-18 FPNs, few proposals, so that a fit takes seconds on one core."""

from __future__ import annotations

from pathlib import Path

import yaml
from torch import nn

from kdlab.models.detection import build_detector

SIZE = 64
NUM_CLASSES = 4  # 3 synthetic shapes + background
TINY = {"anchor_base": 16, "rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50,
        "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 32,
        "representation_size": 32}

# the data and model sections of a tiny detection recipe
DATA = {"dataset": "synthetic", "image_size": SIZE, "num_images": 8, "batch_size": 4, "test_subset": 8}
MODEL = {"arch": "fasterrcnn", "backbone": "resnet18", "min_size": SIZE, "max_size": SIZE,
         "options": {"fpn_channels": 8, **TINY}}


def detector(arch: str, channels: int, resize: int = SIZE, **extra) -> nn.Module:
    """A tiny Faster R-CNN or RetinaNet (R-18-FPN, few proposals) resizing images to ``resize`` pixels."""
    options = TINY if arch == "fasterrcnn" else {"anchor_base": 16, "topk_candidates": 50}
    return build_detector(arch, "resnet18", NUM_CLASSES, resize, resize, fpn_channels=channels, **options, **extra)


def write(path: Path, payload: dict) -> Path:
    """``payload`` as a YAML recipe at ``path``."""
    path.write_text(yaml.safe_dump(payload))
    return path


def write_recipes(root: Path, student_name: str, feature: dict, *, teacher_name: str = "tiny-teacher",
                  student_epochs: int = 1) -> tuple[Path, Path]:
    """A tiny detection teacher (1 epoch) and a Structural-KD student of it with ``feature`` as its
    ``method.feature`` section, as ``root/teacher.yaml`` and ``root/student.yaml``, writing under ``root``."""
    output = {"dir": str(root / "runs"), "table": str(root / "runs.csv")}
    teacher = write(root / "teacher.yaml", {
        "name": teacher_name, "task": "detection", "data": DATA, "model": MODEL,
        "train": {"epochs": 1, "lr": 0.01}, "output": output})
    student = write(root / "student.yaml", {
        "name": student_name, "task": "detection", "data": DATA, "teacher": {"recipe": str(teacher)},
        "student": MODEL, "method": {"name": "skd", "feature": feature},
        "train": {"epochs": student_epochs, "lr": 0.01}, "output": output})
    return teacher, student
