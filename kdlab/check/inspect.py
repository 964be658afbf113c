"""What ``kdlab inspect`` shows: a model's numbered blocks, or a distillation recipe's models side by side.

For an architecture name (``wrn-34-10``) or a training recipe, one row per block: index, module path,
output shape and channels, from one dry forward pass of a zero image. For a distillation recipe, the
student's and the teacher's blocks share a row by index, and the ``→ t`` column names the teacher block
the recipe's method compares each student block with: the pairs of the fields its settings declare as taps
(:class:`kdlab.config.schema.Taps`: MixACM's ``method.acm.blocks`` with ``method.acm.teacher_blocks``, AT's
``blocks``, FitNet's ``block``), in sections in use. Nothing is trained and no data is read.

A detection recipe lists its detectors' FPN levels instead (the maps Structural KD and its peers compare):
name, output shape and channels, from a zero image of ``min_size`` x ``max_size`` (the size the recipe's
images reach the FPN at when ``data.image_size`` pre-resizes them), student and teacher side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from kdlab.config.recipe import Recipe, load_recipe
from kdlab.config.schema import TapField, tap_fields, used_taps
from kdlab.config.sections import ModelSpec
from kdlab.errors import KdlabError

SINGLE_COLUMNS = ["block", "module path", "output shape", "channels"]
# s = student, t = teacher (short headers keep the table within 80 columns)
PAIRED_COLUMNS = ["block", "student path", "s shape", "s ch", "→ t", "teacher path", "t shape", "t ch"]


@dataclass
class BlockView:
    """A titled table: ``rows`` are dicts keyed by ``columns``."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)


def recipe_target(target: str) -> Path | None:
    """The recipe file ``target`` names (a file, or a shipped recipe's name as ``kdlab distill`` and ``kdlab check``
    accept it), or None when it names an architecture."""
    from kdlab.config.shipped import resolve_recipe, shipped_recipes

    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        return resolve_recipe(target)
    if target in {recipe.name for recipe in shipped_recipes()}:
        return resolve_recipe(target)
    return None


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
    from kdlab.config.zoo import PREFIX
    from kdlab.models.registry import build_classifier
    from kdlab.models.zoo import zoo_architecture

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
        from kdlab.models.files import load_model

        network, payload = load_model(spec.checkpoint)
        return network, str(payload["arch"])
    if spec.robustbench is not None:
        from kdlab.models.zoo import zoo_architecture

        return zoo_architecture(spec.robustbench, spec.dataset, spec.threat_model), f"robustbench:{spec.robustbench}"
    teacher_recipe = load_recipe(spec.recipe)
    if teacher_recipe.is_distillation:
        raise KdlabError(f"teacher.recipe '{spec.recipe}' is a distillation recipe; "
                         "name a training recipe (model:)")
    return _build(teacher_recipe.model, teacher_recipe.task, num_classes), teacher_recipe.model.arch


def _index_of(model: nn.Module, rows: list[dict[str, Any]], key: Any) -> Any:
    """The block index a tap key names (a module path that is no numbered block is shown as the path)."""
    from kdlab.models.taps import resolve_tap

    path = resolve_tap(model, key)
    return next((row["index"] for row in rows if row["path"] == path), path)


def _term(tap: TapField, method: str) -> str:
    """The loss term a tap field feeds, for the title: its section's name (``acm`` -> ACM) or the method's."""
    return (tap.path[-1] if tap.path else method).upper()


def recipe_view(recipe_path: str, overrides: list[str], num_classes: int, image_size: int) -> BlockView:
    recipe = load_recipe(recipe_path, overrides)
    if recipe.task == "detection":
        return detection_view(recipe, num_classes)
    if recipe.task != "classification":
        raise KdlabError(f"{recipe_path} is a {recipe.task} recipe: kdlab inspect lists classifier blocks and "
                         "detector FPN levels")
    student = _build(recipe.trained_model, recipe.task, num_classes)
    if not recipe.is_distillation:
        return _single_view(recipe.trained_model.arch, student, image_size)
    teacher, teacher_arch = _teacher(recipe, num_classes)
    student_rows, teacher_rows = _describe(student, image_size), _describe(teacher, image_size)
    taps = tap_fields(type(recipe.method))
    pairs = [(_index_of(student, student_rows, s), _index_of(teacher, teacher_rows, t))
             for _, keys, teacher_keys in used_taps(recipe.method)
             for s, t in zip(keys, teacher_keys if teacher_keys is not None else keys)]
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
    term = " and ".join(dict.fromkeys(_term(tap, recipe.method.name) for tap in taps))
    if pairs:
        pairing = f"{term} pairs (student → teacher): " + ", ".join(f"{s} → {t}" for s, t in pairs)
    elif taps:
        pairing = f"no {term} term ({'.'.join(('method', *taps[0].path, 'weight'))} = 0)"
    else:
        pairing = f"method {recipe.method.name} (no ACM pairs)"
    title = (f"{recipe.name}: student {recipe.trained_model.arch} ({_millions(student)}), "
             f"teacher {teacher_arch} ({_millions(teacher)}); {pairing}")
    return BlockView(title, PAIRED_COLUMNS, rows)


# --------------------------------------------------------------------------- detectors: FPN levels
DETECTION_COLUMNS = ["level", "module path", "output shape", "channels"]
PAIRED_DETECTION_COLUMNS = ["level", "s shape", "s ch", "t shape", "t ch"]


def _fpn_rows(detector: nn.Module, height: int, width: int) -> list[dict[str, Any]]:
    import torch

    from kdlab.models.detection import fpn_levels, fpn_module_path

    detector.eval()
    with torch.no_grad():
        levels = fpn_levels(detector, [torch.zeros(3, height, width)])
    path = fpn_module_path(detector)
    return [{"level": name, "path": f"{path}[{name!r}]", "shape": list(level.shape), "channels": level.shape[1]}
            for name, level in levels.items()]


def _detector_name(spec: ModelSpec) -> str:
    return f"{spec.arch} {spec.backbone}-FPN"


def detection_view(recipe: Recipe, num_classes: int) -> BlockView:
    """FPN levels of a detection recipe's model, or of its student and teacher side by side (by level name)."""
    spec = recipe.trained_model
    if spec.min_size is None or spec.max_size is None:
        raise KdlabError(f"{recipe.name}: the detector needs min_size and max_size (its resize) to be listed")
    height, width = spec.min_size, spec.max_size
    student = _build(spec, "detection", max(num_classes, 2))
    rows = _fpn_rows(student, height, width)
    size = f"FPN levels on a {height}x{width} image"
    if not recipe.is_distillation:
        table = [{"level": r["level"], "module path": r["path"], "output shape": _shape(r), "channels": r["channels"]}
                 for r in rows]
        return BlockView(f"{recipe.name}: {_detector_name(spec)} ({_millions(student)}); {size}",
                         DETECTION_COLUMNS, table)
    teacher, teacher_name = _teacher(recipe, max(num_classes, 2))
    if recipe.teacher.recipe is not None:
        teacher_name = _detector_name(load_recipe(recipe.teacher.recipe).model)
    teacher_rows = {r["level"]: r for r in _fpn_rows(teacher, height, width)}
    table = []
    for r in rows:
        t = teacher_rows.get(r["level"])
        table.append({"level": r["level"], "s shape": _shape(r), "s ch": r["channels"],
                      "t shape": t and _shape(t), "t ch": t and t["channels"]})
    feature = getattr(recipe.method, "feature", None)
    levels = "" if feature is None or feature.levels == "all" else f" on levels {', '.join(feature.levels)}"
    compared = (f"method {recipe.method.name}, feature.kind {feature.kind}{levels}"
                + (" with 1x1 adapters" if feature.adapter else "") if feature is not None
                else f"method {recipe.method.name}")
    title = (f"{recipe.name}: student {_detector_name(spec)} ({_millions(student)}), teacher {teacher_name} "
             f"({_millions(teacher)}); {compared}; {size}")
    return BlockView(title, PAIRED_DETECTION_COLUMNS, table)
