"""CWD: channel-wise distillation (Shu, Liu, Gao, Yan & Shen, "Channel-wise Knowledge Distillation for Dense
Prediction", ICCV 2021).

Each channel's map is turned into a distribution over its H x W positions by a softmax at temperature tau, and
the student's distribution is pulled towards the teacher's:

    L = tau^2 / (N C) * sum_{n,c} KL(softmax(F_t[n, c] / tau) || softmax(F_s[n, c] / tau))
      = tau^2 / (N C) * sum_{n,c,i} p_t log(p_t / p_s),     p = softmax over the positions i of one map

Source: MMRazor ``mmrazor/models/losses/cwd.py`` (``ChannelWiseDivergence``: defaults ``tau`` 1.0 and
``loss_weight`` 1.0; its detection configs ``configs/distill/mmdet/cwd/cwd_fpn_*`` use ``tau=1`` and
``loss_weight=10`` on every FPN level, summed). On raw features (no normalisation), as the reference. Per level
the loss lies in [0, tau^2 log(H W)]; a 1 x 1 map has one position, so its distribution is 1 and the loss 0.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cwd_loss(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """tau^2 times the KL(teacher || student) of the spatial softmaxes, averaged over samples and channels."""
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher features must have the same shape, got {tuple(student.shape)} "
                         f"and {tuple(teacher.shape)}")
    if student.dim() != 4:
        raise ValueError(f"CWD needs N x C x H x W features, got shape {tuple(student.shape)}")
    if tau <= 0:
        raise ValueError(f"CWD temperature tau must be positive, got {tau}")
    n, c = student.shape[:2]
    log_p_t = F.log_softmax(teacher.detach().flatten(2) / tau, dim=-1)
    log_p_s = F.log_softmax(student.flatten(2) / tau, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    return kl * tau**2 / (n * c)
