"""Structural knowledge distillation for object detection.

Source: de Rijk, Schneider, Cordts & Gavrila, "Structural Knowledge Distillation for Object Detection",
NeurIPS 2022. The student detector keeps its own detection losses and imitates the teacher's FPN levels with a
structural (SSIM) loss instead of the usual pixel-wise l_p feature-imitation loss:

    L = L_det(student) + lambda * sum_{levels i} mean_{b,c,h,w} (1 - SSIM(psi(phi_i(F_s^i)), psi(F_t^i))) / 2

(``feature.ssim_form: halved``, the default and the paper's L_SSIM as transcribed; ``one_minus`` drops the
``/ 2``, which doubles the term for the same lambda.)

* ``L_det``: the detector's own loss dict, summed (Faster R-CNN: ``loss_classifier``, ``loss_box_reg``,
  ``loss_objectness``, ``loss_rpn_box_reg``; RetinaNet: ``classification``, ``bbox_regression``);
* ``F_s^i``, ``F_t^i``: level ``i`` of the student's and the frozen teacher's FPN on the SAME (augmented) images;
  teacher and student resize identically (checked by ``check_fpn_compatible``), so the levels align;
* ``lambda`` = ``method.feature.weight``, default 2: the paper's lambda ablation found 2 and 4 best (within
  ~0.5 AP) for (1 - SSIM) / 2. It multiplies the per-level loss summed over levels, whatever ``kind`` is: per
  level (1 - SSIM) / 2 and, with psi, mean |d| and mean d^2 all lie in [0, 1]; ``one_minus`` lies in [0, 2]
  (see ``kdlab.losses.multilevel``);
* ``kind`` = ``method.feature.kind`` swaps the per-level SSIM term for the l1 / l2 baselines on the same
  features, or for a detection-distillation peer on the raw features: ``pkd`` (Cao et al. 2022), ``cwd`` (Shu
  et al. 2021), ``mgd`` (Yang et al. 2022; one learned generator per level, trained and saved with the student
  like the adapters, its masks drawn from the engine's generator); see ``kdlab.losses.multilevel``
  (``"none"``: detection losses alone, no teacher forward at all), or ``fgd`` (Yang et al., CVPR 2022: box
  masks, attention-weighted errors, attention and global terms; ``kdlab.losses.fgd``). FGD reads the
  ground-truth boxes as the student's own transform resized them (a forward hook on ``student.transform``,
  ``capture_transformed_boxes``: no second resize, and the detector is unchanged) and scales them to each
  level by the level's size over the padded batch's; its two context blocks per level (student side and
  teacher side, as the references) are trained and saved like the adapters.

Readings chosen where the paper leaves room (each one is a recipe option):

* psi: min-max normalisation to [0, 1] per (sample, channel) map (``feature.normalize: sample_channel``, the
  default), because SSIM's constants assume data in [0, L] with L = 1 and FPN features are signed; the same psi is
  applied to the l1 / l2 baselines so the ablation changes one thing only (``normalize: none`` gives raw-feature
  l_p). See ``kdlab.losses.ssim`` for why min-max rather than none.
* phi: the identity by default; ``feature.adapter: true`` adds one learned 1x1 convolution per FPN level on the
  student side (the "adaptation layer" of detection feature KD; required when the FPN widths differ). With equal
  widths it starts as the identity, so turning it on does not change the loss at initialisation. Adapters are
  trained with the student and saved in ``last.pt`` but are not part of the exported detector (``best.pt``).
* Levels (``feature.levels``): for ssim, l1 and l2 every level the FPN returns (P2-P5 + pool for Faster R-CNN,
  P3-P7 for RetinaNet), summed with equal weight (not averaged; the paper's L_feat = sum_r (1 / N_r)
  sum_{h,w,c}), so lambda multiplies the sum over levels; the per-level loss is a mean over batch, channels and
  positions. The peers distil the levels of their reference configs by default (``reference``: pkd, mgd and fgd
  leave Faster R-CNN's ``pool`` out, pkd RetinaNet's ``p7``; ``kdlab.config.methods.skd``), ``all`` every level.
* ``feature.init_from_teacher``: the student starts from the teacher's FPN and heads (everything but the backbone
  body; ``kdlab.models.detection.copy_neck_and_heads``), as FGD's configs and MGD's one-stage configs do (the
  default ``reference`` for those kinds); refused when the shapes differ.
* SSIM: full SSIM (``components: lcs``), 11-tap Gaussian window with sigma 1.5 (Wang et al. 2004), C1 and C2 for
  L = 1.

The teacher is held outside the module tree (``kdlab.methods.base``): it is frozen (``requires_grad``
False), always in eval mode and run under ``no_grad``, so it is neither trained nor checkpointed, and the
student's forward pass that produces the detection losses also provides its FPN levels (one forward).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from kdlab.config.methods.skd import SKDSettings, resolve_references
from kdlab.errors import KdlabError
from kdlab.losses.fgd import FGDContexts
from kdlab.losses.mgd import MGD_MASK_RATIO, mgd_generator
from kdlab.losses.multilevel import multilevel_feature_loss
from kdlab.methods.base import DistillationMethod
from kdlab.train.engine import StepResult


def level_adapter(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 convolution from the student's FPN width to the teacher's; the identity map when the widths match."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
    if in_channels == out_channels:
        with torch.no_grad():
            conv.weight.copy_(torch.eye(in_channels).view(in_channels, in_channels, 1, 1))
            conv.bias.zero_()
    return conv


class StructuralKD(DistillationMethod):
    """Registered submodules (trained, saved in ``last.pt``): ``student`` and, optionally, ``adapters`` and
    (``kind: mgd``) ``generators`` or (``kind: fgd``) ``contexts``, one per FPN level on the teacher's width.

    ``teacher`` may be None (a teacher's own training recipe): then the step is the detector's losses alone.
    A given teacher must be FPN-compatible with the student (``KdlabError`` otherwise), even when
    ``feature.kind`` is ``none``, so every cell of a ``kind`` ablation distils from (or ignores) the same teacher.
    """

    settings_class = SKDSettings
    teacher_optional = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None, spec: SKDSettings,
                 image_shape: tuple[int, ...] = (3, 32, 32)):
        from kdlab.models.detection import (
            check_fpn_compatible,
            copy_neck_and_heads,
            detector_arch,
            fpn_level_channels,
        )

        if teacher is not None:
            check_fpn_compatible(teacher, student, adapter=spec.feature.adapter)
        # settings built outside a recipe may still say ``reference``: the same resolution as a recipe's
        student_channels = fpn_level_channels(student)
        try:
            feature = resolve_references(spec.feature, detector_arch(student), list(student_channels),
                                         distills=teacher is not None)
        except ValueError as error:
            raise KdlabError(str(error)) from None
        if feature is not spec.feature:
            spec = spec.model_copy(update={"feature": feature})
        super().__init__(student, teacher, spec, image_shape)
        self.feature = feature
        self.levels = list(student_channels) if feature.levels == "all" else list(feature.levels)
        self.inherited: list[str] = []
        if teacher is not None and feature.init_from_teacher is True:  # kind none too: the initialisation alone
            self.inherited = copy_neck_and_heads(teacher, student)
        teacher_channels = fpn_level_channels(self.teacher) if self.distills else {}
        self.adapters = nn.ModuleDict()
        if self.distills and feature.adapter:
            for name in self.levels:
                self.adapters[name] = level_adapter(student_channels[name], teacher_channels[name])
        self.generators = nn.ModuleDict()
        if self.distills and feature.kind == "mgd":
            for name in self.levels:
                self.generators[name] = mgd_generator(teacher_channels[name])
        self.contexts = nn.ModuleDict()
        if self.distills and feature.kind == "fgd":
            for name in self.levels:
                self.contexts[name] = FGDContexts(teacher_channels[name])

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        from kdlab.models.detection import capture_fpn, capture_transformed_boxes, fpn_levels

        images, targets = batch
        fgd = self.distills and self.feature.kind == "fgd"
        boxes = capture_transformed_boxes(self.student) if fgd else nullcontext({})
        with capture_fpn(self.student) as student_levels, boxes as transformed:
            losses = self.student(images, targets)
        terms: dict[str, torch.Tensor] = dict(losses)
        if self.distills:
            with torch.no_grad():
                teacher_levels = fpn_levels(self.teacher, images)
            feature = self.feature
            terms[f"feat_{feature.kind}"] = multilevel_feature_loss(
                {name: student_levels[name] for name in self.levels},
                {name: teacher_levels[name] for name in self.levels},
                kind=feature.kind,
                weight=feature.weight,
                components=feature.components,
                normalize=feature.normalize,
                adapters=self.adapters if feature.adapter else None,
                ssim_form=feature.ssim_form,
                tau=feature.cwd.tau if feature.cwd is not None else 1.0,
                pkd_granularity=feature.pkd.granularity if feature.pkd is not None else "channel",
                generators=self.generators if feature.kind == "mgd" else None,
                mask_ratio=feature.mgd.mask_ratio if feature.mgd is not None else MGD_MASK_RATIO,
                rng=generator,
                boxes=transformed.get("boxes"),
                image_size=transformed.get("batch_size"),
                contexts=self.contexts if fgd else None,
                fgd_options=feature.fgd.model_dump() if feature.fgd is not None else None,
            )
        return StepResult(loss=sum(terms.values()), terms=terms)
