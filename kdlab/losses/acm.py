"""Activated Channel Maps (ACM) and their distillation loss.

Source: Awais, Zhou, Xie, Li, Bae & Li, "MixACM: Mixup-Based Robustness Transfer via Distillation of
Activated Channel Maps", NeurIPS 2021. There is no official code, so this module is a documented reading of the
paper; every choice below that the paper leaves open is an option.

Activated channel map of a feature tensor ``F`` (B x C x H x W), one value per channel:

    a_c = (1 / HW) * sum_{h,w} relu(F_{c,h,w})^p                                   (p = 1 by default)
    a   <- a / max(||a||_2, eps)                                                   (normalize="l2", default)

ACM loss between student and teacher maps, averaged over the batch:

    squared_l2 (default):  sum_c (a^s_c - a^t_c)^2
    l1:                    sum_c |a^s_c - a^t_c|
    cosine:                1 - cos(a^s, a^t)

Reading chosen and why:

* ``relu`` before pooling: the paper transfers *activated* channels, i.e. how strongly each channel fires; the
  negative pre-activation part carries no activation. (Features taken after a ReLU are unchanged by it.)
* ``p = 1``: plain mean activation. ``p = 2`` weights strongly firing positions more, as in attention transfer.
* per-sample l2 normalisation: it makes the map a *pattern* over channels, so a student whose activations have a
  different overall scale from the robust teacher's is not penalised for the scale alone; for ``p = 1`` the
  normalised map (and so the loss) is invariant to multiplying one sample's features by a positive constant.
* squared l2 distance summed over channels, averaged over the batch, like attention-transfer style losses.

A channel-count mismatch between student and teacher must be bridged outside this module (a connector, see
``kdlab.models.connectors``); here it is an error.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

NORMALIZATIONS = ("l2", "none")
DISTANCES = ("squared_l2", "l1", "cosine")

# Guards the l2 norm of an all-zero map (every activation <= 0): the normalised map is then 0, not NaN.
_NORM_EPS = 1e-12


def activated_channel_map(features: Tensor, p: float = 1.0, normalize: str = "l2") -> Tensor:
    """ACM of ``features`` (B x C x H x W): ``a_c = mean_{h,w} relu(F)^p``, optionally l2-normalised per sample.

    Returns a B x C tensor. ``normalize="l2"`` divides each sample's vector by ``max(||a||_2, 1e-12)``, so an
    all-zero map stays 0 (finite values and gradients); ``"none"`` returns the raw means.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be B x C x H x W, got shape {tuple(features.shape)}")
    if p <= 0:
        raise ValueError(f"p must be positive, got {p}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown ACM normalize {normalize!r}; allowed values: {', '.join(NORMALIZATIONS)}")
    activated = F.relu(features)
    if p != 1.0:
        activated = activated.pow(p)
    acm = activated.mean(dim=(2, 3))
    if normalize == "l2":
        acm = F.normalize(acm, p=2.0, dim=1, eps=_NORM_EPS)
    return acm


def acm_distance(student_acm: Tensor, teacher_acm: Tensor, distance: str = "squared_l2") -> Tensor:
    """Batch-mean distance between two B x C ACM tensors (see the module docstring for the formulas).

    ``"cosine"`` is computed as ``0.5 * ||a^s/|a^s| - a^t/|a^t| ||^2``, which equals ``1 - cos(a^s, a^t)`` for
    non-zero maps but is exactly 0 for identical inputs (no ``1 - 0.99999994`` rounding). An all-zero map counts as
    the zero direction: distance 0 to another all-zero map, 0.5 to any non-zero one.
    """
    if distance not in DISTANCES:
        raise ValueError(f"unknown ACM distance {distance!r}; allowed values: {', '.join(DISTANCES)}")
    difference = student_acm - teacher_acm
    if distance == "squared_l2":
        per_sample = difference.pow(2).sum(dim=1)
    elif distance == "l1":
        per_sample = difference.abs().sum(dim=1)
    else:
        unit_student = F.normalize(student_acm, p=2.0, dim=1, eps=_NORM_EPS)
        unit_teacher = F.normalize(teacher_acm, p=2.0, dim=1, eps=_NORM_EPS)
        per_sample = 0.5 * (unit_student - unit_teacher).pow(2).sum(dim=1)
    return per_sample.mean()


def acm_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    p: float = 1.0,
    normalize: str = "l2",
    distance: str = "squared_l2",
) -> Tensor:
    """Distance between the student's and the teacher's activated channel maps, averaged over the batch.

    Both inputs are B x C x H x W with the same B and C (H, W may differ: the maps are pooled). Gradients flow to
    both inputs as given; pass a detached teacher when the teacher is frozen.
    """
    if student_features.dim() != 4 or teacher_features.dim() != 4:
        raise ValueError(
            "ACM features must be B x C x H x W, got shapes "
            f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}"
        )
    if student_features.shape[1] != teacher_features.shape[1]:
        raise ValueError(
            f"student has {student_features.shape[1]} channels but teacher has {teacher_features.shape[1]}: "
            "map the student features to the teacher's channel count with a connector "
            "(kdlab.models.connectors.build_connector) before the ACM loss"
        )
    if student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError(
            f"student and teacher batch sizes differ: {student_features.shape[0]} vs {teacher_features.shape[0]}"
        )
    if distance not in DISTANCES:
        raise ValueError(f"unknown ACM distance {distance!r}; allowed values: {', '.join(DISTANCES)}")
    student_acm = activated_channel_map(student_features, p=p, normalize=normalize)
    teacher_acm = activated_channel_map(teacher_features, p=p, normalize=normalize)
    return acm_distance(student_acm, teacher_acm, distance=distance)
