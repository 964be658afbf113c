"""What a recipe's data will be, known without loading it: class count, image size and split sizes.

The plan check (:mod:`kdlab.check.plan`) needs these to build the models and to refuse degenerate splits before any
work, but must not decode images. Each dataset is sized from the facts table (:mod:`kdlab.config.datasets`) where
the dataset fixes its sizes (``cifar10``/``cifar100``: 50,000 / 10,000 images of 32x32, 10 / 100 classes, once
their folder is found), else by its own ``plan_sizes`` beside its loader (:data:`kdlab.data.loaders.PLAN_SIZES`),
from what is cheap to read: ``embedded``: the label arrays of the packaged asset (not its JPEG bytes);
``imagefolder``: the class folders and file names, and one image header for the size; ``synthetic``:
``num_images`` and its three shapes; ``voc``: the split files and the object names of the annotation XMLs;
``coco``: the json's image and category lists. Every problem is returned as one line naming the key and the fix,
never raised, so the plan check can report them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlab.config.datasets import DATASETS, DEFAULT_ROOT
from kdlab.errors import KdlabError

# The image side planned for data whose images keep their own sizes (voc, coco without data.image_size).
UNSIZED_SIDE = 512


@dataclass(frozen=True)
class DataFacts:
    """``classes``: the model's outputs (detection: foreground classes + background); ``image_shape``: C, H, W
    of a training image; ``train``/``val``/``test``: images per split after val_size, subset, test_subset."""

    classes: int
    image_shape: tuple[int, int, int]
    train: int
    val: int
    test: int | None

    def split(self, name: str) -> int | None:
        return self.val if name == "val" else self.test


def data_facts(recipe: Any) -> tuple[DataFacts | None, list[str]]:
    """The recipe's :class:`DataFacts`, or ``None`` and the problems that stop the data from loading."""
    spec = recipe.data
    name = spec.dataset
    facts = DATASETS[name]
    detection = recipe.task == "detection"
    if detection != (facts.task == "detection"):
        fix = "task: detection" if not detection else "task: classification"
        return None, [(f"data.dataset: {name} is a {'detection' if not detection else 'classification'} dataset "
                      f"but the recipe's task is {recipe.task}: set {fix} or choose another data.dataset")]
    if facts.fixed_sizes:  # the table's sizes, once the dataset's folder is found
        root = Path(spec.root if spec.root is not None else DEFAULT_ROOT)
        if facts.folder is not None and not spec.download and not (root / facts.folder).is_dir():
            return None, [(f"data.root: {name} not found under {root} (no {facts.folder} folder): set data.root to "
                          f"the folder containing {facts.folder}, or data.download: true (needs internet)")]
        total, test, classes, shape = facts.train_images, facts.test_images, facts.classes, facts.image_shape
    else:
        from kdlab.data.loaders import PLAN_SIZES

        try:
            total, test, classes, shape = PLAN_SIZES[name](spec)
        except KdlabError as error:
            return None, [str(error)]
        if shape is None:  # images kept at their own sizes: planned at data.image_size
            side = spec.image_size or UNSIZED_SIDE
            shape = (3, side, side)
    return _sized(recipe, total, test, classes + detection, shape)


def _sized(recipe: Any, total: int, test: int | None, classes: int,
           shape: tuple[int, int, int]) -> tuple[DataFacts | None, list[str]]:
    """Apply val_size, subset and test_subset; the problems of degenerate sizes (as :mod:`kdlab.data.sizes`)."""
    spec = recipe.data
    problems = []
    if spec.val_size and spec.val_size >= total:
        problems.append(f"data.val_size ({spec.val_size}) leaves none of the {total} training images of "
                        f"{spec.dataset}: lower data.val_size")
    train = total - spec.val_size
    if spec.subset is not None:
        if spec.subset > max(train, 0):
            problems.append(f"data.subset ({spec.subset}) is more than the {max(train, 0)} training images of "
                            f"{spec.dataset}: lower data.subset or unset it")
        train = min(train, spec.subset)
    if recipe.task == "classification" and 0 < train < spec.batch_size:
        held = f" after data.val_size ({spec.val_size})" if spec.val_size else ""
        problems.append(f"the training split of {spec.dataset} has {train} images{held}, fewer than one batch "
                        f"(data.batch_size {spec.batch_size}), so no step would run: set data.batch_size to at "
                        f"most {train}")
    if recipe.task == "classification" and spec.subset is not None and spec.subset < classes:
        problems.append(f"data.subset ({spec.subset}) is fewer than the {classes} classes, so some classes have no "
                        f"training images: raise data.subset to at least {classes}")
    if test is not None and spec.test_subset is not None:
        if spec.test_subset > test:
            problems.append(f"data.test_subset ({spec.test_subset}) is more than the {test} test images of "
                            f"{spec.dataset}: lower it or unset it for the whole test split")
        test = min(test, spec.test_subset)
    facts = DataFacts(classes=classes, image_shape=shape, train=max(train, 0), val=spec.val_size, test=test)
    from kdlab.config.sections import EvalSpec

    evaluated = facts.split(recipe.eval.split)
    if recipe.eval.split == "val" and not spec.val_size:
        problems.append("eval.split is val but the recipe has no validation split: set data.val_size")
    elif evaluated is not None and recipe.eval.n != EvalSpec.model_fields["n"].default and recipe.eval.n > evaluated:
        problems.append(f"eval.n ({recipe.eval.n}) is more than the {evaluated} images of the {recipe.eval.split} "
                        f"split of {spec.dataset}: set eval.n to at most {evaluated}")
    return (None if problems else facts), problems
