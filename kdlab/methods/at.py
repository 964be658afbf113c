"""Attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer", ICLR 2017):

    L = ce_weight * CE(s(x), y) + beta * sum_j mean( (Q(F_s^j(x)) - Q(F_t^j(x)))^2 ),  Q(F) = normalize(mean_c |F_c|^p)

over the paired blocks ``j`` (``method.blocks`` / ``method.teacher_blocks``; default every stage, kdlab blocks
2, 3, 4 of a 3-stage ResNet, as the authors' ``cifar.py`` (group outputs g0, g1, g2) and mdistiller
(``feats[1:]``)). The loss is ``kdlab.losses.attention``. Defaults: p = 2 and beta = 1000 (mdistiller
``engine/cfg.py`` ``AT.P``, ``AT.LOSS.FEAT_WEIGHT``; the authors' README: beta = 1e3), CE weight 1, no soft
labels (the paper's AT without KD). No connector: the channel mean makes the maps width-independent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.config.methods.at import ATSettings
from kdlab.losses import attention_loss
from kdlab.methods.base import DistillationMethod
from kdlab.models.taps import FeatureTaps
from kdlab.train.engine import StepResult


class AttentionTransfer(DistillationMethod):
    settings_class = ATSettings

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        settings: ATSettings = self.settings  # type: ignore[assignment]
        teacher_blocks = settings.teacher_blocks if settings.teacher_blocks is not None else settings.blocks
        _, teacher_taps = self.teacher_outputs(images, teacher_blocks)
        with FeatureTaps(self.student, settings.blocks) as student_taps:
            logits = self.student(images)
        transfer = sum(attention_loss(student_taps[s], teacher_taps[t], settings.p)
                       for s, t in zip(settings.blocks, teacher_blocks))
        terms = {"ce": settings.ce_weight * F.cross_entropy(logits, labels), "at": settings.weight * transfer}
        correct = (logits.argmax(1) == labels).sum()  # on the device: no host read
        return StepResult(loss=sum(terms.values()), terms=terms, correct=correct, count=len(labels))
