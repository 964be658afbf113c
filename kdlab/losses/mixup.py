"""Mixup augmentation and its cross-entropy (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018).

A mixed batch is ``x~ = lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha, alpha)`` drawn once per batch and
ONE random permutation ``perm`` of the batch, as in the authors' reference training loop. The loss of a mixed batch
is the same convex combination of the two label sets' cross-entropies:

    L = lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b),    y_a = y, y_b = y[perm].

Reading chosen: one ``lam`` per batch (not per sample), as in the paper's code; ``alpha <= 0`` means "no mixing"
(``lam = 1``), which is also what the reference code does.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class MixedBatch(NamedTuple):
    """A mixup batch: mixed images, the two label sets and the mixing weight of ``targets_a``."""

    images: Tensor
    targets_a: Tensor
    targets_b: Tensor
    lam: float


def mixup_cross_entropy(logits: Tensor, targets_a: Tensor, targets_b: Tensor, lam: float) -> Tensor:
    """``lam * CE(logits, targets_a) + (1 - lam) * CE(logits, targets_b)``, each CE averaged over the batch.

    Equals the cross-entropy against the mixed one-hot target ``lam * e_a + (1 - lam) * e_b``, because CE is linear
    in the target distribution (Zhang et al., ICLR 2018, Sec. 2).
    """
    return lam * F.cross_entropy(logits, targets_a) + (1.0 - lam) * F.cross_entropy(logits, targets_b)


def _standard_gamma(shape_k: float, generator: torch.Generator) -> float:
    """One Gamma(k, 1) variate from ``generator`` (Marsaglia & Tsang, ACM TOMS 2000).

    ``torch.distributions`` and ``torch._standard_gamma`` take no generator, so we build the variate from the
    generator's own normal and uniform draws: the result is then a pure function of the generator state.
    """
    device = generator.device

    def normal() -> float:
        return torch.randn((), generator=generator, device=device, dtype=torch.float64).item()

    def uniform() -> float:
        return torch.rand((), generator=generator, device=device, dtype=torch.float64).item()

    if shape_k < 1.0:
        # Marsaglia-Tsang needs k >= 1; Gamma(k) = Gamma(k + 1) * U^(1/k) boosts small shapes.
        boost = uniform() ** (1.0 / shape_k)
        return _standard_gamma(shape_k + 1.0, generator) * boost
    d = shape_k - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:  # accepts with probability > 0.95 for every k >= 1
        z = normal()
        v = (1.0 + c * z) ** 3
        if v <= 0.0:
            continue
        u = uniform()
        if u <= 0.0:
            continue
        if math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v


def sample_beta(alpha: float, beta: float, generator: torch.Generator) -> float:
    """One Beta(alpha, beta) variate as ``G_a / (G_a + G_b)`` with ``G ~ Gamma(., 1)``, deterministic in ``generator``."""
    if alpha <= 0.0 or beta <= 0.0:
        raise ValueError(f"Beta parameters must be positive, got alpha={alpha}, beta={beta}")
    g_a = _standard_gamma(alpha, generator)
    g_b = _standard_gamma(beta, generator)
    total = g_a + g_b
    # Both variates underflow to 0 only for tiny shapes, where Beta puts its mass at 0 and 1 evenly.
    return g_a / total if total > 0.0 else float(g_a >= g_b)


def mix_batch(images: Tensor, targets: Tensor, alpha: float, generator: torch.Generator) -> MixedBatch:
    """Mix a batch with itself under one permutation: ``lam * x + (1 - lam) * x[perm]``, ``lam ~ Beta(alpha, alpha)``.

    ``lam`` and ``perm`` are drawn from ``generator`` only (the global RNG is untouched), so the same generator seed
    gives the same mixed batch. ``alpha <= 0`` disables mixing: ``lam = 1`` and the images come back unchanged.
    The permutation is drawn on the generator's device and moved to the images' device.
    """
    if images.shape[0] != targets.shape[0]:
        raise ValueError(
            f"images and targets disagree on the batch size: {images.shape[0]} vs {targets.shape[0]}"
        )
    lam = sample_beta(alpha, alpha, generator) if alpha > 0.0 else 1.0
    perm = _to(torch.randperm(images.shape[0], generator=generator, device=generator.device), images.device)
    mixed = lam * images + (1.0 - lam) * images[perm]
    return MixedBatch(images=mixed, targets_a=targets, targets_b=targets[_to(perm, targets.device)], lam=lam)


def _to(tensor: Tensor, device: torch.device) -> Tensor:
    """To a CUDA device through pinned memory, without making the host wait (as ``kdlab.runtime.device_copy``, which a
    loss module does not import)."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
