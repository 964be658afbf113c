"""Robust representation matching (Vaishnavi, Eykholt & Rahmati, "Transferring Adversarial Robustness Through
Robust Representation Matching", USENIX Security 2022; Ethos-lab/robust-representation-matching
``l_infty/train_rrm.py``):

    cosine:  L_RRM = mean_b ( 1 - cos(r_s(x_b), r_t(x_b)) ),   cos(a, b) = a.b / max(||a|| ||b||, eps)
    l2:      L_RRM = mean_b || r_s(x_b) - r_t(x_b) ||_2

``r_s``, ``r_t``: the penultimate representations (the input of the final linear layer) of the student and the
robust teacher on the same clean images. The authors' script adds ``feat_weight * mean cos`` with
``--feat-weight -1``, i.e. it subtracts the mean cosine similarity; ``1 - cos`` has the same gradient and is
non-negative (0 when the representations point the same way). ``eps = 1e-6`` as their ``nn.CosineSimilarity``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def representation_loss(student: Tensor, teacher: Tensor, distance: str = "cosine") -> Tensor:
    """``B x D`` student and teacher representations -> the batch mean of ``distance`` (``teacher`` as given)."""
    if student.shape != teacher.shape:
        raise ValueError(f"representations must have the same shape, got student {tuple(student.shape)} and "
                         f"teacher {tuple(teacher.shape)}: map the student's with a connector")
    student, teacher = student.flatten(1), teacher.flatten(1)
    if distance == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=1, eps=1e-6)).mean()
    if distance == "l2":
        return (student - teacher).norm(dim=1).mean()
    raise ValueError(f"unknown representation distance {distance!r}: use cosine or l2")
