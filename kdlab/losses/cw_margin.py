"""Carlini–Wagner margin loss (Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017).

For logits ``z`` and true label ``y`` the *margin* is

    m(z, y) = max_{j != y} z_j  -  z_y ,

positive exactly when the point is misclassified. Carlini & Wagner's objective (their ``f_6``, untargeted form)
is ``f = max(z_y - max_{j != y} z_j, -kappa)``, which the attacker *minimises*: ``kappa`` is the confidence at
which the attack stops pushing. This module returns the attacker's objective to *maximise*,

    L_CW(z, y) = -f = min(m(z, y), kappa)  =  clamp(max_{j != y} z_j - z_y, max=kappa),

i.e. CW's clamp at ``-kappa`` seen from the maximising side. With ``kappa = 0`` the gradient vanishes once a point
is misclassified, and is the gradient of the margin for every correctly classified point (a clamp from below would
zero the gradient of exactly the points still to be attacked).

The L-infinity "CW-inf" attack of the robust-distillation literature (ARD, Goldblum et al. 2020; RSLAD, Zi et al.
2021; following Madry et al.'s PGD) is PGD that maximises this margin instead of the cross-entropy: it is
insensitive to the logit scale, so it is not fooled by a saturated softmax the way PGD-CE can be.

Example::

    >>> z = torch.tensor([[2.0, 1.0, 0.5]]); y = torch.tensor([0])
    >>> cw_margin_loss(z, y, reduction="none")   # min(1.0 - 2.0, 0) = -1
    tensor([-1.])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cw_margin", "cw_margin_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def cw_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """The unclamped margin ``max_{j != y} z_j - z_y`` per sample, shape ``(batch,)``; > 0 means misclassified."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (batch, classes), got shape {tuple(logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError("the CW margin needs at least two classes")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must be (batch,) = ({logits.shape[0]},), got {tuple(labels.shape)}")
    true_mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, labels.long().unsqueeze(1), True)
    z_true = logits.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    z_other = logits.masked_fill(true_mask, float("-inf")).amax(dim=1)
    return z_other - z_true


def cw_margin_loss(logits: Tensor, labels: Tensor, kappa: float = 0.0, reduction: str = "mean") -> Tensor:
    """``min(max_{j != y} z_j - z_y, kappa)``: the CW objective an attacker maximises.

    ``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample, shape ``(batch,)``).
    ``kappa >= 0`` is CW's confidence: the loss stops growing once the wrong-class margin exceeds ``kappa``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if kappa < 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    loss = torch.clamp(cw_margin(logits, labels), max=kappa)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
