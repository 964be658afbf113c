"""``imagefolder``: a folder of encoded images by class, ``root/train/<class>/*`` and ``root/test/<class>/*``.

E.g. ../shared/data/cifar10-jpeg. The classes are the folders of ``train/`` (sorted); the subset is chosen from
the file list first, so only the chosen files are read and decoded. The plan check sizes it from the file lists
and one image's header (:func:`plan_sizes`); its normalisation statistics are measured on the training split
(:mod:`kdlab.models.normalization`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from kdlab.data.classification import ClassificationData, ImageSet
from kdlab.data.decode import read_files
from kdlab.data.splits import plan_splits
from kdlab.errors import KdlabError

__all__ = ["list_imagefolder_split", "load_imagefolder", "plan_sizes"]

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


def list_imagefolder_split(root: Path, split: str, classes: list[str] | None) -> tuple[list[str], list[str], list[int]]:
    """(classes, files, labels) of ``root/split/<class>/*``; ``classes`` None: the folders found (train)."""
    folder = root / split
    if not folder.is_dir():
        raise KdlabError(f"imagefolder split '{split}' not found: expected {folder}/<class>/<image> "
                         f"(data.root must contain train/ and test/ folders)")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        if not found:
            raise KdlabError(f"no class folders in {folder}: expected {folder}/<class>/<image>")
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise KdlabError(f"{folder} has class folders {extra} that train/ lacks: use the same classes in both")
    files, labels = [], []
    for label, cls in enumerate(classes):
        class_dir = folder / cls
        if not class_dir.is_dir():
            continue
        with os.scandir(class_dir) as entries:
            names = sorted(e.name for e in entries if e.name.lower().endswith(_IMAGE_EXTENSIONS) and e.is_file())
        if split == "train" and not names:
            raise KdlabError(f"class folder {class_dir} has no images (.jpg, .png, ...): add images or remove it")
        prefix = os.path.join(str(class_dir), "")
        files += [prefix + n for n in names]  # plain strings: 50k Path objects would cost ~1 s
        labels += [label] * len(names)
    if not files:
        raise KdlabError(f"no images found under {folder}: expected {folder}/<class>/<image>")
    return classes, files, labels


def load_imagefolder(dataset: str, root: str | None, download: bool, subset, val_size, test_subset,
                     seed) -> ClassificationData:
    """The image folder at ``root`` (``dataset`` and ``download``: unused, the loader signature of
    :mod:`kdlab.data.loaders`)."""
    if root is None:
        raise KdlabError("dataset imagefolder needs data.root: a folder with train/<class>/* and test/<class>/*")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise KdlabError(f"imagefolder root {base} does not exist: set data.root to a folder with train/ and test/")
    classes, train_files, train_labels_list = list_imagefolder_split(base, "train", None)
    _, test_files, test_labels_list = list_imagefolder_split(base, "test", classes)
    train_labels = torch.tensor(train_labels_list, dtype=torch.int64)
    test_labels = torch.tensor(test_labels_list, dtype=torch.int64)
    train_idx, val_idx, test_idx = plan_splits(f"imagefolder {base}", train_labels, test_labels, len(classes),
                                               subset, val_size, test_subset, seed)

    def load(files: list[str], labels: torch.Tensor, idx: torch.Tensor) -> ImageSet:
        return ImageSet(read_files([files[i] for i in idx.tolist()]), labels[idx])

    train = load(train_files, train_labels, train_idx)
    val = load(train_files, train_labels, val_idx) if len(val_idx) else None
    test = load(test_files, test_labels, test_idx)
    return ClassificationData(train, val, test, classes, name="imagefolder")


def plan_sizes(spec: Any) -> tuple[int, int, int, tuple[int, int, int]]:
    """(train images, test images, classes, image shape) of ``data.root``'s ``train/<class>/*`` and
    ``test/<class>/*``, listed as the loader lists them (:func:`list_imagefolder_split`); only one image's header
    is read."""
    root = spec.root
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

