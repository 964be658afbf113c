"""Pixel-wise feature-distillation baselines and the feature normalisation psi shared with the SSIM loss.

    l2:  L = mean_{b,c,h,w} (psi(F_s) - psi(F_t))^2      (FitNets hints, Romero et al., ICLR 2015)
    l1:  L = mean_{b,c,h,w} |psi(F_s) - psi(F_t)|

These are the l_p-norm baselines that Structural KD (de Rijk et al., "Structural Knowledge Distillation for Object
Detection", NeurIPS 2022) replaces with SSIM; keeping them here, on the same features and with the same psi
option, makes the comparison like for like. The default ``normalize="none"`` is the classic baseline on raw
features; ``minmax_normalize`` is available for an ablation that isolates the effect of psi from that of SSIM.

psi (min-max normalisation) maps each map to [0, 1]:

    psi(x) = (x - min x) / max(max x - min x, eps)

with the min and max taken per (sample, channel) map (``"sample_channel"``), per sample over all channels and
positions of a level (``"level"``), or not at all (``"none"``). A constant map becomes all zeros (no NaN).

Scale: with psi each level's l1 and l2 loss lies in [0, 1], like (1 - SSIM) / 2; in Structural KD lambda
(``method.feature.weight``) multiplies their sum over FPN levels exactly as it does for SSIM
(``kdlab.losses.multilevel``). Without psi (``normalize="none"``) they are unbounded and scale with the
features' magnitude (l1 linearly, l2 quadratically), so a lambda tuned for SSIM does not carry over.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

GRANULARITIES = ("sample_channel", "level", "none")
FEATURE_DISTANCES = ("l1", "l2")

# Smallest range we divide by: keeps constant (e.g. dead-channel) maps finite; they normalise to 0.
_RANGE_EPS = 1e-6


def minmax_normalize(x: Tensor, granularity: str = "sample_channel", eps: float = _RANGE_EPS) -> Tensor:
    """psi: scale ``x`` (B x C x ...) to [0, 1] per (sample, channel) map, per sample (``"level"``) or not at all.

    ``"sample_channel"`` is the default because SSIM's statistics are per channel: each channel's map gets its own
    [0, 1] range, matching SSIM's data range L = 1, whatever that channel's activation scale. Ranges below ``eps``
    are clamped to ``eps``, so constant maps become 0 with finite gradients.
    """
    if granularity == "none":
        return x
    if granularity == "sample_channel":
        if x.dim() < 3:
            raise ValueError(
                f"'sample_channel' min-max needs B x C x ... features, got shape {tuple(x.shape)}"
            )
        flat = x.flatten(2)
    elif granularity == "level":
        if x.dim() < 2:
            raise ValueError(f"'level' min-max needs B x ... features, got shape {tuple(x.shape)}")
        flat = x.flatten(1)
    else:
        raise ValueError(f"unknown normalize {granularity!r}; allowed values: {', '.join(GRANULARITIES)}")
    low = flat.amin(dim=-1, keepdim=True)
    high = flat.amax(dim=-1, keepdim=True)
    scaled = (flat - low) / (high - low).clamp_min(eps)
    return scaled.reshape(x.shape)


def feature_distance(student: Tensor, teacher: Tensor, kind: str = "l2", normalize: str = "none") -> Tensor:
    """Mean l1 or squared-l2 (MSE) distance between psi(student) and psi(teacher); the teacher is detached.

    Shapes must match (bridge channel mismatches with a connector first).
    """
    if kind not in FEATURE_DISTANCES:
        raise ValueError(f"unknown feature distance {kind!r}; allowed values: {', '.join(FEATURE_DISTANCES)}")
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher features must have the same shape, got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )
    # The teacher is a fixed target: no gradient may reach it (or through it, its weights).
    teacher = teacher.detach()
    student_n = minmax_normalize(student, normalize)
    teacher_n = minmax_normalize(teacher, normalize)
    if kind == "l1":
        return F.l1_loss(student_n, teacher_n)
    return F.mse_loss(student_n, teacher_n)
