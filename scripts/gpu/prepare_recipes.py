"""Write the GPU study's recipes into a work folder (scripts/gpu/common.sh).

* ``cifar10_fast_at_teacher.yaml``: the shipped fast FGSM-RS teacher, unchanged;
* ``mixacm_cifar10_fast.yaml``: the shipped ``mixacm_cifar10_gpu.yaml`` student with that teacher instead of the
  PGD-10 one (everything else as shipped: PreAct ResNet-18 student, 30 epochs, batch 128, bf16);
* ``--tiny 1``: both shrunk to seconds on a CPU (the slice scripts' end-to-end test): a few hundred images, a
  small model, 1-2 epochs, fp32, device cpu.

Usage: python scripts/gpu/prepare_recipes.py RECIPES_DIR OUT_DIR [--tiny 0|1]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

TINY_DATA = {"subset": 120, "test_subset": 40, "batch_size": 20}
TINY_TRAIN = {"precision": "fp32", "channels_last": False}


def tiny(recipe: dict, val_size: int) -> dict:
    recipe["device"] = "cpu"
    recipe["data"].update(TINY_DATA, val_size=val_size)
    for section in ("model", "student"):
        if section in recipe:
            recipe[section]["arch"] = "resnet_small"
    if "method" in recipe and "acm" in recipe["method"]:
        recipe["method"]["acm"]["blocks"] = [2, 3, 4]  # resnet_small's stages (preact_resnet18's are 3, 4, 5)
    recipe["train"].update(TINY_TRAIN, epochs=2 if "teacher" not in recipe else 1)
    recipe["eval"].update(n=20)
    return recipe


def main(source: Path, out: Path, shrink: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    teacher = yaml.safe_load((source / "cifar10_fast_at_teacher.yaml").read_text())
    student = yaml.safe_load((source / "mixacm_cifar10_gpu.yaml").read_text())
    student["name"] = "mixacm_cifar10_fast"
    student["teacher"] = {"recipe": "cifar10_fast_at_teacher.yaml"}
    if shrink:
        teacher, student = tiny(teacher, 0), tiny(student, 20)
    header = "# written by scripts/gpu/prepare_recipes.py" + (" (tiny)" if shrink else "") + "\n"
    for name, recipe in (("cifar10_fast_at_teacher.yaml", teacher), ("mixacm_cifar10_fast.yaml", student)):
        (out / name).write_text(header + yaml.safe_dump(recipe, sort_keys=False))


if __name__ == "__main__":
    arguments = sys.argv[1:]
    shrink = "--tiny" in arguments and arguments[arguments.index("--tiny") + 1] == "1"
    main(Path(arguments[0]), Path(arguments[1]), shrink)
