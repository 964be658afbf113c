"""Knowledge distillation with soft targets (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network", 2015):

    L = ce_weight * CE(s(x), y) + weight * T^2 * KL( softmax(t(x) / T) || softmax(s(x) / T) )

on clean images, the teacher frozen (``kdlab.losses.kd``). Defaults are mdistiller's (``engine/cfg.py``:
``KD.LOSS.CE_WEIGHT`` 0.1, ``KD.LOSS.KD_WEIGHT`` 0.9, ``KD.TEMPERATURE`` 4; ``distillers/KD.py``), the same as
RepDistiller's KD runs (``train_student.py --distill kd -r 0.1 -a 0.9``, ``--kd_T 4``). Hinton et al. leave
the weights and T open; each is an option (``method.ce_weight``, ``method.weight``, ``method.temperature``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.config.methods.kd import KDSettings
from kdlab.losses import kd_loss
from kdlab.methods.base import DistillationMethod
from kdlab.train.engine import StepResult


class KD(DistillationMethod):
    settings_class = KDSettings

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        settings: KDSettings = self.settings  # type: ignore[assignment]
        teacher_logits, _ = self.teacher_outputs(images)
        logits = self.student(images)
        terms = {
            "ce": settings.ce_weight * F.cross_entropy(logits, labels),
            "kd": settings.weight * kd_loss(logits, teacher_logits, settings.temperature),
        }
        correct = (logits.argmax(1) == labels).sum()  # on the device: no host read
        return StepResult(loss=sum(terms.values()), terms=terms, correct=correct, count=len(labels))
