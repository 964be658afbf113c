"""FitNets: hint-based feature distillation (Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for
Thin Deep Nets", ICLR 2015):

    L = ce_weight * CE(s(x), y) + weight * mean( (r(F_s^hint(x)) - F_t^hint(x))^2 )

``F^hint``: the output of the hint block (``method.block`` of the student, ``method.teacher_block`` of the
teacher); ``r``: the regressor, a learned 1x1 convolution connector to the teacher's channel count
(``kdlab.models.connectors``), trained with the student and dropped after training; the loss is ``kdlab.losses.fitnet``.

Training follows mdistiller's one-stage FitNet (``distillers/FitNet.py``; defaults from ``engine/cfg.py``:
``HINT_LAYER`` 2, i.e. the middle stage of a 3-stage CIFAR ResNet, kdlab block 3; ``CE_WEIGHT`` 1;
``FEAT_WEIGHT`` 100): hint and label losses together from the first step, not the paper's two stages (hint
pre-training of the lower layers, then KD), which RepDistiller and mdistiller also drop. Regressor:
``connector: conv1x1-bn`` (1x1 conv + BatchNorm; mdistiller's ``ConvReg`` adds a ReLU, the paper's regressor is
a plain convolution: ``connector: conv1x1``). Hint maps must have the same spatial size in student and teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config.methods.fitnet import FitNetSettings
from kdlab.losses import hint_loss
from kdlab.methods.base import DistillationMethod, block_channels
from kdlab.models.connectors import build_connector
from kdlab.models.taps import FeatureTaps
from kdlab.train.engine import StepResult


class FitNet(DistillationMethod):
    """Registered submodules: ``student`` and ``regressor``."""

    settings_class = FitNetSettings

    def __init__(self, student: nn.Module, teacher: nn.Module | None, settings: FitNetSettings,
                 image_shape: tuple[int, ...] = (3, 32, 32)):
        super().__init__(student, teacher, settings, image_shape)
        self.block = settings.block
        self.teacher_block = settings.teacher_block if settings.teacher_block is not None else settings.block
        (s_channels,) = block_channels(student, [self.block], image_shape)
        (t_channels,) = block_channels(self.teacher, [self.teacher_block], image_shape)
        self.regressor = build_connector(s_channels, t_channels, settings.connector)

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        settings: FitNetSettings = self.settings  # type: ignore[assignment]
        _, teacher_taps = self.teacher_outputs(images, [self.teacher_block])
        with FeatureTaps(self.student, [self.block]) as student_taps:
            logits = self.student(images)
        hint = hint_loss(self.regressor(student_taps[self.block]), teacher_taps[self.teacher_block])
        terms = {"ce": settings.ce_weight * F.cross_entropy(logits, labels), "hint": settings.weight * hint}
        correct = (logits.argmax(1) == labels).sum()  # on the device: no host read
        return StepResult(loss=sum(terms.values()), terms=terms, correct=correct, count=len(labels))
