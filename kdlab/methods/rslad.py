"""Robust Soft Label Adversarial Distillation (Zi, Zhao, Ma & Jiang, ICCV 2021):

    x'  = PGD_k maximising  KL( t(x) || s(x') )          (the teacher's soft labels replace the hard label)
    L   = alpha * KL( t(x) || s(x') ) + (1 - alpha) * KL( t(x) || s(x) ),  alpha = 5/6   (kdlab.losses.rslad)

Follows zibojia/RSLAD ``rslad_loss.py`` (``rslad_inner_loss``) and ``resnet18_rslad_cifar10.py``: the
teacher's logits on the clean x are computed once without grad; x' starts at x + 0.001 N(0, 1) and ascends the
KL summed over batch and classes (``nn.KLDivLoss(size_average=False, reduce=False)`` then ``torch.sum``) with
the student in EVAL mode (``model.eval()``; BatchNorm statistics frozen), 10 steps of 2/255 at eps 8/255; back
in train mode the step forwards s(x') then s(x). The outer KLs average over batch x classes (``torch.mean``,
reduction ``mean``). No cross-entropy on the hard labels. Their CIFAR-100 scripts (``resnet18_rslad_cifar100.py``)
multiply both outer means by 10: ``method.kl_scale: 10`` (the loss times kl_scale; 1 by default, the CIFAR-10
scripts').

Cost: k + 2 student passes, 1 teacher forward per image.
"""

from __future__ import annotations

import torch

from kdlab.config.methods.rslad import RSLADSettings
from kdlab.losses import rslad_loss, soft_kl
from kdlab.methods.adversarial_step import AdversarialDistillation
from kdlab.train.engine import StepResult


class RSLAD(AdversarialDistillation):
    settings_class = RSLADSettings
    generation_mode = "eval"

    def objective(self, images, labels, teacher_logits=None):
        """KL(t(x) || s(x')) summed over the batch, t(x) fixed (computed without grad)."""
        if teacher_logits is None:
            teacher_logits, _ = self.teacher_outputs(images)
        return lambda adversarial: soft_kl(self.student(adversarial), teacher_logits, 1.0, "sum")

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        settings: RSLADSettings = self.settings  # type: ignore[assignment]
        teacher_logits, _ = self.teacher_outputs(images)
        adversarial = self.adversarial_examples(images, labels, generator, teacher_logits)
        adversarial_logits = self.student(adversarial)
        clean_logits = self.student(images)
        robust, natural = rslad_loss(adversarial_logits, clean_logits, teacher_logits, alpha=settings.alpha,
                                     reduction=settings.reduction, scale=settings.kl_scale)
        terms = {"kl_adv": robust, "kl_clean": natural}
        correct = (clean_logits.argmax(1) == labels).sum()  # on the device: no host read
        return StepResult(loss=robust + natural, terms=terms, correct=correct, count=len(labels))
