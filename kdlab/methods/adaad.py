"""Adaptive Adversarial Distillation (Huang, Chen, Wang, Lu, Cheng & Wang, "Boosting Accuracy and Robustness
of Student Models via Adaptive Adversarial Distillation", CVPR 2023):

    x'  = PGD_k maximising  KL( t(x') || s(x') )   (the student-teacher discrepancy: gradients through BOTH)
    L   = alpha KL( t(x') || s(x') ) + (1 - alpha) KL( t(x) || s(x) ),  alpha = 1   (``kdlab.losses.adaad``)

Follows boyellow/AdaAD ``AT_helper.py`` (``adaad_inner_loss``) and ``main.py`` (``--method AdaAD``): x' starts
at x + 0.001 N(0, 1) and ascends the KL summed over batch and classes with the student in EVAL mode
(``BN_eval``) and the teacher in eval mode; 10 steps of 2/255 at eps 8/255 (their parser's defaults are 16/255
and 4/255; kdlab uses the field's 8/255 for every method). The teacher stays frozen: its parameters never
require grad and it never leaves eval mode (``kdlab.methods.base``), so its BatchNorm statistics do not
change; only x' receives the gradient that flows through it. Then, in train mode, s(x) and s(x'), and without
grad t(x) and t(x'); the outer KLs average over batch x classes (``nn.KLDivLoss()`` on CIFAR-10, reduction
``mean``).

Cost: k + 2 student passes; k + 2 teacher forwards per image (k of them with a backward to the input).
"""

from __future__ import annotations

import torch

from kdlab.config.methods.adaad import AdaADSettings
from kdlab.losses import adaad_loss, soft_kl
from kdlab.methods.adversarial_step import AdversarialDistillation
from kdlab.train.engine import StepResult


class AdaAD(AdversarialDistillation):
    settings_class = AdaADSettings
    generation_mode = "eval"

    def objective(self, images, labels, teacher_logits=None):
        """KL(t(x') || s(x')) summed over the batch; the frozen teacher is run WITH grad (to x' only)."""
        return lambda adversarial: soft_kl(self.student(adversarial), self.teacher(adversarial), 1.0, "sum")

    def forward(self, batch, generator: torch.Generator) -> StepResult:
        images, labels = batch
        settings: AdaADSettings = self.settings  # type: ignore[assignment]
        adversarial = self.adversarial_examples(images, labels, generator)
        clean_logits = self.student(images)
        adversarial_logits = self.student(adversarial)
        teacher_clean, _ = self.teacher_outputs(images)
        teacher_adversarial, _ = self.teacher_outputs(adversarial)
        robust, natural = adaad_loss(adversarial_logits, clean_logits, teacher_adversarial, teacher_clean,
                                     alpha=settings.alpha, reduction=settings.reduction)
        terms = {"kl_adv": robust, "kl_clean": natural}
        correct = (clean_logits.argmax(1) == labels).sum()  # on the device: no host read
        return StepResult(loss=robust + natural, terms=terms, correct=correct, count=len(labels))
