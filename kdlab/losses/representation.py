"""Robust representation matching (Vaishnavi, Eykholt & Rahmati, "Transferring Adversarial Robustness Through
Robust Representation Matching", USENIX Security 2022; Ethos-lab/robust-representation-matching
``l_inf/train_rrm.py`` (cosine) and ``l_2/train_rrm.py`` (``--feat-loss l2`` or cosine)):

    cosine:       L_RRM = mean_b ( 1 - cos(r_s(x_b), r_t(x_b)) ),   cos(a, b) = a.b / max(||a|| ||b||, eps)
    l2:           L_RRM = mean_b || r_s(x_b) - r_t(x_b) ||_2 / || r_t(x_b) ||_2
    l2_absolute:  L_RRM = mean_b || r_s(x_b) - r_t(x_b) ||_2      (not the authors'; kdlab's ``l2`` before issue #24)

``r_s``, ``r_t``: the penultimate representations (the input of the final linear layer) of the student and the
robust teacher on the same clean images. The authors' script adds ``feat_weight * mean cos`` with
``--feat-weight -1``, i.e. it subtracts the mean cosine similarity; ``1 - cos`` has the same gradient and is
non-negative (0 when the representations point the same way). ``eps = 1e-6`` as their ``nn.CosineSimilarity``.
``l2`` is their ``--feat-loss l2`` in ``l_2/train_rrm.py``: ``torch.mean(torch.div(torch.norm(rep_std -
rep_rob, dim=1), torch.norm(rep_rob, dim=1)))``, the distance relative to the teacher's representation's norm
(no eps: a zero teacher representation gives inf, as theirs).
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
        return ((student - teacher).norm(dim=1) / teacher.norm(dim=1)).mean()
    if distance == "l2_absolute":
        return (student - teacher).norm(dim=1).mean()
    raise ValueError(f"unknown representation distance {distance!r}: use cosine, l2 or l2_absolute")
