"""Detection models (torchvision builders, FPN access) and COCO box AP."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab.data.detection import iterate_detection_batches, make_synthetic_shapes
from kdlab.errors import KdlabError
from kdlab.evaluate_detection import METRICS, coco_box_ap, evaluate_detector
from kdlab.models.detection import (
    build_detector,
    capture_fpn,
    check_fpn_compatible,
    fpn_levels,
    fpn_module_path,
)

SIZE = 64


@pytest.fixture(scope="module")
def shapes():
    return make_synthetic_shapes(6, image_size=SIZE, seed=0)


def _perfect(targets):
    return [
        {
            "boxes": t["boxes"].clone(),
            "scores": torch.linspace(1.0, 0.5, len(t["labels"])),
            "labels": t["labels"].clone(),
        }
        for t in targets
    ]


# --------------------------------------------------------------------------- COCO AP
def test_coco_ap_perfect_is_100_and_perturbed_is_lower(shapes) -> None:
    targets = [shapes[i].target for i in range(len(shapes))]
    perfect = coco_box_ap(_perfect(targets), targets, shapes.class_names, per_class=True)
    assert set(METRICS) <= set(perfect)
    assert perfect["AP"] == pytest.approx(100.0) and perfect["AP50"] == pytest.approx(100.0)
    assert perfect["AP75"] == pytest.approx(100.0)
    assert all(perfect[f"AP/{name}"] == pytest.approx(100.0) for name in shapes.class_names)

    shifted = _perfect(targets)
    for prediction in shifted:
        prediction["boxes"] += 3.0  # ~20% of a 12-20 px object
    moved = coco_box_ap(shifted, targets, shapes.class_names)
    assert moved["AP"] < 90.0 and moved["AP75"] < perfect["AP75"]

    shuffled = _perfect(targets)  # each image gets the next image's boxes
    boxes = [prediction["boxes"] for prediction in shuffled]
    for prediction, other in zip(shuffled, boxes[1:] + boxes[:1], strict=True):
        prediction["boxes"] = other[: len(prediction["boxes"])]
        prediction["labels"] = prediction["labels"][: len(other)]
        prediction["scores"] = prediction["scores"][: len(other)]
    assert coco_box_ap(shuffled, targets, shapes.class_names)["AP"] < 20.0

    swapped = _perfect(targets)
    for prediction in swapped:
        prediction["labels"] = prediction["labels"] % 3 + 1  # every box gets the wrong class
    assert coco_box_ap(swapped, targets, shapes.class_names)["AP"] == pytest.approx(0.0)


def test_coco_ap_without_predictions_is_zero(shapes) -> None:
    targets = [shapes[i].target for i in range(len(shapes))]
    nothing = {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
    }
    empty = [dict(nothing) for _ in targets]
    result = coco_box_ap(empty, targets, shapes.class_names)
    assert result == {name: 0.0 for name in METRICS}


def test_coco_ap_size_range_without_ground_truth_is_nan(shapes) -> None:
    targets = [shapes[i].target for i in range(len(shapes))]  # 64 px images: no object above 96^2
    assert math.isnan(coco_box_ap(_perfect(targets), targets, shapes.class_names)["APl"])


# --------------------------------------------------------------------------- detectors
@pytest.mark.parametrize(
    "arch,backbone", [("fasterrcnn", "resnet18"), ("fasterrcnn", "mobilenet_v3"), ("retinanet", "resnet18")]
)
def test_build_detector_trains_and_predicts(shapes, arch: str, backbone: str) -> None:
    torch.manual_seed(0)
    model = build_detector(arch, backbone, num_classes=shapes.num_classes + 1, min_size=SIZE, max_size=SIZE)
    images, targets = next(iterate_detection_batches(shapes, 2))
    model.train()
    losses = model(images, targets)
    if arch == "fasterrcnn":
        expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    else:
        expected = {"classification", "bbox_regression"}
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        predictions = model(images)
    assert len(predictions) == 2
    for prediction in predictions:
        assert set(prediction) == {"boxes", "scores", "labels"} and prediction["boxes"].shape[-1] == 4
        assert prediction["boxes"].shape[0] <= 100


def test_build_detector_rejects_unknown_names() -> None:
    with pytest.raises(KdlabError, match="unknown detector arch 'yolo'.*fasterrcnn, retinanet"):
        build_detector("yolo", "resnet18", 4)
    with pytest.raises(KdlabError, match="unknown detector backbone 'vgg16'.*resnet18.*mobilenet_v3"):
        build_detector("fasterrcnn", "vgg16", 4)
    with pytest.raises(KdlabError, match="unknown detector option 'rpn_topk'.*representation_size"):
        build_detector("fasterrcnn", "resnet18", 4, rpn_topk=3)
    with pytest.raises(KdlabError, match="'representation_size' applies to fasterrcnn only"):
        build_detector("retinanet", "resnet18", 4, representation_size=64)
    with pytest.raises(KdlabError, match="count the background"):
        build_detector("fasterrcnn", "resnet18", 1)


def test_presets_set_detector_sizes() -> None:
    cpu = build_detector("fasterrcnn", "resnet18", 4, SIZE, SIZE)
    assert cpu.rpn._post_nms_top_n == {"training": 300, "testing": 300}
    assert cpu.roi_heads.box_predictor.cls_score.in_features == 256
    full = build_detector(
        "fasterrcnn", "resnet18", 4, SIZE, SIZE, preset="torchvision", rpn_post_nms_top_n_test=50
    )
    assert full.rpn._post_nms_top_n == {"training": 2000, "testing": 50}
    assert full.roi_heads.box_predictor.cls_score.in_features == 1024


# --------------------------------------------------------------------------- FPN access
def test_fpn_levels_align_for_teacher_and_student(shapes) -> None:
    teacher = build_detector("fasterrcnn", "resnet34", 4, min_size=SIZE, max_size=96).eval()
    student = build_detector("fasterrcnn", "resnet18", 4, min_size=SIZE, max_size=96)
    check_fpn_compatible(teacher, student)
    assert fpn_module_path(student) == "backbone"
    images, targets = next(iterate_detection_batches(shapes, 2))
    with torch.no_grad():
        teacher_levels = fpn_levels(teacher, images)
    student_levels = fpn_levels(student, images)
    assert list(teacher_levels) == list(student_levels) == ["0", "1", "2", "3", "pool"]
    for name in teacher_levels:
        assert teacher_levels[name].shape == student_levels[name].shape
    assert student_levels["0"].shape == (2, 256, SIZE // 4, SIZE // 4)
    assert student_levels["0"].requires_grad

    with capture_fpn(student) as captured:
        student(images, targets)
    assert [v.shape for v in captured.values()] == [v.shape for v in student_levels.values()]
    assert captured["0"].grad_fn is not None


def test_check_fpn_compatible_rejects_different_sizes() -> None:
    teacher = build_detector("fasterrcnn", "resnet18", 4, min_size=SIZE, max_size=SIZE)
    student = build_detector("fasterrcnn", "resnet18", 4, min_size=48, max_size=SIZE)
    with pytest.raises(KdlabError, match="identical min_size/max_size"):
        check_fpn_compatible(teacher, student)
    mobile = build_detector("fasterrcnn", "mobilenet_v3", 4, min_size=SIZE, max_size=SIZE)
    with pytest.raises(KdlabError, match="FPN levels differ"):
        check_fpn_compatible(teacher, mobile)


def test_evaluate_detector_runs_in_eval_mode_and_restores_mode(shapes) -> None:
    torch.manual_seed(0)
    model = build_detector("fasterrcnn", "resnet18", 4, SIZE, SIZE, rpn_post_nms_top_n_test=50)
    model.train()
    result = evaluate_detector(model, shapes, batch_size=3)
    assert set(result) == set(METRICS)
    assert all(math.isnan(v) or 0.0 <= v <= 100.0 for v in result.values())
    assert model.training


def test_fpn_channels_option_and_channel_check(shapes) -> None:
    teacher = build_detector("retinanet", "resnet18", 4, SIZE, SIZE)
    narrow = build_detector("retinanet", "resnet18", 4, SIZE, SIZE, fpn_channels=64)
    images, targets = next(iterate_detection_batches(shapes, 2))
    levels = fpn_levels(narrow, images)
    assert list(levels) == ["0", "1", "2", "p6", "p7"] and all(v.shape[1] == 64 for v in levels.values())
    assert set(narrow(images, targets)) == {"classification", "bbox_regression"}
    with pytest.raises(KdlabError, match="FPN channels differ.*adapter"):
        check_fpn_compatible(teacher, narrow)
    check_fpn_compatible(teacher, narrow, adapter=True)
