"""A tiny teacher + KD student pair on the embedded data, written as a researcher's recipe files: the checkout that
the time-slice (tests/ablation/test_slices.py) and fresh-checkout (tests/ablation/test_continue.py) tests run from."""

from pathlib import Path

import yaml

DATA = {"dataset": "embedded", "subset": 50, "test_subset": 20, "batch_size": 25}


def write_pair(folder: Path, name: str, teacher_epochs: int, student_epochs: int) -> Path:
    """``teacher.yaml`` and ``student.yaml`` (the student names the teacher by its recipe) in ``folder``; returns it."""
    teacher = {"name": f"{name}-teacher", "data": DATA, "model": {"arch": "resnet_small", "width": 4},
               "train": {"epochs": teacher_epochs}, "eval": {"n": 20, "steps": 2}}
    student = {"name": name, "data": DATA, "student": {"arch": "resnet_small", "width": 4},
               "teacher": {"recipe": "teacher.yaml"}, "method": {"name": "kd"}, "train": {"epochs": student_epochs},
               "eval": {"n": 20, "steps": 2}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    (folder / "student.yaml").write_text(yaml.safe_dump(student))
    return folder
