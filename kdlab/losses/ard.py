"""Adversarially Robust Distillation (Goldblum, Fowl, Feizi & Goldstein, AAAI 2020), the outer loss:

    L_ARD = alpha * T^2 * KL( softmax(t(x) / T) || softmax(s(x') / T) ) + (1 - alpha) * CE( s(x), y )

``x'`` the student's own PGD example (``kdlab.methods.ard``), ``t(x)`` the frozen teacher on the CLEAN image.
As goldblum/AdversariallyRobustDistillation ``main.py``: ``args.alpha*args.temp*args.temp*KL_loss(
F.log_softmax(outputs/T), F.softmax(teacher_outputs/T)) + (1-args.alpha)*XENT_loss(basic_outputs, targets)``
with ``KL_loss = nn.KLDivLoss()``: reduction ``mean`` over batch x classes (``kdlab.losses.divergence``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses.divergence import Reduction, soft_kl


def ard_loss(adversarial_logits: Tensor, clean_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *,
             alpha: float, temperature: float, reduction: Reduction = "mean") -> tuple[Tensor, Tensor]:
    """The weighted terms ``(alpha T^2 KL(t(x) || s(x')), (1 - alpha) CE(s(x), y))``; their sum is L_ARD."""
    kl = soft_kl(adversarial_logits, teacher_logits, temperature, reduction)
    return alpha * temperature**2 * kl, (1.0 - alpha) * F.cross_entropy(clean_logits, labels)
