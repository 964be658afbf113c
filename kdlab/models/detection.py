"""Torchvision detectors (Faster R-CNN, RetinaNet) with FPN backbones, built offline, and FPN-feature access.

Conventions
-----------
* ``num_classes`` *includes the background*: a dataset with K foreground classes (labels 1..K) needs
  ``num_classes = K + 1`` for both Faster R-CNN and RetinaNet (torchvision's convention; label 0 is
  background and is never a target).
* Nothing is downloaded: every network is built with random weights (``weights=None``). Optionally,
  ``backbone_checkpoint=<path>`` loads a torchvision *classification* state dict (e.g. an ImageNet
  ResNet-50 saved with ``torch.save(model.state_dict())``) into the backbone before the FPN is attached.
* Inputs are lists of float ``3 x H x W`` images in ``[0, 1]``; the model's ``GeneralizedRCNNTransform``
  resizes them to ``min_size``/``max_size`` and normalises with the ImageNet mean/std *inside* the model.
* Detector-size options default to a CPU-friendly preset (``preset="cpu"``: 300 RPN proposals, a 256-d
  box head, 128 sampled RoIs per image) so that a training step at 256 px takes seconds on 2 cores;
  ``preset="torchvision"`` restores torchvision's defaults (the paper-scale recipe). Any explicit option
  overrides the preset.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.errors import KdlabError, did_you_mean

__all__ = [
    "ARCHS",
    "BACKBONES",
    "CPU_PRESET",
    "TORCHVISION_PRESET",
    "build_detector",
    "capture_fpn",
    "capture_transformed_boxes",
    "check_fpn_compatible",
    "copy_neck_and_heads",
    "detector_arch",
    "fpn_levels",
    "fpn_module_path",
]

ARCHS = ("fasterrcnn", "retinanet")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3")
NORMS = ("batchnorm", "frozen")
PRESETS = ("cpu", "torchvision")

# Options understood per architecture (besides the common ones below).
_FASTERRCNN_OPTIONS = (
    "rpn_pre_nms_top_n_train",
    "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_train",
    "rpn_post_nms_top_n_test",
    "rpn_batch_size_per_image",
    "box_batch_size_per_image",
    "representation_size",
)
_RETINANET_OPTIONS = ("topk_candidates", "head_norm")
HEAD_NORMS = ("none", "groupnorm")  # RetinaNet heads: torchvision v1 (none) or v2 (GroupNorm(32) after each conv)
_COMMON_OPTIONS = (
    "preset",
    "box_detections_per_img",
    "box_score_thresh",
    "box_nms_thresh",
    "anchor_base",
    "norm",
    "backbone_checkpoint",
    "fpn_channels",
)

#: CPU-friendly sizes: keep a Faster R-CNN R18-FPN step at 256 px / batch 4 in the seconds range.
CPU_PRESET: dict[str, Any] = {
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_pre_nms_top_n_test": 500,
    "rpn_post_nms_top_n_train": 300,
    "rpn_post_nms_top_n_test": 300,
    "rpn_batch_size_per_image": 256,
    "box_batch_size_per_image": 128,
    "representation_size": 256,
    "box_detections_per_img": 100,
    "topk_candidates": 300,
}
#: torchvision's own defaults (what the paper's mmdetection-style recipes correspond to).
TORCHVISION_PRESET: dict[str, Any] = {
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_batch_size_per_image": 256,
    "box_batch_size_per_image": 512,
    "representation_size": 1024,
    "box_detections_per_img": {"fasterrcnn": 100, "retinanet": 300},
    "topk_candidates": 1000,
}


def _choices(values: Sequence[str]) -> str:
    return ", ".join(values)


def _norm_layer(norm: str) -> type[nn.Module]:
    from torchvision.ops import misc as misc_nn_ops

    return misc_nn_ops.FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d


def _load_backbone_checkpoint(network: nn.Module, path: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise KdlabError(
            f"backbone_checkpoint '{path}' not found: give a torchvision classification state_dict (.pth)"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise KdlabError(
            f"backbone_checkpoint '{path}' cannot be read ({type(error).__name__}): "
            "save it with torch.save(model.state_dict(), path)"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # the classifier head is not part of the detector backbone; tolerate its absence or shape
    own = network.state_dict()
    head = [k for k in own if k.startswith(("fc.", "classifier."))]
    for key in head:
        state.pop(key, None)
    try:
        missing, unexpected = network.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        first = str(error).strip().splitlines()[-1].strip()
        raise KdlabError(
            f"backbone_checkpoint '{path}' does not fit the backbone ({first}): "
            "save the matching torchvision classification model's state_dict"
        ) from None
    missing = [k for k in missing if k not in head]
    if missing or unexpected:
        raise KdlabError(
            f"backbone_checkpoint '{path}' does not match the backbone "
            f"({len(missing)} missing keys e.g. {missing[:2]}, "
            f"{len(unexpected)} unexpected e.g. {unexpected[:2]}): "
            "save the matching torchvision classification model's state_dict"
        )


def _build_backbone(
    arch: str,
    backbone: str,
    trainable_layers: int | None,
    norm: str,
    anchor_base: int,
    checkpoint: str | None,
) -> tuple[nn.Module, Any]:
    """Backbone+FPN module and the anchor generator that matches its levels."""
    import torchvision
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    norm_layer = _norm_layer(norm)
    if backbone == "mobilenet_v3":
        network = torchvision.models.mobilenet_v3_large(weights=None, norm_layer=norm_layer)
        max_layers = 6
    else:
        network = getattr(torchvision.models, backbone)(weights=None, norm_layer=norm_layer)
        max_layers = 5
    if checkpoint is not None:
        _load_backbone_checkpoint(network, checkpoint)
    layers = max_layers if trainable_layers is None else int(trainable_layers)
    if not 0 <= layers <= max_layers:
        raise KdlabError(
            f"trainable_layers={trainable_layers} is out of range for {backbone}: use 0..{max_layers} "
            f"({max_layers} = everything trainable)"
        )

    def octaves(base: int) -> tuple[int, ...]:
        return (base, int(base * 2 ** (1 / 3)), int(base * 2 ** (2 / 3)))

    if arch == "fasterrcnn":
        if backbone == "mobilenet_v3":
            # torchvision's fasterrcnn_mobilenet_v3_large_fpn: 2 levels + pool, all sizes on every level
            body = _mobilenet_extractor(network, True, layers)
            sizes = tuple(anchor_base * 2**i for i in range(5))
            anchors = AnchorGenerator((sizes,) * 3, ((0.5, 1.0, 2.0),) * 3)
        else:
            # torchvision's fasterrcnn_resnet50_fpn: P2-P5 + pool, one size per level
            body = _resnet_fpn_extractor(network, layers)
            anchors = AnchorGenerator(tuple((anchor_base * 2**i,) for i in range(5)), ((0.5, 1.0, 2.0),) * 5)
        return body, anchors
    # retinanet: P3-P7 (torchvision's retinanet_resnet50_fpn), three octave scales per level
    if backbone == "mobilenet_v3":
        # stages starting at strides 8, 16 and the final 32 conv: the same P3-P7 levels as the ResNets
        body = _mobilenet_extractor(
            network, True, layers, returned_layers=[2, 3, 5], extra_blocks=LastLevelP6P7(256, 256)
        )
    else:
        body = _resnet_fpn_extractor(
            network, layers, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)
        )
    anchors = AnchorGenerator(tuple(octaves(anchor_base * 2**i) for i in range(5)), ((0.5, 1.0, 2.0),) * 5)
    return body, anchors


def _replace_fpn(body: nn.Module, channels: int) -> None:
    """Swap torchvision's fixed 256-channel FPN for a ``channels``-wide one (same inputs and extra levels)."""
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

    old = body.fpn
    in_channels = [block[0].in_channels for block in old.inner_blocks]
    extra = (
        LastLevelP6P7(channels, channels)
        if isinstance(old.extra_blocks, LastLevelP6P7)
        else LastLevelMaxPool()
    )
    body.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=extra)
    body.out_channels = channels


def build_detector(
    arch: str,
    backbone: str = "resnet50",
    num_classes: int = 91,
    min_size: int = 800,
    max_size: int = 1333,
    trainable_layers: int | None = None,
    **options: Any,
) -> nn.Module:
    """Build a torchvision Faster R-CNN or RetinaNet with an FPN backbone and random weights.

    Args:
        arch: ``fasterrcnn`` or ``retinanet``.
        backbone: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` or ``mobilenet_v3`` (large).
        num_classes: foreground classes + 1 (background), e.g. 4 for BCCD.
        min_size, max_size: the model transform's resize (shorter side to ``min_size`` unless the longer
            side would exceed ``max_size``). Teacher and student must use identical values for their FPN
            maps to align. For images pre-resized to longest side ``S`` use ``max_size=S`` and ``min_size``
            = the shorter side so nothing is resized again.
        trainable_layers: backbone stages left trainable; None = all (5 for ResNets, 6 for MobileNetV3).
        options: ``preset`` (``cpu``|``torchvision``, default ``cpu``), ``box_detections_per_img``,
            ``box_score_thresh`` (0.05), ``box_nms_thresh`` (0.5), ``anchor_base`` (smallest anchor, 32;
            e.g. 16 for small images), ``fpn_channels`` (256; 128 makes the FPN and RPN convs ~4x
            cheaper on CPU; teacher and student must match), ``norm`` (``batchnorm`` | ``frozen``; default
            ``frozen`` with a ``backbone_checkpoint``, else ``batchnorm``), ``backbone_checkpoint`` (path);
            Faster R-CNN only: ``rpn_pre_nms_top_n_train/test``, ``rpn_post_nms_top_n_train/test``,
            ``rpn_batch_size_per_image``, ``box_batch_size_per_image``, ``representation_size``;
            RetinaNet only: ``topk_candidates``, ``head_norm`` (``none``: torchvision's
            ``retinanet_resnet50_fpn``; ``groupnorm``: GroupNorm(32) after each head conv, as its
            ``retinanet_resnet50_fpn_v2``).
    """
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    if arch not in ARCHS:
        raise KdlabError(f"unknown detector arch '{arch}'{did_you_mean(arch, list(ARCHS))}: choose one of "
                         f"{_choices(ARCHS)}")
    if backbone not in BACKBONES:
        raise KdlabError(f"unknown detector backbone '{backbone}'{did_you_mean(str(backbone), list(BACKBONES))}: "
                         f"choose one of {_choices(BACKBONES)}")
    own = _FASTERRCNN_OPTIONS if arch == "fasterrcnn" else _RETINANET_OPTIONS
    other = _RETINANET_OPTIONS if arch == "fasterrcnn" else _FASTERRCNN_OPTIONS
    for name in options:
        if name in other:
            raise KdlabError(
                f"option '{name}' applies to {'retinanet' if arch == 'fasterrcnn' else 'fasterrcnn'} "
                f"only: remove it for {arch}"
            )
        if name not in own and name not in _COMMON_OPTIONS:
            raise KdlabError(
                f"unknown detector option '{name}': valid options for {arch} are "
                f"{_choices(_COMMON_OPTIONS + own)}"
            )
    if int(num_classes) < 2:
        raise KdlabError(
            f"num_classes={num_classes} must count the background too (K foreground classes -> K + 1)"
        )
    if int(min_size) <= 0 or int(max_size) < int(min_size):
        raise KdlabError(f"min_size={min_size}, max_size={max_size}: need 0 < min_size <= max_size")
    preset_name = options.pop("preset", "cpu")
    if preset_name not in PRESETS:
        raise KdlabError(f"unknown detector preset '{preset_name}': choose one of {_choices(PRESETS)}")
    settings = {
        k: (v[arch] if isinstance(v, dict) else v)
        for k, v in (CPU_PRESET if preset_name == "cpu" else TORCHVISION_PRESET).items()
    }
    settings.update(options)
    checkpoint = settings.get("backbone_checkpoint")
    norm = settings.get("norm", "frozen" if checkpoint else "batchnorm")
    if norm not in NORMS:
        raise KdlabError(f"unknown norm '{norm}': choose one of {_choices(NORMS)}")

    body, anchors = _build_backbone(
        arch, backbone, trainable_layers, norm, int(settings.get("anchor_base", 32)), checkpoint
    )
    fpn_channels = int(settings.get("fpn_channels", 256))
    if fpn_channels <= 0:
        raise KdlabError(f"fpn_channels={fpn_channels} must be positive (torchvision uses 256)")
    if fpn_channels != body.out_channels:
        _replace_fpn(body, fpn_channels)
    common = {
        "min_size": int(min_size),
        "max_size": int(max_size),
    }
    if arch == "fasterrcnn":
        resolution = 7
        representation = int(settings["representation_size"])
        model = FasterRCNN(
            body,
            num_classes=None,
            rpn_anchor_generator=anchors,
            box_head=TwoMLPHead(body.out_channels * resolution**2, representation),
            box_predictor=FastRCNNPredictor(representation, int(num_classes)),
            rpn_pre_nms_top_n_train=int(settings["rpn_pre_nms_top_n_train"]),
            rpn_pre_nms_top_n_test=int(settings["rpn_pre_nms_top_n_test"]),
            rpn_post_nms_top_n_train=int(settings["rpn_post_nms_top_n_train"]),
            rpn_post_nms_top_n_test=int(settings["rpn_post_nms_top_n_test"]),
            rpn_batch_size_per_image=int(settings["rpn_batch_size_per_image"]),
            box_batch_size_per_image=int(settings["box_batch_size_per_image"]),
            box_detections_per_img=int(settings["box_detections_per_img"]),
            box_score_thresh=float(settings.get("box_score_thresh", 0.05)),
            box_nms_thresh=float(settings.get("box_nms_thresh", 0.5)),
            **common,
        )
    else:
        from torchvision.models.detection.retinanet import RetinaNetHead

        head_norm = settings.get("head_norm", "none")
        if head_norm not in HEAD_NORMS:
            raise KdlabError(f"unknown head_norm '{head_norm}': choose one of {_choices(HEAD_NORMS)}")
        if head_norm == "groupnorm" and body.out_channels % 32:
            raise KdlabError(f"head_norm groupnorm needs fpn_channels divisible by 32 (32 groups), not "
                             f"{body.out_channels}")
        norm_layer = partial(nn.GroupNorm, 32) if head_norm == "groupnorm" else None
        model = RetinaNet(
            body,
            int(num_classes),
            anchor_generator=anchors,
            head=RetinaNetHead(body.out_channels, anchors.num_anchors_per_location()[0], int(num_classes),
                               norm_layer=norm_layer),
            topk_candidates=int(settings["topk_candidates"]),
            detections_per_img=int(settings["box_detections_per_img"]),
            score_thresh=float(settings.get("box_score_thresh", 0.05)),
            nms_thresh=float(settings.get("box_nms_thresh", 0.5)),
            **common,
        )
    return model


# --------------------------------------------------------------------------- FPN features
def fpn_module_path(detector: nn.Module) -> str:
    """Dotted name of the submodule whose forward output is the ordered dict of FPN levels.

    For torchvision's Faster R-CNN and RetinaNet it is ``backbone`` (body + FPN), called on the
    transformed (resized, normalised, padded) image batch.
    """
    backbone = getattr(detector, "backbone", None)
    if backbone is None or not hasattr(backbone, "fpn"):
        raise KdlabError(f"{type(detector).__name__} has no backbone with an FPN: use a kdlab detector")
    return "backbone"


def fpn_levels(detector: nn.Module, images: Sequence[Tensor]) -> OrderedDict[str, Tensor]:
    """FPN levels of ``images`` (list of float ``3 x H x W`` in [0, 1]) after the detector's own transform.

    Runs ``detector.transform`` then ``detector.backbone``; gradients flow unless the caller uses
    ``torch.no_grad()``. Teacher and student maps align level by level when both transforms resize
    identically (same ``min_size``/``max_size``: see :func:`check_fpn_compatible`).
    """
    image_list, _ = detector.transform(list(images))
    features = detector.get_submodule(fpn_module_path(detector))(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    return features


@contextmanager
def capture_fpn(detector: nn.Module) -> Iterator[OrderedDict[str, Tensor]]:
    """Record the FPN levels computed during an ordinary ``detector(images, targets)`` call.

    ``with capture_fpn(student) as levels: losses = student(images, targets)`` leaves the levels of that
    forward pass (with their autograd graph) in ``levels``, so the detection loss and a feature loss share
    one forward pass.
    """
    captured: OrderedDict[str, Tensor] = OrderedDict()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        captured.clear()
        captured.update(output if not isinstance(output, Tensor) else {"0": output})

    handle = detector.get_submodule(fpn_module_path(detector)).register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def capture_transformed_boxes(detector: nn.Module) -> Iterator[dict[str, Any]]:
    """Record the ground-truth boxes as the detector's own transform left them during ``detector(images,
    targets)``: ``"boxes"``, one K x 4 (x1, y1, x2, y2) tensor per image in the pixels of the resized image,
    and ``"batch_size"``, the (H, W) of the padded batch tensor that the backbone (and so the FPN) sees.

    A forward hook on ``detector.transform`` (torchvision's ``GeneralizedRCNNTransform`` resizes images and
    boxes together, then pads to a multiple of ``size_divisible``): the boxes are the ones the detector
    trains on, with no second resize. Empty when the call had no targets.
    """
    captured: dict[str, Any] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        image_list, targets = output
        captured.clear()
        if targets is not None:
            captured["boxes"] = [target["boxes"] for target in targets]
            captured["batch_size"] = tuple(int(side) for side in image_list.tensors.shape[-2:])

    handle = detector.transform.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _transform_sizes(detector: nn.Module) -> tuple[Any, Any, Any]:
    transform = detector.transform
    return tuple(transform.min_size), transform.max_size, getattr(transform, "fixed_size", None)


def _fpn_channels(detector: nn.Module) -> int:
    return int(detector.get_submodule(fpn_module_path(detector)).out_channels)


def fpn_level_channels(detector: nn.Module) -> dict[str, int]:
    """FPN level name -> channel count, from a tiny dry run of the backbone + FPN (64 x 64, no grad)."""
    module = detector.get_submodule(fpn_module_path(detector))
    parameter = next(module.parameters())
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            levels = module(torch.zeros(1, 3, 64, 64, device=parameter.device, dtype=parameter.dtype))
    finally:
        module.train(was_training)
    return {name: int(level.shape[1]) for name, level in levels.items()}


def check_fpn_compatible(teacher: nn.Module, student: nn.Module, adapter: bool = False) -> None:
    """Raise KdlabError unless the teacher's and student's FPN maps can be compared level by level.

    Requires identical transform resizing (min_size, max_size, fixed_size), the same FPN level names,
    and the same channel count (unless ``adapter`` — a learned 1x1 conv on the student — is enabled).
    """
    t_sizes, s_sizes = _transform_sizes(teacher), _transform_sizes(student)
    if t_sizes != s_sizes:
        raise KdlabError(
            "teacher and student resize images differently "
            f"(teacher min_size/max_size {t_sizes[0]}/{t_sizes[1]}, "
            f"student {s_sizes[0]}/{s_sizes[1]}): use identical min_size/max_size so FPN maps align"
        )
    t_channels, s_channels = _fpn_channels(teacher), _fpn_channels(student)
    if t_channels != s_channels and not adapter:
        raise KdlabError(
            f"FPN channels differ (teacher {t_channels}, student {s_channels}): use backbones with equal FPN "
            "width or enable the 1x1 adapter (method.feature.adapter: true)"
        )
    t_levels, s_levels = list(fpn_level_channels(teacher)), list(fpn_level_channels(student))
    if t_levels != s_levels:
        raise KdlabError(
            f"FPN levels differ (teacher {t_levels}, student {s_levels}): use the same detector arch and a "
            "backbone family with the same levels (ResNets share them; a mobilenet_v3 Faster R-CNN has fewer)"
        )


def detector_arch(detector: nn.Module) -> str:
    """``fasterrcnn`` or ``retinanet``: the ``build_detector`` arch of a torchvision detector."""
    from torchvision.models.detection import FasterRCNN, RetinaNet

    if isinstance(detector, FasterRCNN):
        return "fasterrcnn"
    if isinstance(detector, RetinaNet):
        return "retinanet"
    raise KdlabError(f"{type(detector).__name__} is not a kdlab detector (Faster R-CNN or RetinaNet)")


# what a detector's backbone body holds: every other entry of its state dict is the neck (FPN) or a head
BACKBONE_BODY = "backbone.body."


def copy_neck_and_heads(teacher: nn.Module, student: nn.Module) -> list[str]:
    """Copy every entry of the teacher's state dict except the backbone body's (the FPN ``backbone.fpn``, the RPN and
    RoI heads or RetinaNet's ``head``, parameters and buffers) into the student; returns the copied names.

    FGD's ``init_student`` (``yzd-v/FGD`` ``mmdet/distillation/distillers/detection_distiller.py``: the teacher's
    checkpoint less ``backbone.*`` loaded into the student) and MMRazor MGD's ``neck.`` / ``bbox_head.`` init.
    The reference loader skips an entry whose shape differs with a warning; here any missing or differently shaped
    entry raises ``KdlabError`` (one line, the first one named) before anything is copied."""
    source = {name: value for name, value in teacher.state_dict().items() if not name.startswith(BACKBONE_BODY)}
    target = student.state_dict()
    for name, value in source.items():
        mine = target.get(name)
        if mine is None or mine.shape != value.shape:
            theirs = "absent" if mine is None else list(mine.shape)
            raise KdlabError(
                f"method.feature.init_from_teacher: the teacher's neck and heads do not fit the student ({name}: "
                f"teacher {list(value.shape)}, student {theirs}): use the teacher's arch, FPN width and head options "
                "for the student, or set method.feature.init_from_teacher: false")
    with torch.no_grad():
        for name, value in source.items():
            target[name].copy_(value)
    return list(source)
