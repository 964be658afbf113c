"""Detection data: Pascal VOC, COCO-format JSON and a synthetic-shapes set.

Representation (what every loader returns and what torchvision detectors consume):

* ``DetectionDataset[i]`` is a :class:`DetectionSample` ``(image, target)``;
* ``image``: float32 tensor ``3 x H x W`` with values in ``[0, 1]`` (torchvision's detection transform
  normalises with the ImageNet mean/std *inside* the model, so inputs are never normalised here);
* ``target``: ``{"boxes": float32 N x 4 (x1, y1, x2, y2) in absolute pixels of the stored image,
  "labels": int64 N (1-based: 1..K; 0 is torchvision's background class), "image_id": int}``: the
  training target, without crowd regions.

The evaluation ground truth (:meth:`DetectionDataset.ground_truth`, what COCO AP is computed against) adds,
for COCO jsons: ``"area"`` (float64 N, the annotation's ``area`` -- the segment's, which decides the
small/medium/large bin -- scaled with the image) and the crowd regions (``iscrowd=1``) as ``"crowd_boxes"``
(M x 4), ``"crowd_labels"`` (M) and ``"crowd_area"`` (M). pycocotools ignores detections matched to a crowd
region (neither true nor false positives); the detector never trains on them.

By default images are decoded once and kept in memory as uint8 (BCCD: 364 images at 640x480 is ~330 MB,
or ~50 MB at ``image_size=256``); with ``in_memory=False`` (VOC and COCO) only paths and sizes are kept and
each image is decoded when it is used, so COCO train2017 (118k images, ~110 GB as uint8 at 800x1333)
needs no more memory than its annotations. ``image_size`` resizes each image so its *longest* side equals ``image_size``
(aspect ratio kept, boxes scaled with it); give the detector ``max_size=image_size`` and ``min_size`` equal
to the shorter side so its own transform does not resize again.

Degenerate boxes (zero or negative width or height after clipping to the image) are dropped with a
:class:`DegenerateBoxWarning` naming the file and the count; loading never crashes on them.
"""

from __future__ import annotations

import json
import math
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.errors import KdlabError

__all__ = [
    "DATASETS",
    "DegenerateBoxWarning",
    "DetectionData",
    "DetectionDataset",
    "DetectionSample",
    "ImageFiles",
    "horizontal_flip",
    "iterate_detection_batches",
    "load_coco",
    "load_detection_data",
    "load_voc",
    "make_synthetic_shapes",
    "resize_to_max_side",
    "voc_class_names",
]

DATASETS = ("voc", "coco", "synthetic")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


class DegenerateBoxWarning(UserWarning):
    """A box with zero or negative width/height was dropped while loading annotations."""


class DetectionSample(NamedTuple):
    image: Tensor  # float32 3 x H x W in [0, 1]
    target: dict[str, Any]  # boxes (N x 4 xyxy float32), labels (N int64, 1-based), image_id (int)


def _empty_boxes() -> Tensor:
    return torch.zeros((0, 4), dtype=torch.float32)


def make_target(boxes: Any, labels: Any, image_id: int) -> dict[str, Any]:
    boxes_t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels_t = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    return {"boxes": boxes_t, "labels": labels_t, "image_id": int(image_id)}


class ImageFiles(Sequence[Tensor]):
    """Images on disk, decoded (and resized to longest side ``image_size``) when indexed: a lazy stand-in
    for a list of uint8 ``3 x H x W`` tensors. ``originals`` are the files' ``(height, width)``, read
    from their headers when the split was loaded (the boxes were scaled with them)."""

    def __init__(self, paths: Sequence[Path], originals: Sequence[tuple[int, int]], image_size: int | None) -> None:
        self.paths = list(paths)
        self.originals = list(originals)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:  # type: ignore[override]
        path, expected = self.paths[index], self.originals[index]
        pil, original = _decode_image(path, self.image_size)
        if original != expected:
            raise KdlabError(f"image '{path}' changed size since its split was loaded ({expected} -> {original}): "
                             "reload the data")
        return _to_uint8_tensor(pil, original, self.image_size)

    def select(self, indices: Sequence[int]) -> ImageFiles:
        return ImageFiles([self.paths[i] for i in indices], [self.originals[i] for i in indices], self.image_size)


def _image_files_or_tensors(paths: list[Path], originals: list[tuple[int, int]], image_size: int | None,
                            in_memory: bool) -> Sequence[Tensor]:
    files = ImageFiles(paths, originals, image_size)
    return [files[i] for i in range(len(files))] if in_memory else files


def _original_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the image header alone (no decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            return handle.height, handle.width
    except (OSError, UnidentifiedImageError) as error:
        raise KdlabError(f"cannot decode image '{path}' ({error}): replace or remove the file") from None


class DetectionDataset:
    """A detection split: uint8 images (a list in memory, or :class:`ImageFiles` read on use), targets
    and class names.

    Label ``i`` (1-based) is ``class_names[i - 1]``.
    """

    def __init__(
        self,
        images: Sequence[Tensor],
        targets: Sequence[dict[str, Any]],
        class_names: Sequence[str],
        names: Sequence[str] | None = None,
    ) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images if isinstance(images, ImageFiles) else list(images)
        self.targets = list(targets)
        self.class_names = list(class_names)
        self.names = list(names) if names is not None else [str(t["image_id"]) for t in self.targets]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> DetectionSample:
        """The image in ``[0, 1]`` and its training target (``boxes``, ``labels``, ``image_id``; no crowd)."""
        target = self.targets[index]
        image = self.images[index].to(torch.float32).div_(255.0)
        return DetectionSample(
            image,
            {
                "boxes": target["boxes"].clone(),
                "labels": target["labels"].clone(),
                "image_id": target["image_id"],
            },
        )

    def ground_truth(self, index: int) -> dict[str, Any]:
        """Image ``index``'s evaluation ground truth: the training target plus, where the annotations give
        them, ``area`` and the crowd regions (``crowd_boxes``, ``crowd_labels``, ``crowd_area``)."""
        return {k: v.clone() if isinstance(v, Tensor) else v for k, v in self.targets[index].items()}

    @property
    def num_classes(self) -> int:
        """Foreground classes K (a torchvision Faster R-CNN needs ``num_classes=K + 1``)."""
        return len(self.class_names)

    @property
    def num_boxes(self) -> int:
        return sum(int(t["boxes"].shape[0]) for t in self.targets)

    def subset(self, indices: Sequence[int]) -> DetectionDataset:
        indices = [int(i) for i in indices]
        images = self.images
        return DetectionDataset(
            images.select(indices) if isinstance(images, ImageFiles) else [images[i] for i in indices],
            [self.targets[i] for i in indices],
            self.class_names,
            [self.names[i] for i in indices],
        )

    def __repr__(self) -> str:
        return f"DetectionDataset({len(self)} images, {self.num_boxes} boxes, classes={self.class_names})"


@dataclass
class DetectionData:
    """Train/val/test splits of one detection dataset. ``val``/``test`` are None when not available."""

    train: DetectionDataset
    val: DetectionDataset | None
    test: DetectionDataset | None
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """Foreground classes K; torchvision Faster R-CNN / RetinaNet are built with ``K + 1``."""
        return len(self.class_names)


# --------------------------------------------------------------------------- image helpers
def _target_size(height: int, width: int, image_size: int | None) -> tuple[int, int]:
    """``(new_h, new_w)`` with the longest side equal to ``image_size`` (unchanged when None)."""
    if image_size is None:
        return height, width
    scale = image_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _scale_boxes(boxes: Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> Tensor:
    if old_hw == new_hw:
        return boxes
    sy, sx = new_hw[0] / old_hw[0], new_hw[1] / old_hw[1]
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)


def _decode_image(path: Path, image_size: int | None = None) -> tuple[Any, tuple[int, int]]:
    """Open an image as RGB Pillow image; return it and its original ``(height, width)``.

    With ``image_size``, JPEGs are decoded at a reduced DCT scale no smaller than the final size
    (Pillow's ``draft``), which is several times cheaper. torchvision.io decoding is deprecated in 0.29.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            original = (handle.height, handle.width)
            if image_size is not None:
                new_h, new_w = _target_size(handle.height, handle.width, image_size)
                handle.draft("RGB", (new_w, new_h))
            return handle.convert("RGB"), original
    except (OSError, UnidentifiedImageError) as error:
        raise KdlabError(f"cannot decode image '{path}' ({error}): replace or remove the file") from None


def _to_uint8_tensor(image: Any, original: tuple[int, int], image_size: int | None) -> Tensor:
    """A Pillow RGB image resized (bilinear, antialiased) to longest side ``image_size`` of ``original``
    ``(height, width)``, as uint8 3 x H x W."""
    from PIL import Image

    new_h, new_w = _target_size(*original, image_size)
    if (new_h, new_w) != (image.height, image.width):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def resize_to_max_side(image: Tensor, boxes: Tensor, image_size: int | None) -> tuple[Tensor, Tensor]:
    """Resize a uint8 ``3 x H x W`` image so its longest side is ``image_size``; scale xyxy boxes alike."""
    height, width = image.shape[-2:]
    new_hw = _target_size(height, width, image_size)
    if new_hw == (height, width):
        return image, boxes
    resized = F.interpolate(
        image[None].float(), size=new_hw, mode="bilinear", align_corners=False, antialias=True
    )[0]
    resized = resized.round_().clamp_(0, 255).to(torch.uint8)
    return resized, _scale_boxes(boxes, (height, width), new_hw)


def _clean_boxes(boxes: list[list[float]], width: int, height: int, source: str) -> tuple[Tensor, Tensor]:
    """Clip boxes to the image; return them and the mask of the non-degenerate ones (one warning per file
    for the others)."""
    boxes_t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if boxes_t.numel():
        boxes_t[:, 0::2] = boxes_t[:, 0::2].clamp(0, width)
        boxes_t[:, 1::2] = boxes_t[:, 1::2].clamp(0, height)
    keep = (boxes_t[:, 2] > boxes_t[:, 0]) & (boxes_t[:, 3] > boxes_t[:, 1])
    dropped = int((~keep).sum())
    if dropped:
        warnings.warn(
            f"{source}: dropped {dropped} degenerate box{'es' if dropped > 1 else ''} "
            "(zero or negative width/height)",
            DegenerateBoxWarning,
            stacklevel=3,
        )
    return boxes_t, keep


# --------------------------------------------------------------------------- Pascal VOC
def _voc_root(root: str | Path) -> Path:
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
    voc = _voc_root(root)
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
    voc = _voc_root(root)
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
        original = _original_size(path)
        boxes, labels = [], []
        for name, coords in record["objects"]:
            if name not in index:
                raise KdlabError(
                    f"{xml}: class '{name}' is not in class_names {names}: add it to the class list"
                )
            boxes.append(coords)
            labels.append(index[name])
        boxes_t, keep = _clean_boxes(boxes, original[1], original[0], str(xml))
        boxes_t = _scale_boxes(boxes_t[keep], original, _target_size(*original, image_size))
        paths.append(path)
        originals.append(original)
        targets.append(make_target(boxes_t, torch.as_tensor(labels, dtype=torch.int64)[keep], position))
    return DetectionDataset(_image_files_or_tensors(paths, originals, image_size, in_memory), targets, names, ids)


# --------------------------------------------------------------------------- COCO json
def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KdlabError(f"COCO annotation file '{path}' not found: give the path to the instances json")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise KdlabError(f"'{path}' is not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise KdlabError(
            f"'{path}' is not COCO detection json: expected keys images, annotations, categories"
        )
    return data


def load_coco(
    images_dir: str | Path,
    annotation_json: str | Path,
    image_size: int | None = None,
    in_memory: bool = True,
) -> DetectionDataset:
    """Load a COCO-format detection json and its images.

    Category ids are mapped to contiguous labels 1..K in increasing id order (taken from ``categories``,
    so splits sharing a category list share a mapping); class names are the category names. ``bbox``
    ``[x, y, w, h]`` becomes ``[x1, y1, x2, y2]``; degenerate boxes are dropped with a warning. Crowd
    annotations (``iscrowd=1``) are kept apart (``crowd_boxes``/``crowd_labels``/``crowd_area``) for the
    evaluation ground truth only, never as training boxes; ``area`` is the annotation's ``area`` (the box
    area when absent), multiplied by the resize's ``sx * sy``, as in pycocotools' COCOeval
    (``cocoapi/PythonAPI/pycocotools/cocoeval.py``: crowd matches ignored, size bins from ``area``).
    Each image's ``file_name`` is looked up under ``images_dir`` and then next to the json. ``image_id``
    is the json's image id; images without annotations are kept (empty targets).
    """
    json_path = Path(annotation_json)
    data = _read_json(json_path)
    folder = Path(images_dir)
    if not folder.is_dir():
        raise KdlabError(
            f"COCO image folder '{images_dir}' not found: point it at the folder holding the images"
        )
    categories = data.get("categories") or []
    if categories:
        category_ids = sorted(int(c["id"]) for c in categories)
        category_names = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    else:
        category_ids = sorted({int(a["category_id"]) for a in data["annotations"]})
        category_names = {i: str(i) for i in category_ids}
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
    class_names = [category_names[cid] for cid in category_ids]

    per_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        per_image.setdefault(int(ann["image_id"]), []).append(ann)

    paths, originals, targets, names = [], [], [], []
    for info in sorted(data["images"], key=lambda item: int(item["id"])):
        image_id = int(info["id"])
        file_name = str(info["file_name"])
        candidates = [folder / file_name, json_path.parent / file_name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise KdlabError(
                f"image '{file_name}' (id {image_id}) from {json_path.name} not found in '{folder}' "
                f"or next to the json: point images_dir at the image folder"
            )
        original = _original_size(path)
        boxes, labels, areas, crowd = [], [], [], []
        for ann in per_image.get(image_id, []):
            category = int(ann["category_id"])
            if category not in label_of:
                raise KdlabError(
                    f"{json_path}: annotation {ann.get('id')} has unknown category_id {category}"
                )
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.append([x, y, x + w, y + h])
            labels.append(label_of[category])
            areas.append(float(ann["area"]) if ann.get("area") is not None else math.nan)
            crowd.append(bool(ann.get("iscrowd", 0)))
        boxes_t, keep = _clean_boxes(boxes, original[1], original[0], f"{json_path} image {file_name}")
        new_hw = _target_size(*original, image_size)
        boxes_t = _scale_boxes(boxes_t, original, new_hw)
        labels_t = torch.as_tensor(labels, dtype=torch.int64)
        areas_t = torch.as_tensor(areas, dtype=torch.float64)  # float64: a json area is kept exactly
        box_areas = ((boxes_t[:, 2] - boxes_t[:, 0]) * (boxes_t[:, 3] - boxes_t[:, 1])).double()
        areas_t = torch.where(torch.isnan(areas_t), box_areas,
                              areas_t * (new_hw[0] / original[0]) * (new_hw[1] / original[1]))
        crowd_t = torch.as_tensor(crowd, dtype=torch.bool)
        plain, crowded = keep & ~crowd_t, keep & crowd_t
        target = make_target(boxes_t[plain], labels_t[plain], image_id)
        target.update(area=areas_t[plain], crowd_boxes=boxes_t[crowded], crowd_labels=labels_t[crowded],
                      crowd_area=areas_t[crowded])
        paths.append(path)
        originals.append(original)
        targets.append(target)
        names.append(file_name)
    return DetectionDataset(_image_files_or_tensors(paths, originals, image_size, in_memory), targets, class_names,
                            names)


# --------------------------------------------------------------------------- synthetic shapes
SHAPES = ("square", "disc", "triangle")
_PALETTE = ((0.85, 0.20, 0.15), (0.15, 0.70, 0.25), (0.20, 0.35, 0.90))


def _class_style(label: int) -> tuple[str, tuple[float, float, float], tuple[float, float]]:
    """Shape, colour and size range (fraction of the image side) of 1-based class ``label``."""
    k = label - 1
    shape = SHAPES[k % 3]
    if k < len(_PALETTE):
        colour = _PALETTE[k]
    else:  # more classes: spread hues
        hue = (k * 0.618034) % 1.0
        colour = tuple(float(0.5 + 0.4 * math.cos(2 * math.pi * (hue + s / 3))) for s in range(3))
    base = {"square": 0.16, "disc": 0.12, "triangle": 0.20}[shape] * (1 + 0.35 * (k // 3))
    return shape, colour, (base, base * 1.6)


def _shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    centres = np.arange(size) + 0.5
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "disc":
        r = size / 2
        return (xx - r) ** 2 + (yy - r) ** 2 <= r * r
    # triangle, apex up or down
    frac_y = yy / size
    half = np.where(rng.random() < 0.5, frac_y, 1 - frac_y) / 2
    return np.abs(xx - size / 2) <= half * size + 0.5


def _synthetic_image(
    rng: np.random.Generator, image_size: int, num_classes: int
) -> tuple[np.ndarray, list, list]:
    s = image_size
    ys, xs = np.meshgrid(np.linspace(0, 1, s), np.linspace(0, 1, s), indexing="ij")
    base = rng.uniform(0.3, 0.6)
    texture = np.zeros((s, s))
    for _ in range(3):
        fx, fy = rng.uniform(1, 6, size=2)
        texture += np.sin(2 * np.pi * (fx * xs + fy * ys) + rng.uniform(0, 2 * np.pi))
    background = base + 0.05 * texture[..., None] + rng.uniform(-0.05, 0.05, size=3)
    image = background + rng.normal(0, 0.04, size=(s, s, 3))

    boxes: list[list[float]] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, 5))):
        label = int(rng.integers(1, num_classes + 1))
        shape, colour, (lo, hi) = _class_style(label)
        size = max(6, round(rng.uniform(lo, hi) * s))
        size = min(size, s - 2)
        for _attempt in range(30):
            x0 = int(rng.integers(0, s - size + 1))
            y0 = int(rng.integers(0, s - size + 1))
            if all(
                x0 >= b[2] + 1 or x0 + size + 1 <= b[0] or y0 >= b[3] + 1 or y0 + size + 1 <= b[1]
                for b in boxes
            ):
                break
        else:
            continue
        mask = _shape_mask(shape, size, rng)
        rows, cols = np.nonzero(mask)
        shade = np.asarray(colour) + rng.uniform(-0.08, 0.08, size=3)
        patch = shade + rng.normal(0, 0.03, size=(size, size, 3))
        region = image[y0 : y0 + size, x0 : x0 + size]
        region[mask] = patch[mask]
        boxes.append([x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1])
        labels.append(label)
    pixels = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    return pixels, boxes, labels


def make_synthetic_shapes(
    num_images: int, image_size: int = 128, seed: int = 0, num_classes: int = 3
) -> DetectionDataset:
    """A deterministic synthetic detection set generated in memory (no files).

    Each image is a textured, noisy background with 1-4 non-overlapping objects; class ``c`` (1-based)
    is a square / disc / triangle (cycling) in a class-specific colour and size band. Boxes are the tight
    pixel extent of each shape. Image ``i`` depends only on ``(seed, i)``, so a smaller set is a prefix of
    a larger one. Class names are ``square``, ``disc``, ``triangle`` (then ``square2``, ...).
    """
    if num_images <= 0 or image_size < 16 or num_classes < 1:
        raise KdlabError(
            f"synthetic shapes need num_images > 0, image_size >= 16 and num_classes >= 1 "
            f"(got {num_images}, {image_size}, {num_classes})"
        )
    images, targets = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        pixels, boxes, labels = _synthetic_image(rng, image_size, num_classes)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
        targets.append(make_target(boxes if boxes else _empty_boxes(), labels, i))
    class_names = [SHAPES[k % 3] + (str(k // 3 + 1) if k >= 3 else "") for k in range(num_classes)]
    return DetectionDataset(
        images, targets, class_names, [f"synthetic_{seed}_{i}" for i in range(num_images)]
    )


# --------------------------------------------------------------------------- augmentation and batching
def horizontal_flip(image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """Mirror an image (``... x H x W``) left-right and its xyxy boxes: ``x1' = W - x2``, ``x2' = W - x1``."""
    width = image.shape[-1]
    flipped = dict(target)
    boxes = target["boxes"]
    if boxes.numel():
        boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    flipped["boxes"] = boxes
    return image.flip(-1), flipped


def iterate_detection_batches(
    dataset: DetectionDataset,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = False,
    augment: bool = False,
) -> Iterator[tuple[list[Tensor], list[dict[str, Any]]]]:
    """Yield ``(images, targets)`` lists of at most ``batch_size`` (the last batch may be smaller).

    Order (``shuffle``) and flips (``augment``: horizontal flip with p=0.5) are drawn from ``generator``
    once per call, so the same generator state gives the same batches.
    """
    if batch_size <= 0:
        raise KdlabError(f"batch_size must be positive (got {batch_size})")
    n = len(dataset)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    flips = (torch.rand(n, generator=generator) < 0.5).tolist() if augment else [False] * n
    for start in range(0, n, batch_size):
        images, targets = [], []
        for position in range(start, min(start + batch_size, n)):
            image, target = dataset[order[position]]
            if flips[position]:
                image, target = horizontal_flip(image, target)
            images.append(image)
            targets.append(target)
        yield images, targets


# --------------------------------------------------------------------------- dispatch
def _pick(n: int, k: int, seed: int, salt: int) -> tuple[list[int], list[int]]:
    """A seeded random choice of ``k`` of ``range(n)`` (sorted) and the sorted rest."""
    generator = torch.Generator().manual_seed(seed * 7919 + salt)
    order = torch.randperm(n, generator=generator).tolist()
    return sorted(order[:k]), sorted(order[k:])


def _resolve(root: Path | None, path: str | Path) -> Path:
    candidate = Path(path)
    if candidate.is_absolute() or root is None or candidate.exists():
        return candidate
    return root / candidate


def load_detection_data(
    dataset: str,
    root: str | Path | None = None,
    *,
    image_size: int | None = None,
    seed: int = 0,
    subset: int | None = None,
    val_size: int = 0,
    test_subset: int | None = None,
    train_split: str = "train",
    val_split: str | None = None,
    test_split: str | None = "test",
    annotations: str | Path | None = None,
    val_annotations: str | Path | None = None,
    test_annotations: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    num_images: int = 96,
    num_test_images: int | None = None,
    num_classes: int = 3,
    in_memory: bool = True,
) -> DetectionData:
    """Load train/val/test detection splits (``in_memory=False``: VOC/COCO images are read when used).

    * ``voc``: ``root`` holds ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt`` (or has one
      such subfolder, e.g. ``../shared/data/bccd``); ``train_split``/``val_split``/``test_split`` name the
      split files (``None`` skips one).
    * ``coco``: ``annotations`` (train), ``val_annotations``, ``test_annotations`` are COCO jsons (relative
      paths resolve against ``root``); images are found under ``root/<split name>/`` if that folder exists,
      else ``root``, else next to the json.
    * ``synthetic``: ``num_images`` train images (seed ``seed``) and ``num_test_images`` (default
      ``max(16, num_images // 4)``) test images from a different stream; ``image_size`` defaults to 128.

    Then, in this order: ``val_size > 0`` holds out that many seeded-random train images as ``val``
    (replacing any val split); ``subset`` keeps that many seeded-random train images; ``test_subset``
    keeps that many test images. Labels are 1..K with ``class_names`` order shared by all splits.
    """
    if dataset not in DATASETS:
        raise KdlabError(f"unknown detection dataset '{dataset}': choose one of {', '.join(DATASETS)}")
    val: DetectionDataset | None = None
    test: DetectionDataset | None = None
    if dataset == "synthetic":
        size = image_size or 128
        train = make_synthetic_shapes(num_images, size, seed=seed, num_classes=num_classes)
        n_test = num_test_images if num_test_images is not None else max(16, num_images // 4)
        # a different stream: seeds are offset far away from the train seed
        test = make_synthetic_shapes(n_test, size, seed=seed + 1_000_003, num_classes=num_classes)
        if test_split is None:
            test = None
    elif dataset == "voc":
        if root is None:
            raise KdlabError(
                "dataset 'voc' needs data.root: the folder with Annotations/, JPEGImages/, ImageSets/Main/"
            )
        voc = _voc_root(root)
        names = list(class_names) if class_names is not None else voc_class_names(voc)
        train = load_voc(voc, train_split, names, image_size, in_memory)
        if val_split is not None and val_size == 0:
            val = load_voc(voc, val_split, names, image_size, in_memory)
        if test_split is not None:
            test = load_voc(voc, test_split, names, image_size, in_memory)
    else:  # coco
        base = Path(root) if root is not None else None
        if base is not None and not base.is_dir():
            raise KdlabError(f"COCO root '{root}' does not exist: point data.root at the image folder")
        if annotations is None:
            raise KdlabError("dataset 'coco' needs data.annotations: the COCO json of the train split")

        def coco_split(json_path: str | Path, split: str | None) -> DetectionDataset:
            resolved = _resolve(base, json_path)
            folder = base if base is not None else resolved.parent
            if base is not None and split and (base / split).is_dir():
                folder = base / split
            return load_coco(folder, resolved, image_size, in_memory)

        train = coco_split(annotations, train_split)
        if val_annotations is not None and val_size == 0:
            val = coco_split(val_annotations, val_split)
        if test_annotations is not None:
            test = coco_split(test_annotations, test_split)
        for split_name, split_data in (("val", val), ("test", test)):
            if split_data is not None and split_data.class_names != train.class_names:
                raise KdlabError(
                    f"COCO {split_name} categories {split_data.class_names} differ from train's "
                    f"{train.class_names}: use jsons that share one categories list"
                )
        if class_names is not None and list(class_names) != train.class_names:
            raise KdlabError(
                f"class_names {list(class_names)} do not match the json categories {train.class_names}"
            )

    if val_size > 0:
        if val_size >= len(train):
            raise KdlabError(f"val_size={val_size} must be smaller than the {len(train)} train images")
        held, rest = _pick(len(train), val_size, seed, salt=1)
        val, train = train.subset(held), train.subset(rest)
    if subset is not None and subset < len(train):
        kept, _ = _pick(len(train), subset, seed, salt=2)
        train = train.subset(kept)
    if test is not None and test_subset is not None and test_subset < len(test):
        kept, _ = _pick(len(test), test_subset, seed, salt=3)
        test = test.subset(kept)
    return DetectionData(train=train, val=val, test=test, class_names=list(train.class_names))
