"""Adversarially Robust Distillation (Goldblum, Fowl, Feizi & Goldstein, AAAI 2020):

    x'  = PGD_k maximising  CE( s(x'), y )                        (the student's own adversarial example)
    L   = alpha * T^2 * KL( t(x)/T || s(x')/T ) + (1 - alpha) * CE( s(x), y )      (``kdlab.losses.ard``)

Follows goldblum/AdversariallyRobustDistillation ``main.py``: its ``AttackPGD`` wraps the STUDENT and
ascends the student's cross-entropy on the true labels (``F.cross_entropy(self.basic_net(x), targets,
size_average=False)``), not the KL to the teacher; the attack runs inside ``net.train()``, so the student is
in train mode while x' is made (BatchNorm uses and updates batch statistics); a uniform start in [-eps, eps];
10 steps of 2/255 at eps 8/255. The outer step then forwards s(x'), the teacher on the clean x and s(x), in
that order; ``alpha`` 1.0 and ``T`` 30 are their defaults (``--alpha``, ``--temp``), the KL reduction ``mean``
over batch x classes (``nn.KLDivLoss()``). kdlab's one deviation: the uniform start is clipped to [0, 1]
(kdlab's PGD, shared by every method); their start is clipped only after the first step.

Cost: k inner passes of the student, then s(x') and s(x) (the clean pass runs even with alpha = 1, as in their
code, where it only updates BatchNorm statistics): k + 2 student passes and 1 teacher forward per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.config.methods.ard import ARDSettings
from kdlab.losses import ard_loss
from kdlab.methods.adversarial_step import AdversarialDistillation
from kdlab.train.engine import StepResult


class ARD(AdversarialDistillation):
    settings_class = ARDSettings
    generation_mode = "train"

    def objective(self, images, labels, teacher_logits=None):
        """CE(s(x'), y), summed over the batch (their ``size_average=False``; the sign step ignores scale)."""
        return lambda adversarial: F.cross_entropy(self.student(adversarial), labels, reduction="sum")

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        settings: ARDSettings = self.settings  # type: ignore[assignment]
        adversarial = self.adversarial_examples(images, labels, generator)
        adversarial_logits = self.student(adversarial)
        teacher_logits, _ = self.teacher_outputs(images)
        clean_logits = self.student(images)
        kl, ce = ard_loss(adversarial_logits, clean_logits, teacher_logits, labels, alpha=settings.alpha,
                          temperature=settings.temperature, reduction=settings.reduction)
        terms = {"ard_kl": kl, "ce": ce}
        correct = (clean_logits.argmax(1) == labels).sum()  # on the device: no host read
        return StepResult(loss=kl + ce, terms=terms, correct=correct, count=len(labels))
