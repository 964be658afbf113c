"""What ``kdlab inspect`` shows: a model's numbered blocks, or a distillation recipe's models side by side.

For an architecture name (``wrn-34-10``) or a training recipe, one row per block: index, module path,
output shape and channels, from one dry forward pass of a zero image. For a distillation recipe, the
student's and the teacher's blocks share a row by index, and the ``→ t`` column names the teacher block
the recipe's ACM term compares each student block with (``method.acm.blocks`` with
``method.acm.teacher_blocks``): nothing is trained and no data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from kdlab.errors import KdlabError
from kdlab.recipe import ModelSpec, Recipe, load_recipe

SINGLE_COLUMNS = ["block", "module path", "output shape", "channels"]
# s = student, t = teacher (short headers keep the table within 80 columns)
PAIRED_COLUMNS = ["block", "student path", "s shape", "s ch", "→ t", "teacher path", "t shape", "t ch"]


@dataclass
class BlockView:
    """A titled table: ``rows`` are dicts keyed by ``columns``."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)


def is_recipe_path(target: str) -> bool:
    return target.endswith((".yaml", ".yml")) or Path(target).is_file()


def _describe(model: nn.Module, image_size: int) -> list[dict[str, Any]]:
    from kdlab.models.registry import describe_blocks

    if not hasattr(model, "blocks"):
        raise KdlabError(f"model {getattr(model, 'arch', type(model).__name__)} has no numbered blocks "
                         "(only classification models do): nothing to list")
    return describe_blocks(model, image_size=(3, image_size, image_size))


def _millions(model: nn.Module) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"


def _shape(row: dict[str, Any]) -> str:
    return "×".join(map(str, row["shape"]))


def architecture_view(arch: str, num_classes: int, image_size: int, **options: Any) -> BlockView:
    from kdlab.models.registry import build_classifier
    from kdlab.zoo import PREFIX, zoo_architecture

    if arch.startswith(PREFIX):  # a RobustBench model: its architecture, no checkpoint needed
        return _single_view(arch, zoo_architecture(arch[len(PREFIX):]), image_size)
    network = build_classifier(arch, num_classes, **options)
    return _single_view(arch, network, image_size)


def _single_view(name: str, network: nn.Module, image_size: int) -> BlockView:
    rows = [{"block": r["index"], "module path": r["path"], "output shape": _shape(r),
             "channels": r["channels"]} for r in _describe(network, image_size)]
    return BlockView(f"{name}: {_millions(network)}", SINGLE_COLUMNS, rows)


def _build(spec: ModelSpec, task: str, num_classes: int) -> nn.Module:
    from kdlab.models.factory import build_model

    return build_model(task, spec.arch, num_classes, spec.build_options())


def _teacher(recipe: Recipe, num_classes: int) -> tuple[nn.Module, str]:
    """The teacher network (weights are irrelevant here) and its architecture name, without training it."""
    spec = recipe.teacher
    if spec.checkpoint is not None:
        from kdlab.checkpoint import load_model

        network, payload = load_model(spec.checkpoint)
        return network, str(payload["arch"])
    if spec.robustbench is not None:
        from kdlab.zoo import zoo_architecture

        return zoo_architecture(spec.robustbench, spec.dataset, spec.threat_model), f"robustbench:{spec.robustbench}"
    teacher_recipe = load_recipe(spec.recipe)
    if teacher_recipe.is_distillation:
        raise KdlabError(f"teacher.recipe '{spec.recipe}' is a distillation recipe; "
                         "name a training recipe (model:)")
    return _build(teacher_recipe.model, teacher_recipe.task, num_classes), teacher_recipe.model.arch


def _index_of(model: nn.Module, rows: list[dict[str, Any]], key: Any) -> Any:
    """The block index a tap key names (a module path that is no numbered block is shown as the path)."""
    from kdlab.taps import resolve_tap

    path = resolve_tap(model, key)
    return next((row["index"] for row in rows if row["path"] == path), path)


def recipe_view(recipe_path: str, overrides: list[str], num_classes: int, image_size: int) -> BlockView:
    recipe = load_recipe(recipe_path, overrides)
    if recipe.task != "classification":
        raise KdlabError(f"{recipe_path} is a {recipe.task} recipe: kdlab inspect lists the numbered "
                         "blocks of classification models (detectors are tapped by FPN level)")
    student = _build(recipe.trained_model, recipe.task, num_classes)
    if not recipe.is_distillation:
        return _single_view(recipe.trained_model.arch, student, image_size)
    teacher, teacher_arch = _teacher(recipe, num_classes)
    student_rows, teacher_rows = _describe(student, image_size), _describe(teacher, image_size)
    acm = getattr(recipe.method, "acm", None)  # only MixACM pairs blocks through ACM
    pairs = [(_index_of(student, student_rows, s), _index_of(teacher, teacher_rows, t))
             for s, t in (acm.block_pairs if acm is not None and acm.weight > 0 else [])]
    to_teacher: dict[Any, list[str]] = {}
    for s, t in pairs:
        to_teacher.setdefault(s, []).append(str(t))
    rows = []
    for i in range(max(len(student_rows), len(teacher_rows))):
        srow = student_rows[i] if i < len(student_rows) else None
        trow = teacher_rows[i] if i < len(teacher_rows) else None
        rows.append({
            "block": (srow or trow)["index"],
            "student path": srow and srow["path"],
            "s shape": srow and _shape(srow),
            "s ch": srow and srow["channels"],
            "→ t": ", ".join(to_teacher.get(srow["index"], [])) if srow else None,
            "teacher path": trow and trow["path"],
            "t shape": trow and _shape(trow),
            "t ch": trow and trow["channels"],
        })
    if pairs:
        pairing = "ACM pairs (student → teacher): " + ", ".join(f"{s} → {t}" for s, t in pairs)
    else:
        pairing = ("no ACM term (method.acm.weight = 0)" if acm is not None
                   else f"method {recipe.method.name} (no ACM pairs)")
    title = (f"{recipe.name}: student {recipe.trained_model.arch} ({_millions(student)}), "
             f"teacher {teacher_arch} ({_millions(teacher)}); {pairing}")
    return BlockView(title, PAIRED_COLUMNS, rows)
