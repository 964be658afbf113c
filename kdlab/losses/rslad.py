"""Robust Soft Label Adversarial Distillation (Zi, Zhao, Ma & Jiang, "Revisiting Adversarial Robustness
Distillation: Robust Soft Labels Make Student Better", ICCV 2021), the outer loss:

    L_RSLAD = alpha * KL( t(x) || s(x') ) + (1 - alpha) * KL( t(x) || s(x) ),   alpha = 5/6,  T = 1

``KL(t || s) = sum_c softmax(t)_c log(softmax(t)_c / softmax(s)_c)``: the teacher's soft labels on the CLEAN
image are the target of both terms (the paper writes KL(S(x'), T(x)) in argument order). As zibojia/RSLAD
``resnet18_rslad_cifar10.py``: ``kl_loss(a, b) = -a*b + torch.log(b+1e-5)*b`` on ``log_softmax(student)`` and
``softmax(teacher)``, then ``torch.mean``: reduction ``mean`` over batch x classes
(``kdlab.losses.divergence``). Their ``+1e-5`` inside the target's log shifts the value by a constant of the
teacher only, not the gradient; kdlab uses the exact KL. Their CIFAR-100 scripts (``resnet18_rslad_cifar100.py``,
``mobilenet_v2_rslad_cifar100.py``) multiply both means by 10 ("to keep consistent with CIFAR-10 dataset"):

    L_RSLAD = scale * ( alpha * KL( t(x) || s(x') ) + (1 - alpha) * KL( t(x) || s(x) ) ),   scale = 10 there, 1 here
"""

from __future__ import annotations

from torch import Tensor

from kdlab.losses.divergence import Reduction, soft_kl


def rslad_loss(adversarial_logits: Tensor, clean_logits: Tensor, teacher_logits: Tensor, *,
               alpha: float = 5 / 6, reduction: Reduction = "mean", scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """The weighted terms ``(scale alpha KL(t(x) || s(x')), scale (1 - alpha) KL(t(x) || s(x)))``; they sum to
    L_RSLAD."""
    return (scale * alpha * soft_kl(adversarial_logits, teacher_logits, 1.0, reduction),
            scale * (1.0 - alpha) * soft_kl(clean_logits, teacher_logits, 1.0, reduction))
