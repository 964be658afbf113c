"""PKD: feature imitation through the Pearson correlation coefficient (Cao et al., "PKD: General Distillation
Framework for Object Detectors via Pearson Correlation Coefficient", NeurIPS 2022).

Each channel of the student and of the teacher map is standardised (zero mean, unit variance), then

    L = mean_{n,c,h,w} (z(F_s) - z(F_t))^2 / 2,      z(x) = (x - mean x) / (std x + 1e-6)

Source: MMRazor ``mmrazor/models/losses/pkd_loss.py`` (``PKDLoss``, written by the paper's authors; default
``loss_weight`` 1.0, the detection configs ``configs/distill/mmdet/pkd/`` use 6 for Faster R-CNN and 10 for
RetinaNet, the loss summed over the FPN levels). Its ``norm`` takes the mean and the (unbiased, ``torch.std``)
standard deviation of each channel over the batch AND the positions (``feat.permute(1, 0, 2, 3).reshape(C,
-1)``): ``granularity="channel"``, the default here. ``granularity="sample_channel"`` standardises each
(sample, channel) map over its positions alone (the per-image reading of the paper's text).

Why it is 1 - Pearson: a standardised vector of n values with the unbiased std has sum z^2 = n - 1, so per
channel (n values) mean (z_s - z_t)^2 / 2 = (n - 1) / n * (1 - r), r the Pearson correlation of F_s and F_t
over those n values; the loss is the channel mean of that (up to the 1e-6 in the denominator). It ignores the
maps' scale and offset, so the student matches the teacher's pattern, not its magnitude. A channel of one value
(a 1 x 1 level with batch 1) or a constant channel standardises to 0 (no NaN), as it carries no pattern.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PKD_GRANULARITIES = ("channel", "sample_channel")
_STD_EPS = 1e-6  # MMRazor PKDLoss.norm: (feat - mean) / (std + 1e-6)


def pkd_standardize(x: Tensor, granularity: str = "channel", eps: float = _STD_EPS) -> Tensor:
    """z(x): zero mean, unit (unbiased) std per channel over batch and positions, or per (sample, channel)."""
    if x.dim() != 4:
        raise ValueError(f"PKD needs N x C x H x W features, got shape {tuple(x.shape)}")
    if granularity == "channel":
        flat = x.transpose(0, 1).flatten(1)  # C x (N H W)
    elif granularity == "sample_channel":
        flat = x.flatten(2)  # N x C x (H W)
    else:
        raise ValueError(f"unknown PKD granularity {granularity!r}; allowed values: {', '.join(PKD_GRANULARITIES)}")
    count = flat.shape[-1]
    centred = flat - flat.mean(dim=-1, keepdim=True)
    variance = centred.pow(2).sum(dim=-1, keepdim=True) / max(count - 1, 1)
    # sqrt has an infinite slope at 0: constant (or single-value) channels take std 0 through a safe branch
    positive = variance > 0
    std = torch.where(positive, variance, torch.ones_like(variance)).sqrt() * positive
    z = centred / (std + eps)
    if granularity == "channel":
        return z.reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1)
    return z.reshape(x.shape)


def pkd_loss(student: Tensor, teacher: Tensor, granularity: str = "channel") -> Tensor:
    """mean (z(F_s) - z(F_t))^2 / 2 on one level; the teacher is detached. Shapes must match."""
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher features must have the same shape, got {tuple(student.shape)} "
                         f"and {tuple(teacher.shape)}")
    teacher = teacher.detach()
    return F.mse_loss(pkd_standardize(student, granularity), pkd_standardize(teacher, granularity)) / 2
