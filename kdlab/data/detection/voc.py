"""Pascal VOC-layout detection sets (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``),
e.g. BCCD."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kdlab.data.detection.dataset import (
    DetectionDataset,
    clean_boxes,
    image_files_or_tensors,
    make_target,
    original_size,
    scale_boxes,
    target_size,
)
from kdlab.errors import KdlabError

__all__ = ["load_voc", "plan_sizes", "voc_class_names", "voc_root"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def voc_root(root: str | Path) -> Path:
    """``root`` if it holds ``Annotations/``, else its one child that does (``bccd/`` -> ``bccd/BCCD``)."""
    path = Path(root)
    if not path.is_dir():
        raise KdlabError(
            f"VOC root '{root}' does not exist: point data.root at the folder holding "
            "Annotations/, JPEGImages/ and ImageSets/Main/"
        )
    if (path / "Annotations").is_dir():
        return path
    children = [
        c for c in sorted(path.iterdir()) if (c / "Annotations").is_dir() and (c / "JPEGImages").is_dir()
    ]
    if len(children) == 1:
        return children[0]
    raise KdlabError(
        f"'{root}' is not a Pascal VOC folder: expected {root}/Annotations/*.xml, {root}/JPEGImages/*.jpg "
        f"and {root}/ImageSets/Main/<split>.txt (or exactly one subfolder laid out that way)"
    )


def _parse_voc_xml(path: Path) -> dict[str, Any]:
    try:
        tree = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise KdlabError(f"annotation '{path}' is not valid XML ({error}): fix or remove it") from None
    objects = []
    for obj in tree.findall("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if box is None:
            continue
        try:
            coords = [float(box.findtext(key) or "nan") for key in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise KdlabError(f"annotation '{path}': object '{name}' has a non-numeric bndbox") from None
        if any(math.isnan(c) for c in coords):
            raise KdlabError(f"annotation '{path}': object '{name}' misses xmin/ymin/xmax/ymax in its bndbox")
        objects.append((name, coords))
    return {"filename": (tree.findtext("filename") or "").strip(), "objects": objects}


def voc_class_names(root: str | Path) -> list[str]:
    """All object names in ``Annotations/*.xml`` (every split), sorted: the deterministic VOC class list."""
    voc = voc_root(root)
    names = {
        name
        for xml in sorted((voc / "Annotations").glob("*.xml"))
        for name, _ in _parse_voc_xml(xml)["objects"]
    }
    if not names:
        raise KdlabError(f"no annotated objects under '{voc / 'Annotations'}': is this a VOC detection set?")
    return sorted(names)


def _voc_image_path(voc: Path, image_id: str, filename: str) -> Path:
    folder = voc / "JPEGImages"
    candidates = [folder / f"{image_id}{ext}" for ext in IMAGE_EXTENSIONS]
    if filename:
        candidates.insert(0, folder / filename)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise KdlabError(f"image for '{image_id}' not found: expected {folder / (image_id + '.jpg')}")


def load_voc(
    root: str | Path,
    split: str,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    in_memory: bool = True,
) -> DetectionDataset:
    """Load one split of a Pascal VOC-layout dataset (e.g. BCCD: ``train``/``val``/``trainval``/``test``).

    ``class_names`` fixes the label order (label ``i`` = ``class_names[i-1]``); by default it is the
    sorted set of object names across *all* annotation files, so every split shares one mapping.
    ``image_id`` is the position in the split file. Box coordinates are taken as written in the XML.
    """
    voc = voc_root(root)
    split_file = voc / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        available = sorted(p.stem for p in (voc / "ImageSets" / "Main").glob("*.txt"))
        raise KdlabError(
            f"VOC split file '{split_file}' not found: choose a split among {available or 'none'} "
            "(ImageSets/Main/<split>.txt lists one image id per line)"
        )
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    names = list(class_names) if class_names is not None else voc_class_names(voc)
    index = {name: i + 1 for i, name in enumerate(names)}
    paths, originals, targets = [], [], []
    for position, image_id in enumerate(ids):
        xml = voc / "Annotations" / f"{image_id}.xml"
        if not xml.is_file():
            raise KdlabError(
                f"annotation '{xml}' listed in {split_file.name} is missing: add it or drop the id"
            )
        record = _parse_voc_xml(xml)
        path = _voc_image_path(voc, image_id, record["filename"])
        original = original_size(path)
        boxes, labels = [], []
        for name, coords in record["objects"]:
            if name not in index:
                raise KdlabError(
                    f"{xml}: class '{name}' is not in class_names {names}: add it to the class list"
                )
            boxes.append(coords)
            labels.append(index[name])
        boxes_t, keep = clean_boxes(boxes, original[1], original[0], str(xml))
        boxes_t = scale_boxes(boxes_t[keep], original, target_size(*original, image_size))
        paths.append(path)
        originals.append(original)
        targets.append(make_target(boxes_t, torch.as_tensor(labels, dtype=torch.int64)[keep], position))
    images = image_files_or_tensors(paths, originals, image_size, in_memory)
    return DetectionDataset(images, targets, names, ids)


def plan_sizes(spec: Any) -> tuple[int, int | None, int, None]:
    """(train images, test images, classes, None) of a recipe's VOC folder: the split files' lines and the object
    names of the annotation XMLs; no image is read, so the image shape is unknown (None)."""
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

    return count(spec.train_split, "train_split"), count(spec.test_split, "test_split"), len(names), None
