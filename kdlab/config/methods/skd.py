"""Structural KD's settings (``method: {name: skd}``, detection; the step: :mod:`kdlab.methods.skd`): the
per-FPN-level feature loss and the options of each kind.

Reference defaults. Where the peers' reference configs choose something that depends on the detector (two-stage
Faster R-CNN or one-stage RetinaNet), the option's default is ``reference`` and :func:`resolve_references` (the one
place) turns it into the value for the recipe's detector when the recipe is loaded (``kdlab.config.recipe``), so
the run's resolved recipe (``recipe.yaml``) records the value used. The references, read per kind and detector:

==========  ==============  =====================  ========================  ===========  ==============
kind        detector        levels                 neck + heads from T       MGD mask     clip (max norm)
==========  ==============  =====================  ========================  ===========  ==============
pkd         Faster R-CNN    P2-P5 (not ``pool``)   no                        --           no
pkd         RetinaNet       P3-P6 (not ``p7``)     no                        --           no
cwd         both            all five               no                        --           no
mgd         Faster R-CNN    P2-P5 (not ``pool``)   no                        0.45         35
mgd         RetinaNet       P3-P7 (all five)       yes                       0.65         35
fgd         Faster R-CNN    P2-P5 (not ``pool``)   yes                       --           35
fgd         RetinaNet       P3-P7 (all five)       yes                       --           35
ssim/l1/l2  both            all (kdlab's reading)  no                        --           no
==========  ==============  =====================  ========================  ===========  ==============

Sources: PKD, MMRazor ``configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py`` and
``pkd_fpn_retina_x101_retina_r50_2x_coco.py`` (neck outputs 0-3: mmdet's P2-P5 and P3-P6; no clipping, no
inheritance); CWD, MMRazor ``configs/distill/mmdet/cwd/cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py`` and
``cwd_fpn_retina_r101_retina_r50_1x_coco.py`` (neck outputs 0-4: every level; mmdet's Faster R-CNN P6 is the
stride-2 max pool of P5, torchvision's ``pool``); MGD, the authors' ``yzd-v/MGD``
``det/configs/distillers/mgd/cascade_mask_rcnn_rx101_32x4d_distill_faster_rcnn_r50_fpn_2x_coco.py`` (``neck.fpn_convs``
0-3, ``lambda_mgd=0.45``, no ``init_student``) and ``retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py``
(``fpn_convs`` 0-4, ``lambda_mgd=0.65``, ``init_student=True``; MMRazor's ``mgd_fpn_retina_x101_retina_r50_2x_coco.py``
loads ``neck.`` and ``bbox_head.`` from the teacher), both ``optimizer_config = dict(grad_clip=dict(max_norm=35,
norm_type=2))``; FGD, the authors' ``yzd-v/FGD`` ``configs/distillers/fgd/fgd_faster_rcnn_r101_fpn_2x_distill_faster_
rcnn_r50_fpn_2x_coco.py`` (``fpn_convs`` 0-3, alpha/beta/gamma/lambda 5e-5 / 2.5e-5 / 5e-5 / 5e-7) and
``fgd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py`` (``fpn_convs`` 0-4, 1e-3 / 5e-4 / 5e-4 / 5e-6), both
``init_student=True`` and max_norm 35. ``init_student`` (``mmdet/distillation/distillers/detection_distiller.py``,
``DetectionDistiller.__init__``) loads every entry of the teacher's state dict except ``backbone.*`` into the
student: in torchvision's detectors everything but ``backbone.body`` (the FPN ``backbone.fpn``, the RPN and RoI
heads, or RetinaNet's ``head``). The reference loader skips tensors whose shapes differ with a warning; kdlab
refuses such a teacher instead (``kdlab.methods.skd.inherit_from_teacher``), naming the first mismatch.

Old kdlab behaviour, each still an option: ``levels: all``, ``init_from_teacher: false``, ``mgd.mask_ratio:
0.65``, ``fgd.*_fgd`` at the RetinaNet values, ``train.grad_clip: null``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from kdlab.config.methods.base import MethodSettings
from kdlab.config.schema import Section


class PKDSpec(Section):
    """``kind: pkd`` (``kdlab.losses.pkd``; MMRazor ``PKDLoss``)."""

    granularity: Literal["channel", "sample_channel"] = Field(
        "channel", description="standardise each channel over batch and positions (MMRazor PKDLoss.norm) or "
                               "each (sample, channel) map over its positions")


class CWDSpec(Section):
    """``kind: cwd`` (``kdlab.losses.cwd``; MMRazor ``ChannelWiseDivergence``)."""

    tau: float = Field(1.0, gt=0, description="temperature of the spatial softmax (MMRazor detection configs: 1)")


class MGDSpec(Section):
    """``kind: mgd`` (``kdlab.losses.mgd``; the authors' ``FeatureLoss`` and MMRazor's MGD connector)."""

    mask_ratio: float | Literal["reference"] = Field(
        "reference", description="share of positions masked (lambda_mgd); reference: 0.45 for Faster R-CNN, 0.65 "
                                 "for RetinaNet (the authors' configs; kdlab before: 0.65 for both)")
    generator: Literal["conv3x3-relu-conv3x3"] = Field(
        "conv3x3-relu-conv3x3", description="the regenerating block per FPN level, trained and saved with the "
                                            "student (the references' only one)")


class FGDSpec(Section):
    """``kind: fgd`` (``kdlab.losses.fgd``; the authors' ``FeatureLoss`` and MMRazor ``FGDLoss``). The four weights
    default to ``reference``: the authors' config for the recipe's detector (:data:`FGD_REFERENCE_WEIGHTS`);
    ``method.feature.weight`` multiplies the whole sum, so ``weight: 1`` is the references' scale."""

    temp: float = Field(0.5, gt=0, description="temperature T of the spatial and channel attention (0.5)")
    alpha_fgd: float | Literal["reference"] = Field(
        "reference", description="weight of the foreground term (Faster R-CNN 5e-5, RetinaNet 0.001)")
    beta_fgd: float | Literal["reference"] = Field(
        "reference", description="weight of the background term (Faster R-CNN 2.5e-5, RetinaNet 0.0005)")
    gamma_fgd: float | Literal["reference"] = Field(
        "reference", description="weight of the attention (L1) term (Faster R-CNN 5e-5, RetinaNet 0.0005)")
    lambda_fgd: float | Literal["reference"] = Field(
        "reference", description="weight of the global (context block) term (Faster R-CNN 5e-7, RetinaNet 5e-6)")

    @model_validator(mode="after")
    def _weights_not_negative(self) -> FGDSpec:
        for name in FGD_WEIGHTS:
            value = getattr(self, name)
            if value != "reference" and value < 0:
                raise ValueError(f"fgd.{name} must be >= 0 (got {value})")
        return self


# Per-kind options: present (with defaults) exactly when ``kind`` uses them, so that another kind's run, and
# every run from before they existed, keeps its key (the recipe key leaves null options out).
KIND_OPTIONS = {"pkd": "pkd", "cwd": "cwd", "mgd": "mgd", "fgd": "fgd"}


class FeatureKDSpec(Section):
    """Feature distillation on detector FPN levels (Structural KD): L_det + weight * sum_levels ``kind``."""

    kind: Literal["none", "l1", "l2", "ssim", "pkd", "cwd", "mgd", "fgd"] = Field(
        "ssim",
        description="per-level loss, a mean over the level: ssim (form: ssim_form), l1 = |psi_s - psi_t|, "
        "l2 = (psi_s - psi_t)^2; detection peers on raw features: pkd (1 - Pearson, Cao et al. 2022), cwd "
        "(channel-wise softmax KL, Shu et al. 2021), mgd (masked generation, Yang et al. 2022, sum over the "
        "map), fgd (focal and global, Yang et al. 2022, needs the boxes, weighted inside); or none (no teacher "
        "forward)",
    )
    weight: float = Field(
        2.0,
        ge=0,
        description="lambda, multiplies the per-level loss summed over FPN levels; per level ssim halved, "
        "l1 and l2 (with psi) lie in [0, 1], ssim one_minus in [0, 2]; "
        "2 = the paper's (2 and 4 best, for (1 - SSIM)/2); the peers' references: pkd 6-10, cwd 10, mgd 2e-5, "
        "fgd 1 (its four weights are fgd.*_fgd)",
    )
    ssim_form: Literal["halved", "one_minus"] = Field(
        "halved",
        description="ssim per-level loss: halved = mean (1 - SSIM)/2 (the paper's L_SSIM, "
        "kornia.losses.ssim_loss), one_minus = mean (1 - SSIM), twice as large for the same lambda",
    )
    components: Literal["lcs", "cs", "s"] = Field(
        "lcs", description="SSIM terms: lcs = full SSIM, cs = contrast-structure, s = structure only"
    )
    normalize: Literal["sample_channel", "level", "none"] = Field(
        "sample_channel", description="psi (ssim, l1, l2): min-max to [0, 1] per (sample, channel) map, per "
                                      "sample, or none"
    )
    adapter: bool = Field(False, description="learned 1x1 conv per student FPN level (needed if FPN widths differ)")
    levels: Literal["reference", "all"] | list[str] = Field(
        "reference", description="FPN levels distilled (torchvision names: 0, 1, 2, 3, pool for Faster R-CNN; 0, 1, "
        "2, p6, p7 for RetinaNet); reference: the kind's reference config (pkd, mgd, fgd on Faster R-CNN: all but "
        "pool; pkd on RetinaNet: all but p7; otherwise all); all: every level (kdlab before); or a list of names")
    init_from_teacher: bool | Literal["reference"] = Field(
        "reference", description="copy the teacher's FPN and heads (everything but backbone.body) into the student "
        "before training (FGD's init_student, MGD's one-stage configs); reference: true for fgd and for mgd on "
        "RetinaNet, else false (kdlab before: false); refused when the shapes differ")
    pkd: PKDSpec | None = Field(None, description="kind pkd only (default granularity: channel)")
    cwd: CWDSpec | None = Field(None, description="kind cwd only (default tau: 1)")
    mgd: MGDSpec | None = Field(None, description="kind mgd only (default mask_ratio: reference)")
    fgd: FGDSpec | None = Field(None, description="kind fgd only (default: the authors' weights for the detector)")

    @model_validator(mode="before")
    @classmethod
    def _options_of_the_kind(cls, data):
        """A kind's own options get their defaults; other kinds' options are dropped (they change nothing)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind", "ssim")
        for option, owner in KIND_OPTIONS.items():
            if kind == owner:
                data[option] = {} if data.get(option) is None else data[option]
            else:
                data.pop(option, None)
        return data


FGD_WEIGHTS = ("alpha_fgd", "beta_fgd", "gamma_fgd", "lambda_fgd")
# alpha, beta, gamma, lambda of the authors' FGD configs per detector (module doc)
FGD_REFERENCE_WEIGHTS = {
    "fasterrcnn": {"alpha_fgd": 0.00005, "beta_fgd": 0.000025, "gamma_fgd": 0.00005, "lambda_fgd": 0.0000005},
    "retinanet": {"alpha_fgd": 0.001, "beta_fgd": 0.0005, "gamma_fgd": 0.0005, "lambda_fgd": 0.000005},
}
MGD_REFERENCE_MASK_RATIO = {"fasterrcnn": 0.45, "retinanet": 0.65}  # lambda_mgd of the authors' configs
# the levels a kind's reference config leaves out, per detector (module doc); every other (kind, detector): none
REFERENCE_LEFT_OUT = {("pkd", "fasterrcnn"): ("pool",), ("mgd", "fasterrcnn"): ("pool",),
                      ("fgd", "fasterrcnn"): ("pool",), ("pkd", "retinanet"): ("p7",)}
REFERENCE_INHERITS = {("fgd", "fasterrcnn"), ("fgd", "retinanet"), ("mgd", "retinanet")}
REFERENCE_GRAD_CLIP = {"mgd": 35.0, "fgd": 35.0}  # optimizer_config grad_clip max_norm of the MGD and FGD configs


def fpn_level_names(arch: str, backbone: str) -> list[str]:
    """The FPN level names of kdlab's detectors (``kdlab.models.detection.build_detector``), without building one:
    torchvision's Faster R-CNN P2-P5 + ``pool`` (two levels + ``pool`` on mobilenet_v3), RetinaNet P3-P7."""
    if arch == "retinanet":
        return ["0", "1", "2", "p6", "p7"]
    return ["0", "1", "pool"] if backbone == "mobilenet_v3" else ["0", "1", "2", "3", "pool"]


def reference_grad_clip(kind: str, distills: bool) -> float | None:
    """``train.grad_clip: reference`` for a detection recipe: max_norm 35 for a distilling mgd or fgd student (their
    configs' ``optimizer_config``), else no clipping (the PKD and CWD configs, the SKD reading, every teacher)."""
    return REFERENCE_GRAD_CLIP.get(kind) if distills else None


def resolve_references(feature: FeatureKDSpec, arch: str, level_names: Sequence[str], distills: bool) -> FeatureKDSpec:
    """``feature`` with every ``reference`` value replaced by the reference configs' choice for ``arch``
    (``fasterrcnn`` | ``retinanet``) and ``kind`` (module doc); ``level_names``: the detector's FPN levels, in
    order. A recipe that distils nothing (a teacher's own) resolves to the old behaviour (every level, no
    inheritance). ``ValueError`` (one line) for a ``levels`` list naming a level the detector lacks, or for
    ``init_from_teacher: true`` without a teacher. Resolved values pass through, so resolving twice changes
    nothing."""
    key = (feature.kind, arch)
    update: dict[str, Any] = {}
    if feature.levels == "reference":
        left_out = REFERENCE_LEFT_OUT.get(key, ()) if distills else ()
        update["levels"] = [name for name in level_names if name not in left_out] if left_out else "all"
    elif isinstance(feature.levels, list):
        unknown = [name for name in feature.levels if name not in level_names]
        if unknown or not feature.levels:
            raise ValueError(f"method.feature.levels: {unknown or '[]'} not among the {arch} FPN levels "
                             f"{list(level_names)}: name some of those, or reference, or all")
    if feature.init_from_teacher == "reference":
        update["init_from_teacher"] = distills and key in REFERENCE_INHERITS
    elif feature.init_from_teacher is True and not distills:
        raise ValueError("method.feature.init_from_teacher: true needs a teacher (a distillation recipe): drop it, "
                         "or set it to false")
    if feature.mgd is not None and feature.mgd.mask_ratio == "reference":
        update["mgd"] = feature.mgd.model_copy(update={"mask_ratio": MGD_REFERENCE_MASK_RATIO[arch]})
    if feature.fgd is not None:
        weights = {name: value for name, value in FGD_REFERENCE_WEIGHTS[arch].items()
                   if getattr(feature.fgd, name) == "reference"}
        if weights:
            update["fgd"] = feature.fgd.model_copy(update=weights)
    return feature.model_copy(update=update) if update else feature


class SKDSettings(MethodSettings):
    """Structural KD (``kdlab.methods.skd``): detector losses + lambda * per-FPN-level feature loss."""

    name: Literal["skd"] = "skd"
    tasks: ClassVar[tuple[str, ...]] = ("detection",)
    feature: FeatureKDSpec = FeatureKDSpec()

    @property
    def teacher_forwards(self) -> float:
        return 0.0 if self.feature.kind == "none" else 1.0

    def with_references(self, arch: str, backbone: str, distills: bool) -> SKDSettings:
        """The settings with ``reference`` values resolved for the recipe's detector (:func:`resolve_references`)."""
        feature = resolve_references(self.feature, arch, fpn_level_names(arch, backbone), distills)
        return self if feature is self.feature else self.model_copy(update={"feature": feature})

    def reference_grad_clip(self, distills: bool) -> float | None:
        return reference_grad_clip(self.feature.kind, distills)
