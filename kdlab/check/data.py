"""What a recipe's data will be, known without loading it: class count, image size and split sizes.

The plan check (:mod:`kdlab.check.plan`) needs these to build the models and to refuse degenerate splits before any
work, but must not decode images: each dataset is sized from what is cheap to read. ``cifar10``/``cifar100``:
the published split sizes (50,000 / 10,000 images of 32x32, 10 / 100 classes) once their folder is found;
``embedded``: the label arrays of the packaged asset (not its JPEG bytes); ``imagefolder``: the class folders
and file names, and one image header for the size; ``synthetic``: ``num_images`` and its three shapes;
``voc``: the split files and the object names of the annotation XMLs; ``coco``: the json's image and
category lists. Every problem is returned as one line naming the key and the fix, never raised, so the plan
check can report them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlab.errors import KdlabError

CIFAR_SIZES = {"cifar10": (50_000, 10_000, 10, "cifar-10-batches-py"),
               "cifar100": (50_000, 10_000, 100, "cifar-100-python")}


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


def _image_folder(root: str | None) -> tuple[int, int, int, tuple[int, int, int]]:
    """(train images, test images, classes, image shape) of ``root/{train,test}/<class>/*``, listed as the
    loader lists them (:func:`kdlab.data.classification.list_imagefolder_split`); only one image's header is
    read."""
    from kdlab.data.classification import list_imagefolder_split

    if root is None:
        raise KdlabError("data.root: dataset imagefolder needs data.root, a folder with train/<class>/* and "
                         "test/<class>/*: set data.root")
    base = Path(root)
    try:
        classes, train_files, _ = list_imagefolder_split(base, "train", None)
        _, test_files, _ = list_imagefolder_split(base, "test", classes)
    except KdlabError as error:
        raise KdlabError(f"data.root: {error}") from None
    from PIL import Image  # reads the header only: the size, not the pixels

    first = train_files[0]
    try:
        with Image.open(first) as image:
            width, height = image.size
            channels = len(image.getbands())
    except OSError as error:
        raise KdlabError(f"data.root: cannot read image {first} ({error}): replace or remove the file") from None
    return len(train_files), len(test_files), len(classes), (3 if channels in (3, 4) else channels, height, width)


def _embedded() -> tuple[int, int, int]:
    import numpy as np

    from kdlab.data.classification import EMBEDDED_ASSET

    if not EMBEDDED_ASSET.is_file():
        raise KdlabError(f"data.dataset: the embedded CIFAR-10 asset {EMBEDDED_ASSET} is missing: reinstall kdlab")
    with np.load(EMBEDDED_ASSET, allow_pickle=False) as archive:  # only these arrays are read
        split = archive["split"]
        classes = len(archive["classes"])
    return int((split == 0).sum()), int((split == 1).sum()), classes


def _voc(spec: Any) -> tuple[int, int | None, int]:
    from kdlab.data.detection.voc import voc_class_names, voc_root

    if spec.root is None:
        raise KdlabError("data.root: dataset voc needs data.root, the folder with Annotations/, JPEGImages/ and "
                         "ImageSets/Main/: set data.root")
    try:
        voc = voc_root(spec.root)
        names = voc_class_names(voc)
    except KdlabError as error:
        raise KdlabError(f"data.root: {error}") from None

    def count(split: str, key: str) -> int:
        path = voc / "ImageSets" / "Main" / f"{split}.txt"
        if not path.is_file():
            available = sorted(p.stem for p in (voc / "ImageSets" / "Main").glob("*.txt"))
            raise KdlabError(f"data.{key}: VOC split file '{path}' not found: choose a split among "
                             f"{available or 'none'}")
        return sum(1 for line in path.read_text().splitlines() if line.strip())

    return count(spec.train_split, "train_split"), count(spec.test_split, "test_split"), len(names)


def _coco(spec: Any) -> tuple[int, int | None, int]:
    base = Path(spec.root) if spec.root is not None else None
    if base is not None and not base.is_dir():
        raise KdlabError(f"data.root: COCO root '{spec.root}' does not exist: point data.root at the image folder")
    if spec.annotations is None:
        raise KdlabError("data.annotations: dataset coco needs the COCO json of the train split: set "
                         "data.annotations")

    def read(name: str, key: str) -> dict:
        from kdlab.data.detection import resolve_annotation_path

        path = resolve_annotation_path(base, name)  # as the loader resolves it
        if not path.is_file():
            raise KdlabError(f"data.{key}: COCO annotation file '{path}' not found: fix data.{key}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise KdlabError(f"data.{key}: '{path}' is not valid JSON ({error.msg}): fix the file") from None

    train = read(spec.annotations, "annotations")
    test = read(spec.test_annotations, "test_annotations") if spec.test_annotations else None
    return (len(train.get("images", [])), len(test.get("images", [])) if test else None,
            len(train.get("categories", [])))


def data_facts(recipe: Any) -> tuple[DataFacts | None, list[str]]:
    """The recipe's :class:`DataFacts`, or ``None`` and the problems that stop the data from loading."""
    spec = recipe.data
    name = spec.dataset
    detection = recipe.task == "detection"
    if detection != (name in ("synthetic", "voc", "coco")):
        fix = "task: detection" if not detection else "task: classification"
        return None, [(f"data.dataset: {name} is a {'detection' if not detection else 'classification'} dataset "
                      f"but the recipe's task is {recipe.task}: set {fix} or choose another data.dataset")]
    try:
        if name in CIFAR_SIZES:
            total, test, classes, folder = CIFAR_SIZES[name]
            root = Path(spec.root if spec.root is not None else "data")
            if not spec.download and not (root / folder).is_dir():
                return None, [(f"data.root: {name} not found under {root} (no {folder} folder): set data.root to the "
                              f"folder containing {folder}, or data.download: true (needs internet)")]
            shape = (3, 32, 32)
        elif name == "embedded":
            total, test, classes = _embedded()
            shape = (3, 32, 32)
        elif name == "imagefolder":
            total, test, classes, shape = _image_folder(spec.root)
        elif name == "synthetic":
            size = spec.image_size or 128
            if size < 16:
                return None, [(f"data.image_size: synthetic shapes need images of at least 16 px (got {size}): "
                              "set data.image_size to 16 or more")]
            total, test, classes = spec.num_images, spec.num_test_images or max(16, spec.num_images // 4), 3
            shape = (3, size, size)
        elif name == "voc":
            total, test, classes = _voc(spec)
            shape = (3, spec.image_size or 512, spec.image_size or 512)
        else:  # coco
            total, test, classes = _coco(spec)
            shape = (3, spec.image_size or 512, spec.image_size or 512)
    except KdlabError as error:
        return None, [str(error)]
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
