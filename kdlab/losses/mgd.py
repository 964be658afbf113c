"""MGD: masked generative distillation (Yang, Li, Shu, Yuan, Liu & Zhou, "Masked Generative Distillation",
ECCV 2022).

A random set of positions of the student's map is zeroed (the same positions for every channel), a small
generator G regenerates the full map from what is left, and the result must match the teacher's map:

    M[n, 1, h, w] = 0 with probability ratio (else 1),    L = sum_{n,c,h,w} (G(F_s * M) - F_t)^2 / N
    G = conv3x3 -> ReLU -> conv3x3 (C_t -> C_t channels, padding 1, bias)

Source: the authors' ``yzd-v/MGD det/mmdet/distillation/losses/mgd.py`` (``FeatureLoss``) and MMRazor
``mmrazor/models/losses/mgd_loss.py`` (``MGDLoss``, MSE summed / N) with
``mmrazor/models/architectures/connectors/mgd_connector.py`` (the mask and G): ``lambda_mgd`` = the masked
ratio 0.65 (RetinaNet; 0.45 in the authors' two-stage config, see ``kdlab.config.methods.skd``), ``alpha_mgd`` = the loss weight 2e-5 for detection (their RetinaNet config
``det/configs/distillers/mgd/retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py``: every FPN level, summed).
The references draw the mask with the global RNG (``torch.rand``); here it comes from a given
``torch.Generator`` (the engine's), so a resumed run draws the same masks. Raw features, as the references; a 1
x 1 level is masked or kept whole.

The loss is a sum over the map, not a mean, so its scale grows with C H W: that is why alpha_mgd is 2e-5 where
the mean-type losses use weights near 1 (``kdlab ablate --tune`` takes per-kind value lists for this).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MGD_MASK_RATIO = 0.65  # lambda_mgd of the authors' and MMRazor's RetinaNet configs (two-stage: 0.45)


def mgd_generator(channels: int) -> nn.Sequential:
    """G: conv3x3 -> ReLU -> conv3x3 on the teacher's width (PyTorch's default initialisation, as the refs)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, kernel_size=3, padding=1),
    )


def mgd_mask(like: Tensor, ratio: float = MGD_MASK_RATIO, generator: torch.Generator | None = None) -> Tensor:
    """N x 1 x H x W of 0 (masked, probability ``ratio``) and 1 (kept), drawn on the generator's device (CPU
    for the engine's) and moved to ``like``'s; the references' ``where(rand > 1 - ratio, 0, 1)``."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"MGD mask ratio must lie in [0, 1], got {ratio}")
    n, _, h, w = like.shape
    device = generator.device if generator is not None else torch.device("cpu")
    uniform = torch.rand((n, 1, h, w), generator=generator, device=device)
    return (uniform <= 1 - ratio).to(dtype=like.dtype, device=like.device)


def mgd_loss(student: Tensor, teacher: Tensor, generator_module: nn.Module, mask: Tensor) -> Tensor:
    """sum (G(F_s * mask) - F_t)^2 / N on one level; the teacher is detached, G is trained with the student."""
    if student.dim() != 4 or student.shape != teacher.shape:
        raise ValueError(f"MGD needs N x C x H x W student and teacher features of one shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    regenerated = generator_module(student * mask)
    return (regenerated - teacher.detach()).pow(2).sum() / student.shape[0]
