"""FitNets hint loss (Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep Nets",
ICLR 2015, Eq. 2; mdistiller ``distillers/FitNet.py``):

    L_hint = mean_{b,c,h,w} ( r(F_s)[b,c,h,w] - F_t[b,c,h,w] )^2

``r`` is the regressor (a learned 1x1 convolution connector) that maps the student's hint-block features to the
teacher's channel count; the mean runs over every element, as ``F.mse_loss`` does in mdistiller (the paper writes
one half of the summed squared error, a constant factor the weight absorbs).
"""

from __future__ import annotations

from torch import Tensor


def hint_loss(regressed_student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared difference of two equally shaped feature maps (``teacher`` used as given: detach it)."""
    if regressed_student.shape != teacher.shape:
        raise ValueError(f"hint features must have the same shape, got student {tuple(regressed_student.shape)} "
                         f"and teacher {tuple(teacher.shape)}: check the hint blocks and the regressor")
    return (regressed_student - teacher).pow(2).mean()
