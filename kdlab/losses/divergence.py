"""The soft-label KL divergence the adversarial distillation methods share, with the reductions their code
uses.

    KL_T(t || s) = sum_c softmax(t / T)_c * ( log softmax(t / T)_c - log softmax(s / T)_c )

per sample, ``t`` the target logits (a teacher's, or the student's own clean logits in IAD) and ``s`` the
student's. This is ``nn.KLDivLoss()(F.log_softmax(s / T), F.softmax(t / T))`` in the authors' scripts, whose
*reduction* differs between them and changes the loss scale by the number of classes C:

* ``mean``: the mean over batch x classes, ``sum_b KL_b / (B * C)``: PyTorch's ``nn.KLDivLoss()`` default,
  used by ARD (goldblum/AdversariallyRobustDistillation ``main.py``), RSLAD (``torch.mean`` of the
  elementwise terms, zibojia/RSLAD ``resnet18_rslad_cifar10.py``; their README discusses the 1/C) and AdaAD on
  CIFAR-10 (boyellow/AdaAD ``main.py``);
* ``batchmean``: ``sum_b KL_b / B``, the KL itself averaged over the batch (IAD, ZFancy/IAD ``ARD.py`` and
  ``IAD-I.py``: ``(1/len(outputs)) * torch.sum(KL_loss(...).sum(dim=1))``);
* ``sum``: ``sum_b KL_b`` (the inner maximisations of RSLAD, AdaAD and TRADES);
* ``none``: the per-sample ``KL_b`` (IAD weights each sample).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "batchmean", "sum", "none"]


def soft_kl(student_logits: Tensor, target_logits: Tensor, temperature: float = 1.0,
            reduction: Reduction = "batchmean") -> Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` per sample, reduced as ``reduction`` says (see the module
    docstring).

    ``target_logits`` is used as given: detach it when it must not receive a gradient (a teacher's is computed
    without grad; IAD's self-distillation target, the student's clean logits, is not detached in its code).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != target_logits.shape:
        raise ValueError(f"student and target logits must have the same shape, got "
                         f"{tuple(student_logits.shape)} and {tuple(target_logits.shape)}")
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_target = F.log_softmax(target_logits / temperature, dim=1)
    per_sample = (log_p_target.exp() * (log_p_target - log_p_student)).sum(dim=1)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "batchmean":
        return per_sample.mean()
    if reduction == "mean":
        return per_sample.sum() / student_logits.numel()
    raise ValueError(f"unknown reduction '{reduction}': mean, batchmean, sum or none")
