"""Data on the training device: in-memory classification sets copied to an accelerator once, streaming detection
data read by DataLoader workers on cuda, and the CPU path left as it was. No GPU here: the 'meta' device stands
in for an accelerator (placement and copies are visible, values are not), and the cuda branch is checked by
what it calls."""

from pathlib import Path

import pytest
import torch

from kdlab.config.recipe import validate_recipe
from kdlab.data.classification import ImageSet, iterate_batches
from kdlab.data.detection import ImageFiles, iterate_detection_batches, load_voc
from kdlab.data.detection.loader import batch_to_device, stream_detection_batches
from kdlab.tasks import classification, detection
from tests.helpers.voc import voc_xml, write_image

RECIPE = validate_recipe({"model": {"arch": "resnet_small"}, "data": {"dataset": "embedded", "batch_size": 4}})
TRAIN = ImageSet((torch.rand(12, 3, 8, 8) * 255).to(torch.uint8), torch.arange(12) % 3)


class ImageCopies:
    """Counts ``Tensor.to`` calls that move uint8 image batches (4-d) to another device."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = torch.Tensor.to

        def to(tensor, *args, **kwargs):
            moved = original(tensor, *args, **kwargs)
            if tensor.ndim == 4 and tensor.dtype == torch.uint8 and moved.device != tensor.device:
                self.count += 1
            return moved

        monkeypatch.setattr(torch.Tensor, "to", to)


def test_an_accelerator_gets_the_training_images_once_not_per_batch(monkeypatch):
    copies = ImageCopies(monkeypatch)
    source = classification.training_batches(TRAIN, RECIPE, torch.device("meta"))
    assert copies.count == 1  # the whole uint8 set, at setup
    for epoch in (1, 2):
        batches = list(source.batches(torch.Generator().manual_seed(epoch)))
        assert len(batches) == source.batches_per_epoch == 3
        assert all(images.device.type == "meta" and labels.device.type == "meta" for images, labels in batches)
        assert all(images.dtype == torch.float32 for images, _ in batches)  # cropped, flipped, scaled there
    assert copies.count == 1  # no per-batch copy of images in two epochs


def test_on_the_cpu_the_batches_are_todays(monkeypatch):
    copies = ImageCopies(monkeypatch)
    source = classification.training_batches(TRAIN, RECIPE, torch.device("cpu"))
    ours = list(source.batches(torch.Generator().manual_seed(5)))
    expected = list(iterate_batches(TRAIN, 4, torch.Generator().manual_seed(5), shuffle=True, augment=True,
                                    drop_last=True))
    assert copies.count == 0 and len(ours) == len(expected) == 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ours, expected))


def test_channels_last_batches():
    recipe = validate_recipe({**RECIPE.to_dict(), "train": {"channels_last": True}})
    images, _ = next(iter(classification.training_batches(TRAIN, recipe, torch.device("cpu")).batches(
        torch.Generator().manual_seed(0))))
    assert images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()


@pytest.fixture
def streaming_voc(tmp_path: Path):
    root = tmp_path / "VOC"
    names = [f"img{i}" for i in range(5)]
    for seed, name in enumerate(names):
        write_image(root / "JPEGImages" / f"{name}.png", 40, 30, seed)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{name}.xml").write_text(voc_xml(f"{name}.png", 40, 30, [("ant", (2, 3, 20, 25))]))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(names) + "\n")
    dataset = load_voc(root, "train", in_memory=False)
    assert isinstance(dataset.images, ImageFiles)
    return dataset


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_loading_gives_the_same_batches_as_reading_in_process(streaming_voc, workers):
    expected = list(iterate_detection_batches(streaming_voc, 2, torch.Generator().manual_seed(3), shuffle=True,
                                              augment=True))
    streamed = list(stream_detection_batches(streaming_voc, 2, torch.Generator().manual_seed(3), shuffle=True,
                                             augment=True, workers=workers, pin_memory=False))
    assert [len(images) for images, _ in streamed] == [2, 2, 1]
    for (images_a, targets_a), (images_b, targets_b) in zip(expected, streamed):
        assert all(torch.equal(a, b) for a, b in zip(images_a, images_b))
        assert all(torch.equal(a["boxes"], b["boxes"]) and a["image_id"] == b["image_id"]
                   for a, b in zip(targets_a, targets_b))


def test_a_detection_batch_moves_images_and_target_tensors():
    images, targets = batch_to_device(([torch.rand(3, 4, 4)], [{"boxes": torch.zeros(1, 4), "image_id": 7}]),
                                      torch.device("meta"))
    assert images[0].device.type == "meta" and targets[0]["boxes"].device.type == "meta"
    assert targets[0]["image_id"] == 7


@pytest.mark.parametrize("device, in_memory, streams", [("cuda", False, True), ("cuda", True, False),
                                                         ("cpu", False, False)])
def test_detection_streams_through_workers_only_for_files_on_cuda(monkeypatch, streaming_voc, device, in_memory,
                                                                 streams):
    calls = []
    monkeypatch.setattr("kdlab.data.detection.loader.stream_detection_batches",
                        lambda *args, **kwargs: calls.append(kwargs) or iter([]))
    monkeypatch.setattr("kdlab.data.detection.loader.batch_to_device", lambda batch, device: batch)
    train = streaming_voc if not in_memory else streaming_voc.subset(range(len(streaming_voc)))
    if in_memory:
        train.images = [train.images[i] for i in range(len(train))]
    raw = {"task": "detection", "data": {"dataset": "voc", "batch_size": 2, "in_memory": in_memory,
                                         **({} if in_memory else {"workers": 3})},
           "model": {"arch": "fasterrcnn", "min_size": 32, "max_size": 32}}
    batches = detection.training_batches(train, validate_recipe(raw), torch.device(device))
    list(batches(torch.Generator().manual_seed(0)))
    assert bool(calls) == streams
    if streams:
        assert calls[0]["workers"] == 3 and calls[0]["pin_memory"] is True
