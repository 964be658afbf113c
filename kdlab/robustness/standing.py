"""The one loop step that attacks only the points still standing, keeping the worst case per point.

Used wherever several attacks (or restarts of one) are combined: PGD restarts (:mod:`kdlab.robustness.seeded_pgd`), an
ensemble on one batch (:class:`kdlab.robustness.attacks.CompositeAttack`) and the reference AutoAttack schedule over a
whole test set (:func:`kdlab.robustness.accuracy.evaluate_robustness`). A point that one attack fools stays fooled: its
adversarial image is kept and later attacks skip it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def strike(predict: Callable[[Tensor], Tensor], attack: Callable[[Tensor], Tensor], idx: Tensor, labels: Tensor,
           alive: Tensor, adv: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Attack the points ``idx`` (all of them still standing) and record the ones that fall.

    ``attack(idx)`` returns adversarial images for those points; ``predict(images)`` their predicted labels.
    In place: ``alive[idx[fooled]] = False`` and, when ``adv`` is given, ``adv[idx[fooled]]`` = the fooling
    images. Returns the adversarial images of ``idx`` and the mask of those that fooled the model.
    """
    if idx.numel() == 0:
        return torch.empty(0), torch.zeros(0, dtype=torch.bool)
    out = attack(idx)
    with torch.no_grad():
        fooled = (predict(out) != labels[idx.to(labels.device)].to(out.device)).to(alive.device)
    fallen = idx.to(alive.device)[fooled]
    alive[fallen] = False
    if adv is not None:
        adv[fallen.to(adv.device)] = out[fooled.to(out.device)].to(adv.device)
    return out, fooled
