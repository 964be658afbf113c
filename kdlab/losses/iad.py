"""Introspective Adversarial Distillation (Zhu et al., "Reliable Adversarial Distillation with Unreliable
Teachers", ICLR 2022), IAD-I (the single-teacher variant, built on ARD), the outer loss after the warm-up:

    w_b   = P_t( y_b | x'_b )^beta                       (the teacher's confidence in the true label on x')
    L_IAD = alpha * T^2 * mean_b KL( t(x_b)/T || s(x'_b)/T )
          + alpha * mean_b (1 - w_b) * KL( s(x_b) || s(x'_b) )
          + (1 - alpha) * CE( s(x), y )

The student trusts the teacher fully where it is confident on the adversarial example (w = 1) and otherwise
partly trusts itself: its own clean prediction s(x) is the target of the second, "introspective" term. Before
the warm-up ends the second term is absent (plain ARD). As ZFancy/IAD ``IAD-I.py``: ``Alpha[pp] =
softmax(guide)[pp][y]^beta`` with ``guide = teacher_net(pert_inputs)`` (a number: no gradient), the KLs summed
over classes and divided by the batch size (reduction ``batchmean``), and the target ``s(x)`` a fresh forward
pass of the student that is NOT detached (``F.softmax(basic_net(inputs))``): the term's gradient also flows
through the target.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses.divergence import Reduction, soft_kl


def teacher_confidence(teacher_adversarial_logits: Tensor, labels: Tensor, beta: float) -> Tensor:
    """``w_b = softmax(t(x'))_b[y_b] ** beta``, detached (a per-sample weight, not a path for gradients)."""
    probabilities = F.softmax(teacher_adversarial_logits.detach(), dim=1)
    return probabilities.gather(1, labels[:, None]).squeeze(1).pow(beta)


def iad_loss(adversarial_logits: Tensor, clean_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *,
             alpha: float, temperature: float, confidence: Tensor | None,
             self_target_logits: Tensor | None = None,
             reduction: Reduction = "batchmean") -> dict[str, Tensor]:
    """The weighted terms of L_IAD by name (``ard_kl``, ``introspection``, ``ce``); their sum is the loss.

    ``confidence`` (``teacher_confidence``) None: the warm-up, plain ARD (no introspection term).
    ``self_target_logits``: the target of the introspection term (default ``clean_logits``; IAD's code passes
    a second forward pass of the student on x). """
    kl = soft_kl(adversarial_logits, teacher_logits, temperature, reduction)
    terms = {"ard_kl": alpha * temperature**2 * kl}
    if confidence is not None:
        target = clean_logits if self_target_logits is None else self_target_logits
        per_sample = soft_kl(adversarial_logits, target, 1.0, "none") * (1.0 - confidence)
        if reduction == "mean":
            introspection = per_sample.sum() / adversarial_logits.numel()
        elif reduction == "sum":
            introspection = per_sample.sum()
        elif reduction == "batchmean":
            introspection = per_sample.mean()
        else:
            raise ValueError(f"iad_loss needs a scalar reduction, got '{reduction}'")
        terms["introspection"] = alpha * introspection
    terms["ce"] = (1.0 - alpha) * F.cross_entropy(clean_logits, labels)
    return terms


__all__ = ["iad_loss", "teacher_confidence"]
