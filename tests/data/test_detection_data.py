"""Detection data: VOC / COCO loaders, synthetic shapes, flips and batching."""

from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdlab.data.detection import (
    DegenerateBoxWarning,
    ImageFiles,
    horizontal_flip,
    iterate_detection_batches,
    load_coco,
    load_detection_data,
    load_voc,
    make_synthetic_shapes,
)
from kdlab.errors import KdlabError
from tests.helpers.voc import voc_xml, write_image

REPO_ROOT = Path(__file__).resolve().parents[2]
BCCD_ROOT = REPO_ROOT.parent / "shared" / "data" / "bccd"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    """Two 40x30 images; img_b has one degenerate box (xmin == xmax) among two good ones."""
    root = tmp_path / "VOC"
    records = {
        "img_a": [("zebra", (2, 3, 20, 25)), ("ant", (10, 5, 30, 15))],
        "img_b": [("ant", (1, 1, 11, 11)), ("zebra", (15, 4, 15, 20)), ("zebra", (20, 10, 38, 28))],
    }
    for seed, (name, objects) in enumerate(records.items()):
        write_image(root / "JPEGImages" / f"{name}.png", 40, 30, seed)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{name}.xml").write_text(voc_xml(f"{name}.png", 40, 30, objects))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("img_a\nimg_b\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("img_b\n")
    return root


# --------------------------------------------------------------------------- VOC
def test_voc_drops_degenerate_box_with_warning(tiny_voc: Path) -> None:
    with pytest.warns(DegenerateBoxWarning, match=r"img_b\.xml: dropped 1 degenerate box") as record:
        data = load_voc(tiny_voc, "train")
    assert len([w for w in record if issubclass(w.category, DegenerateBoxWarning)]) == 1
    assert data.class_names == ["ant", "zebra"]  # sorted, label = index + 1
    assert len(data) == 2 and data.num_boxes == 4
    image, target = data[1]
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 30, 40)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert target["boxes"].tolist() == [[1, 1, 11, 11], [20, 10, 38, 28]]
    assert target["labels"].tolist() == [1, 2] and target["labels"].dtype == torch.int64
    assert target["image_id"] == 1
    # the stored image is the decoded file
    expected = np.array(Image.open(tiny_voc / "JPEGImages" / "img_b.png"))
    assert torch.equal(data.images[1], torch.from_numpy(expected).permute(2, 0, 1))


def test_voc_image_size_scales_boxes(tiny_voc: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateBoxWarning)
        full = load_voc(tiny_voc, "train")
        half = load_voc(tiny_voc, "train", image_size=20)
    assert tuple(half.images[0].shape) == (3, 15, 20)
    assert torch.allclose(half.targets[0]["boxes"], full.targets[0]["boxes"] / 2)


def test_voc_errors_name_the_problem(tiny_voc: Path, tmp_path: Path) -> None:
    with pytest.raises(KdlabError, match="split file .*nope.txt.* not found"):
        load_voc(tiny_voc, "nope")
    with pytest.raises(KdlabError, match="Annotations"):
        load_detection_data("voc", tmp_path / "missing")
    with pytest.raises(KdlabError, match="needs data.root"):
        load_detection_data("voc")
    with pytest.raises(KdlabError, match="class 'zebra' is not in class_names"):
        load_voc(tiny_voc, "train", class_names=["ant"])
    with pytest.raises(KdlabError, match="unknown detection dataset 'pascal'.*voc, coco, synthetic"):
        load_detection_data("pascal")


@pytest.mark.skipif(not BCCD_ROOT.is_dir(), reason=f"BCCD not found at {BCCD_ROOT}")
def test_bccd_loads_with_exactly_the_degenerate_boxes_dropped() -> None:
    voc = BCCD_ROOT / "BCCD"
    expected: dict[str, int] = {}
    degenerate: set[str] = set()
    for split in ("train", "val", "test"):
        expected[split] = 0
        for image_id in (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split():
            for obj in ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot().iter("object"):
                box = [float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
                if box[2] > box[0] and box[3] > box[1]:
                    expected[split] += 1
                else:
                    degenerate.add(image_id)
    assert len(degenerate) == 2  # per ../shared/data/README.md
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = load_detection_data("voc", BCCD_ROOT, image_size=128, val_split="val")
    messages = [str(w.message) for w in record if issubclass(w.category, DegenerateBoxWarning)]
    assert len(messages) == 2 and all(any(i in m for m in messages) for i in degenerate)
    assert data.class_names == ["Platelets", "RBC", "WBC"]
    assert (len(data.train), len(data.val), len(data.test)) == (205, 87, 72)
    assert (data.train.num_boxes, data.val.num_boxes, data.test.num_boxes) == (
        expected["train"],
        expected["val"],
        expected["test"],
    )
    assert tuple(data.train.images[0].shape) == (3, 96, 128)  # 640x480 -> longest side 128
    for split in (data.train, data.val, data.test):
        for target in split.targets:
            boxes = target["boxes"]
            assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
            assert (
                float(boxes.min()) >= 0 and float(boxes[:, 2].max()) <= 128 and float(boxes[:, 3].max()) <= 96
            )


# --------------------------------------------------------------------------- COCO
def _tiny_coco(folder: Path) -> Path:
    write_image(folder / "a.jpg", 50, 40, 1)
    write_image(folder / "b.jpg", 30, 20, 2)
    data = {
        "images": [
            {"id": 11, "file_name": "a.jpg", "width": 50, "height": 40},
            {"id": 12, "file_name": "b.jpg", "width": 30, "height": 20},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 7, "bbox": [5, 6, 10, 12], "iscrowd": 0, "area": 120},
            {"id": 2, "image_id": 11, "category_id": 3, "bbox": [20, 10, 25, 20], "iscrowd": 0, "area": 500},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 0, 50, 40], "iscrowd": 1, "area": 2000},
            {"id": 4, "image_id": 11, "category_id": 7, "bbox": [30, 5, 0, 10], "iscrowd": 0, "area": 0},
            {"id": 5, "image_id": 11, "category_id": 7, "bbox": [1, 2, 4, 5]},  # no area, no iscrowd
        ],
    }
    path = folder / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_loader_remaps_ids_keeps_crowd_apart_converts_xywh(tmp_path: Path) -> None:
    annotation = _tiny_coco(tmp_path / "images")
    with pytest.warns(DegenerateBoxWarning, match="a.jpg: dropped 1 degenerate box"):
        data = load_coco(tmp_path / "images", annotation)
    assert data.class_names == ["dog", "cat"]  # category ids 3, 7 -> labels 1, 2
    assert [t["image_id"] for t in data.targets] == [11, 12]
    train = data[0].target  # the training target: no crowd region, no area
    assert set(train) == {"boxes", "labels", "image_id"}
    assert train["labels"].tolist() == [2, 1, 2]
    assert train["boxes"].tolist() == [[5, 6, 15, 18], [20, 10, 45, 30], [1, 2, 5, 7]]
    _, batch = next(iterate_detection_batches(data, 2))
    assert [t["boxes"].shape[0] for t in batch] == [3, 0]
    truth = data.ground_truth(0)
    assert truth["boxes"].tolist() == train["boxes"].tolist()
    assert truth["area"].tolist() == [120, 500, 20]  # the annotations' areas; box area 4 x 5 when absent
    assert truth["crowd_boxes"].tolist() == [[0, 0, 50, 40]] and truth["crowd_labels"].tolist() == [1]
    assert truth["crowd_area"].tolist() == [2000]
    assert data.ground_truth(1)["crowd_boxes"].shape == (0, 4)
    assert data.targets[1]["boxes"].shape == (0, 4)  # an image without annotations is kept
    assert tuple(data[1].image.shape) == (3, 20, 30)


def test_load_detection_data_coco_dispatch(tmp_path: Path) -> None:
    _tiny_coco(tmp_path / "train")  # Roboflow-like: json beside the images in root/train/
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateBoxWarning)
        data = load_detection_data(
            "coco",
            tmp_path,
            annotations="train/instances.json",
            test_annotations="train/instances.json",
            test_split="train",
            image_size=25,
        )
    assert data.class_names == ["dog", "cat"] and len(data.train) == 2 and len(data.test) == 2
    assert tuple(data.train.images[0].shape) == (3, 20, 25)
    assert torch.allclose(data.train.targets[0]["boxes"][0], torch.tensor([2.5, 3.0, 7.5, 9.0]))
    truth = data.test.ground_truth(0)  # 50 x 40 -> 25 x 20: areas scale by 1/4, as the image
    assert truth["area"].tolist() == [30, 125, 5] and truth["crowd_area"].tolist() == [500]
    assert truth["crowd_boxes"].tolist() == [[0, 0, 25, 20]]
    with pytest.raises(KdlabError, match="needs data.annotations"):
        load_detection_data("coco", tmp_path)
    with pytest.raises(KdlabError, match="missing.json' not found"):
        load_detection_data("coco", tmp_path, annotations="missing.json")


@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_images_read_on_use_equal_the_in_memory_ones(dataset: str, tiny_voc: Path, tmp_path: Path) -> None:
    if dataset == "voc":
        options = {"root": tiny_voc, "train_split": "train", "test_split": "train"}
    else:
        _tiny_coco(tmp_path / "train")
        options = {"root": tmp_path, "annotations": "train/instances.json",
                   "test_annotations": "train/instances.json", "test_split": "train"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateBoxWarning)
        eager = load_detection_data(dataset, image_size=24, val_size=1, **options)
        lazy = load_detection_data(dataset, image_size=24, val_size=1, in_memory=False, **options)
    assert isinstance(lazy.train.images, ImageFiles) and isinstance(lazy.val.images, ImageFiles)
    assert not isinstance(eager.train.images, ImageFiles)
    for eager_split, lazy_split in ((eager.train, lazy.train), (eager.val, lazy.val), (eager.test, lazy.test)):
        assert len(eager_split) == len(lazy_split) > 0
        for index in range(len(eager_split)):
            assert torch.equal(eager_split[index].image, lazy_split[index].image)
            assert torch.equal(eager_split[index].target["boxes"], lazy_split[index].target["boxes"])


def test_an_image_replaced_after_loading_is_a_clear_error(tiny_voc: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateBoxWarning)
        lazy = load_voc(tiny_voc, "train", in_memory=False)
    path = lazy.images.paths[0]
    height, width = lazy.images.originals[0]
    write_image(path, width + 4, height)
    with pytest.raises(KdlabError, match="changed size since its split was loaded"):
        lazy[0]


# --------------------------------------------------------------------------- synthetic
def test_synthetic_shapes_deterministic_and_valid() -> None:
    first = make_synthetic_shapes(12, image_size=64, seed=3)
    again = make_synthetic_shapes(12, image_size=64, seed=3)
    other = make_synthetic_shapes(12, image_size=64, seed=4)
    prefix = make_synthetic_shapes(5, image_size=64, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first.images, again.images))
    assert all(
        torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
        for a, b in zip(first.targets, again.targets)
    )
    assert not all(torch.equal(a, b) for a, b in zip(first.images, other.images))
    assert all(torch.equal(a, b) for a, b in zip(prefix.images, first.images[:5]))
    assert first.class_names == ["square", "disc", "triangle"]
    for image, target in (first[i] for i in range(len(first))):
        boxes, labels = target["boxes"], target["labels"]
        assert tuple(image.shape) == (3, 64, 64) and 1 <= len(boxes) <= 4
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
        assert float(boxes.min()) >= 0 and float(boxes.max()) <= 64
        assert set(labels.tolist()) <= {1, 2, 3}


def test_synthetic_objects_are_visible_in_their_boxes() -> None:
    data = make_synthetic_shapes(8, image_size=96, seed=0)
    for i in range(len(data)):
        image, target = data[i]
        for (x1, y1, x2, y2), label in zip(target["boxes"].int().tolist(), target["labels"].tolist()):
            inside = image[:, y1:y2, x1:x2].reshape(3, -1).mean(1)
            if label == 1:  # red squares fill their box
                assert float(inside[0]) > float(inside[1]) + 0.3


def test_load_detection_data_synthetic_splits() -> None:
    data = load_detection_data(
        "synthetic", num_images=24, image_size=64, val_size=4, subset=10, test_subset=5
    )
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 5)
    assert not set(data.train.names) & set(data.val.names)
    assert not set(data.train.names) & set(data.test.names)
    with pytest.raises(KdlabError, match="val_size=30 must be smaller"):
        load_detection_data("synthetic", num_images=24, image_size=64, val_size=30)


# --------------------------------------------------------------------------- flip and batches
def test_horizontal_flip_moves_boxes_and_pixels() -> None:
    image = torch.zeros(3, 10, 16)
    image[:, 3:8, 2:7] = 1.0  # the object occupies box (2, 3, 7, 8)
    target = {"boxes": torch.tensor([[2.0, 3.0, 7.0, 8.0]]), "labels": torch.tensor([1]), "image_id": 5}
    flipped, flipped_target = horizontal_flip(image, target)
    assert flipped_target["boxes"].tolist() == [[9.0, 3.0, 14.0, 8.0]]  # x1' = 16 - 7, x2' = 16 - 2
    x1, y1, x2, y2 = (int(v) for v in flipped_target["boxes"][0])
    assert float(flipped[:, y1:y2, x1:x2].min()) == 1.0 and float(flipped.sum()) == float(image.sum())
    assert flipped_target["labels"].tolist() == [1] and flipped_target["image_id"] == 5
    assert target["boxes"].tolist() == [[2.0, 3.0, 7.0, 8.0]]  # input left untouched
    back, back_target = horizontal_flip(flipped, flipped_target)
    assert torch.equal(back, image) and torch.equal(back_target["boxes"], target["boxes"])
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 0}
    assert horizontal_flip(image, empty)[1]["boxes"].shape == (0, 4)


def test_iterate_batches_deterministic_and_complete() -> None:
    data = make_synthetic_shapes(10, image_size=32, seed=1)

    def run(seed: int) -> list[tuple[int, list[float]]]:
        generator = torch.Generator().manual_seed(seed)
        seen = []
        for images, targets in iterate_detection_batches(data, 4, generator, shuffle=True, augment=True):
            assert len(images) == len(targets) <= 4
            seen.extend((t["image_id"], t["boxes"].flatten().tolist()) for t in targets)
        return seen

    first, again, other = run(0), run(0), run(1)
    assert first == again and first != other
    assert sorted(i for i, _ in first) == list(range(10))
    flipped = sum(boxes != data.targets[i]["boxes"].flatten().tolist() for i, boxes in first)
    assert 0 < flipped < 10  # some, not all, images were flipped
    plain = [t["image_id"] for _, ts in iterate_detection_batches(data, 3) for t in ts]
    assert plain == list(range(10))
