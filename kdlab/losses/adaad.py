"""Adaptive Adversarial Distillation (Huang, Chen, Wang, Lu, Cheng & Wang, "Boosting Accuracy and Robustness
of Student Models via Adaptive Adversarial Distillation", CVPR 2023), the outer loss:

    L_AdaAD = alpha * KL( t(x') || s(x') ) + (1 - alpha) * KL( t(x) || s(x) ),   alpha = 1,  T = 1

``x'`` maximises the student-teacher discrepancy ``KL(t(x') || s(x'))`` (``kdlab.methods.adaad``); the teacher
is evaluated on x' too (both without grad in the outer loss). As boyellow/AdaAD ``main.py`` (``--method
AdaAD``, ``--AdaAD_alpha 1.0``): ``nn.KLDivLoss()(F.log_softmax(adv_outputs), F.softmax(t_adv_outputs))`` on
CIFAR-10, reduction ``mean`` over batch x classes; on CIFAR-100 their script sums over classes and divides by
the batch (``batchmean``) instead (``kdlab.losses.divergence``). """

from __future__ import annotations

from torch import Tensor

from kdlab.losses.divergence import Reduction, soft_kl


def adaad_loss(adversarial_logits: Tensor, clean_logits: Tensor, teacher_adversarial_logits: Tensor,
               teacher_clean_logits: Tensor, *, alpha: float = 1.0,
               reduction: Reduction = "mean") -> tuple[Tensor, Tensor]:
    """``(alpha KL(t(x') || s(x')), (1 - alpha) KL(t(x) || s(x)))``; their sum is L_AdaAD."""
    return (alpha * soft_kl(adversarial_logits, teacher_adversarial_logits, 1.0, reduction),
            (1.0 - alpha) * soft_kl(clean_logits, teacher_clean_logits, 1.0, reduction))
