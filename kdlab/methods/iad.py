"""Introspective Adversarial Distillation, IAD-I (Zhu, Yao, Han, Zhang, Liu, Niu, Zhou, Xu & Yang, "Reliable
Adversarial Distillation with Unreliable Teachers", ICLR 2022):

    x'  = PGD_k maximising  CE( s(x'), y )                                        (ARD's inner loop)
    w_b = P_t( y_b | x'_b )^beta               (how far the teacher is trusted on this adversarial example)
    L   = alpha T^2 mean_b KL( t(x)/T || s(x')/T ) + alpha mean_b (1 - w_b) KL( s(x) || s(x') )
          + (1 - alpha) CE( s(x), y )                                             (``kdlab.losses.iad``)

with the introspection term only after ``warmup_epochs`` (plain ARD before). Follows ZFancy/IAD ``IAD-I.py``,
the single-teacher variant built on their ARD (``ARD.py``; ``IAD-II.py`` adds a second, standard teacher on
the AKD base and is not reproduced): the student's CE attack in train mode (``net.train()`` around
``AttackPGD``), uniform start, 10 steps of 2/255 at eps 8/255; then s(x') (``AttackPGD``'s return), one more
train-mode pass s(x') whose output is thrown away (``basicop = basic_net(pert_inputs).detach()``; its only
effect is a BatchNorm running-statistics update, ``method.bn_update_pass``), s(x), the teacher on x and on x'
(``guide``, the confidence, a number without gradient), and after the warm-up a second forward pass s(x) as
the introspection target, not detached (``method.second_clean_pass``). Defaults ``--alpha 1.0 --temp 1.0
--beta 0.1 --begin 60`` (of 200 epochs; their epochs count from 0, kdlab's from 1, so the term starts at kdlab
epoch ``warmup_epochs + 1`` in both). KLs summed over classes and divided by the batch (``batchmean``).

The epoch comes from the engine (:meth:`set_epoch`, called before every epoch, also on resume).

Cost after the warm-up: k + 4 student passes (k + 3 before it; the BatchNorm-update pass is a forward only),
2 teacher forwards per image. With ``bn_update_pass: false`` (kdlab before issue #24) one pass fewer, and the
BatchNorm running statistics differ from the reference's from the first step on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.config.methods.iad import IADSettings
from kdlab.losses import iad_loss, teacher_confidence
from kdlab.methods.adversarial_step import AdversarialDistillation
from kdlab.train.engine import StepResult


class IAD(AdversarialDistillation):
    settings_class = IADSettings
    generation_mode = "train"

    def __init__(self, student, teacher, settings: IADSettings, image_shape=(3, 32, 32)):
        super().__init__(student, teacher, settings, image_shape)
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def introspecting(self) -> bool:
        """Whether this epoch is past the warm-up (kdlab's epochs count from 1)."""
        return self.epoch > self.settings.warmup_epochs  # type: ignore[attr-defined]

    def objective(self, images, labels, teacher_logits=None):
        """CE(s(x'), y) summed over the batch (ARD's attack, which IAD-I keeps)."""
        return lambda adversarial: F.cross_entropy(self.student(adversarial), labels, reduction="sum")

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        settings: IADSettings = self.settings  # type: ignore[assignment]
        teacher_logits, _ = self.teacher_outputs(images)
        adversarial = self.adversarial_examples(images, labels, generator)
        adversarial_logits = self.student(adversarial)
        if settings.bn_update_pass:
            with torch.no_grad():  # IAD-I.py's basicop: train mode, so BatchNorm's running statistics update
                self.student(adversarial)
        clean_logits = self.student(images)
        teacher_adversarial_logits, _ = self.teacher_outputs(adversarial)
        confidence = self_target = None
        if self.introspecting:
            confidence = teacher_confidence(teacher_adversarial_logits, labels, settings.beta)
            self_target = self.student(images) if settings.second_clean_pass else None
        terms = iad_loss(adversarial_logits, clean_logits, teacher_logits, labels, alpha=settings.alpha,
                         temperature=settings.temperature, confidence=confidence,
                         self_target_logits=self_target, reduction=settings.reduction)
        correct = (clean_logits.argmax(1) == labels).sum()  # on the device: no host read
        return StepResult(loss=sum(terms.values()), terms=terms, correct=correct, count=len(labels))
