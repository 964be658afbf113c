"""Soft-target knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015).

    L_KD = T^2 * KL( softmax(z_t / T) || softmax(z_s / T) ),  averaged over the batch.

The ``T^2`` factor keeps the gradient magnitude of the soft term independent of ``T`` (Hinton et al., Sec. 2), so
that it can be mixed with the hard-label loss without re-tuning its weight for every temperature. Both
distributions are formed with ``log_softmax`` and compared in log space (``log_target=True``): no ``log`` of a
``softmax`` that may have underflowed to 0.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, the KL summed over classes and averaged over the batch.

    ``teacher_logits`` is used as given; detach it (or compute it under ``torch.no_grad()``) when the teacher is
    frozen. Logits are ``(batch, classes)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}"
        )
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * (temperature * temperature)
