"""Object detection: VOC / COCO / synthetic data, torchvision detectors, Structural KD, COCO box AP.

Conventions:

* ``num_classes`` counts the background (torchvision's convention): K foreground classes -> ``K + 1``. It is
  what ``build_detector`` takes and what checkpoints store, so a teacher trained on other data is refused.
* Model specs (``model:`` / ``student:``): ``arch`` (``fasterrcnn`` | ``retinanet``), ``backbone``, ``min_size``
  and ``max_size`` (required: the detector's own resize; for images pre-resized to longest side ``S`` by
  ``data.image_size`` use ``max_size: S`` and ``min_size:`` the shorter side), ``options`` for the rest
  (``fpn_channels``, ``anchor_base``, ``preset``, ... see ``kdlab.models.detection.build_detector``).
* Training: every recipe, teacher or student, is one :class:`~kdlab.methods.skd.StructuralKD` step (without a
  teacher: the detector's losses alone). Batches: ``data.batch_size`` images, shuffled per epoch, horizontal
  flip with p = 0.5 when ``data.augment``; the last incomplete batch is dropped (as for classification).
* Model selection (:mod:`kdlab.train.selection`): with ``data.val_size > 0`` the engine keeps the epoch with the
  best validation **AP50**; without a validation split the last epoch is kept.
* Evaluation: COCO box AP / AP50 / AP75 / APs / APm / APl in percent (pycocotools; COCO jsons: crowd regions
  ignored, size bins from the annotations' ``area``) on the test split (or the validation split with
  ``eval.split: val``); ``eval.n`` caps the number of images (a fixed, ``eval.seed``-ed
  selection), ``data.test_subset`` selects at load time. A size range without ground truth is ``null``. Images per
  forward pass: ``data.batch_size`` (``eval.batch_size``'s default is sized for CIFAR attacks).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from kdlab.config.names import WEAK_AP50
from kdlab.config.recipe import Recipe
from kdlab.config.sections import ModelSpec
from kdlab.errors import KdlabError
from kdlab.tasks.base import EvalOptions, EvalReport, EvalTarget, TrainingSetup, training_cost
from kdlab.tasks.detection_eval import METRICS, evaluate_detector
from kdlab.train.engine import DataSource
from kdlab.train.selection import selects_on_validation


def load_data(recipe: Recipe):
    """The recipe's detection splits (subset/val/test selection fixed by ``data.split_seed``, not the run seed)."""
    from kdlab.data.detection import load_detection_data

    spec = recipe.data
    return load_detection_data(
        spec.dataset,
        spec.root,
        image_size=spec.image_size,
        seed=spec.split_seed,
        subset=spec.subset,
        val_size=spec.val_size,
        test_subset=spec.test_subset,
        train_split=spec.train_split,
        test_split=spec.test_split,
        annotations=spec.annotations,
        test_annotations=spec.test_annotations,
        num_images=spec.num_images,
        num_test_images=spec.num_test_images,
        in_memory=spec.in_memory,
    )


def _check_spec(spec: ModelSpec, role: str) -> None:
    if spec.min_size is None or spec.max_size is None:
        raise KdlabError(
            f"detection {role} needs min_size and max_size (the detector's resize): e.g. for data.image_size 256 "
            f"on 640x480 images set {role}.min_size: 192 and {role}.max_size: 256"
        )


def build_detection_model(spec: ModelSpec, num_classes: int, role: str = "model") -> nn.Module:
    from kdlab.models.factory import build_model

    _check_spec(spec, role)
    return build_model("detection", spec.arch, num_classes, spec.build_options())


def _selection(dataset, n: int, seed: int):
    """At most ``n`` images of ``dataset``: a fixed, seeded choice (the same for every model), in dataset order."""
    if n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return dataset.subset(sorted(order.tolist()))


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def evaluate_split(model: nn.Module, data, recipe: Recipe, batch_size: int | None = None) -> dict[str, Any]:
    """COCO box AP (percent) of ``model`` on the recipe's evaluation split; NaN (no ground truth) -> None."""
    spec = recipe.eval
    if spec.split == "val":
        if data.val is None:
            raise KdlabError("eval.split is val but the recipe has no validation split: set data.val_size")
        dataset = data.val
    else:
        if data.test is None:
            raise KdlabError(
                "the recipe has no test split to evaluate: set data.test_split (voc) or data.test_annotations (coco)"
            )
        dataset = data.test
    dataset = _selection(dataset, spec.n, spec.seed)
    metrics = evaluate_detector(model, dataset, batch_size=batch_size or recipe.data.batch_size)
    evaluation: dict[str, Any] = {name: _finite(metrics[name]) for name in METRICS}
    evaluation["eval_n"] = len(dataset)
    evaluation["flag"] = weak_detector_reason(evaluation)
    return evaluation


def weak_detector_reason(evaluation: dict[str, Any]) -> str:
    """``"weak: ..."`` for a detector whose AP50 is under :data:`WEAK_AP50` % (e.g. one whose class scores barely
    depend on the image), else ``""``: a teacher like that transfers nothing, a student like that measures
    nothing. The ablation tables mark its cell ``⚠ weak``."""
    ap50 = evaluation.get("AP50")
    if ap50 is None or ap50 >= WEAK_AP50:
        return ""
    return f"weak: AP50 {ap50:.1f} % on {evaluation.get('eval_n')} images (under {WEAK_AP50:g} %: it finds almost nothing)"


def _drop_last(batches, batch_size: int):
    for images, targets in batches:
        if len(images) == batch_size:
            yield images, targets


def training_batches(train, recipe: Recipe, device: torch.device):
    """``batches(generator)`` for the engine: shuffled, flipped with ``data.augment``, the last incomplete batch
    dropped, on ``device``. Streaming data (``in_memory: false``) on cuda is read by ``data.workers``
    DataLoader processes into pinned memory (``kdlab.data.detection.loader``: the same batches); otherwise, and
    always on the CPU, in the training process, as before."""
    from kdlab.data.detection import ImageFiles, iterate_detection_batches
    from kdlab.data.detection.loader import batch_to_device, default_workers, stream_detection_batches

    batch_size, augment = recipe.data.batch_size, recipe.data.augment
    drop_last = len(train) >= batch_size
    streaming = device.type == "cuda" and isinstance(train.images, ImageFiles)
    workers = recipe.data.workers if recipe.data.workers is not None else default_workers()

    def batches(generator: torch.Generator):
        if streaming:
            epoch = stream_detection_batches(train, batch_size, generator, shuffle=True, augment=augment,
                                             workers=workers, pin_memory=True)
        else:
            epoch = iterate_detection_batches(train, batch_size, generator, shuffle=True, augment=augment)
        if device.type != "cpu":
            epoch = (batch_to_device(batch, device) for batch in epoch)
        return _drop_last(epoch, batch_size) if drop_last else epoch

    return batches


class DetectionTask:
    name = "detection"

    def load_data(self, recipe: Recipe):
        return load_data(recipe)

    def num_classes(self, data) -> int:
        return data.num_classes + 1  # + background

    def setup(self, recipe: Recipe, data, teacher: nn.Module | None) -> TrainingSetup:
        from kdlab.methods.registry import build_method
        from kdlab.runtime.acceleration import prepare_models

        num_classes = self.num_classes(data)
        role = "student" if recipe.is_distillation else "model"
        device = recipe.torch_device()
        model = build_detection_model(recipe.trained_model, num_classes, role).to(device)
        teacher = teacher.to(device) if teacher is not None else None
        # A training recipe runs the same step without a teacher (the detector's losses alone).
        method = build_method(recipe.method, model, teacher)
        prepare_models(method, [model, teacher], recipe.train)

        train, batch_size = data.train, recipe.data.batch_size
        if len(train) == 0:
            raise KdlabError("the detection train split is empty: check data.root / data.train_split / data.subset")
        source = DataSource(
            batches=training_batches(train, recipe, device),
            batches_per_epoch=len(train) // batch_size if len(train) >= batch_size else 1,
            batch_size=lambda batch: len(batch[0]),
        )
        validate = None
        if selects_on_validation(recipe, data.val is not None):
            def validate() -> dict[str, float]:
                ap50 = evaluate_detector(model, data.val, batch_size=batch_size)["AP50"]
                return {"AP50": 0.0 if math.isnan(ap50) else ap50}

        return TrainingSetup(model=model, method=method, source=source, validate=validate,
                             num_classes=num_classes, classes=list(data.class_names),
                             summary={"train_images": len(train), "backbone": recipe.trained_model.backbone,
                                      **training_cost(method)})

    def evaluate(self, model: nn.Module, data, recipe: Recipe, progress=None) -> dict[str, Any]:
        return evaluate_split(model, data, recipe)  # COCO AP over the split: no per-batch progress yet

    def evaluate_checkpoint(self, target: EvalTarget, options: EvalOptions) -> EvalReport:
        return evaluate_detection_checkpoint(target, options)


# --------------------------------------------------------------------------- kdlab eval RUN (detection runs)
def _refuse_attack_options(**given: object) -> None:
    """A detection run is scored by COCO AP only: say so instead of silently ignoring attack options."""
    named = [f"--{name.replace('_', '-')}" for name, value in given.items()
             if value is not None and value is not False and value != []]
    if named:
        raise KdlabError(f"{', '.join(named)} apply to classification runs; a detection run is evaluated by "
                         "COCO box AP on its recipe's test split: drop them")


def evaluate_detection_checkpoint(target: EvalTarget, options: EvalOptions) -> EvalReport:
    """``kdlab eval RUN_DIR`` for a detection run: COCO box AP of its best.pt on its recipe's eval split.

    Appends one row to ``options.out`` (model, checkpoint SHA-256 prefix, dataset, split, n, AP metrics, wall
    time, images/s, git commit). ``attack`` is ``"coco-box-ap"`` so the row sits beside attack rows in the same
    CSV. Images per forward pass: ``options.batch_size`` capped at the recipe's ``data.batch_size`` (the CLI
    default of 256 is sized for CIFAR attacks). Attack options are refused, never silently ignored.
    """
    from kdlab.models.files import file_digest, load_model
    from kdlab.results import append_rows, provenance, results_folder

    o = options
    _refuse_attack_options(attack=o.attacks, eps=o.eps, alpha=o.alpha, steps=o.steps, restarts=o.restarts,
                           sanity=o.sanity, eps_sweep=o.eps_sweep, data=o.data)
    recipe = target.recipe
    if recipe is None:
        raise KdlabError(f"{target.checkpoint}: detection evaluation needs the run's recipe.yaml beside it")
    task = DetectionTask()
    data = task.load_data(recipe)
    model, payload = load_model(target.checkpoint, expected_classes=task.num_classes(data))
    started = time.perf_counter()
    evaluation = evaluate_split(model, data, recipe, batch_size=max(1, min(o.batch_size, recipe.data.batch_size)))
    seconds = time.perf_counter() - started
    info = provenance(diffs=results_folder(o.out))  # a dirty tree's patch: <results>/diffs/<git_diff_sha256>.patch
    row = {
        "model": target.label,
        "checkpoint": str(target.checkpoint),
        "checkpoint_sha256": file_digest(target.checkpoint),
        "arch": payload.get("arch"),
        "backbone": payload.get("options", {}).get("backbone"),
        "dataset": recipe.data.dataset,
        "attack": "coco-box-ap",
        "split": recipe.eval.split,
        "n": evaluation["eval_n"],
        **{name: evaluation[name] for name in METRICS},
        "wall_seconds": round(seconds, 2),
        "images_per_s": round(evaluation["eval_n"] / seconds, 2) if seconds > 0 else None,
        "git_commit": info["git_commit"],
        "git_diff_sha256": info["git_diff_sha256"],
        "torch": info["versions"]["torch"],
        "evaluated_at": info["finished_at"],
    }
    append_rows(o.out, [row])
    return EvalReport([row])
