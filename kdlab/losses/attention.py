"""Attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017, Eq. 2;
szagoruyko/attention-transfer ``cifar.py`` ``at``/``at_loss``; mdistiller ``distillers/AT.py``):

    Q(F)     = vec( mean_c |F_c|^p ) / || vec( mean_c |F_c|^p ) ||_2        (one spatial map per sample)
    L_AT     = mean_{b, positions} ( Q(F_s) - Q(F_t) )^2                     (per block)

The authors' code and mdistiller raise the features to ``p`` without an absolute value (``x.pow(p)``); for the
even ``p = 2`` of both that is the same thing, and ``|F|^p`` keeps odd ``p`` a valid attention map. When the
two maps differ in size the larger one is average-pooled to the smaller (mdistiller ``single_stage_at_loss``).
Student and teacher may have any channel counts: the channel mean removes them.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def attention_map(features: Tensor, p: float = 2.0) -> Tensor:
    """``B x C x H x W`` -> ``B x (H*W)``: the channel mean of ``|F|^p``, flattened and l2-normalised per sample."""
    return F.normalize(features.abs().pow(p).mean(1).flatten(1), dim=1)


def attention_loss(student: Tensor, teacher: Tensor, p: float = 2.0) -> Tensor:
    """Mean squared difference of the two attention maps (``teacher`` used as given: detach it)."""
    s_size, t_size = student.shape[-2:], teacher.shape[-2:]
    if s_size[0] > t_size[0]:
        student = F.adaptive_avg_pool2d(student, t_size)
    elif s_size[0] < t_size[0]:
        teacher = F.adaptive_avg_pool2d(teacher, s_size)
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()
