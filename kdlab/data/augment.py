"""Batch augmentation on uint8 image tensors, vectorised over the batch (no per-image Python loop).

:func:`random_crop_flip` draws from a generator's stream in batch order (``train.rng: batch``);
:func:`sample_crop_flip` draws each sample's crop and flip from its own index (``train.rng: sample``,
:mod:`kdlab.runtime.sample_random`), so a sample's augmentation does not depend on the batch it is in."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.runtime.device_copy import to_device
from kdlab.runtime.sample_random import SampleGenerator, uniform_table

__all__ = ["crop_flip", "random_crop_flip", "sample_crop_flip", "to_float"]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [0, 1] (float input is returned as float32 unchanged)."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32)


def crop_flip(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
    """Deterministic part of :func:`random_crop_flip`: per-sample crop offsets into the zero-padded image
    (``top``/``left`` in [0, 2*padding]) and horizontal flips (bool). Returns the same dtype as ``images``.

    Output pixel (i, j) of sample b = padded[b, :, top[b] + i, left[b] + j'] where j' = W-1-j if flipped.
    """
    if images.ndim != 4:
        raise ValueError(f"expected a B x C x H x W batch, got shape {tuple(images.shape)}")
    batch, channels, height, width = images.shape
    if batch == 0:
        return images.clone()
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding > 0 else images
    padded_width = width + 2 * padding
    # offsets drawn on the CPU reach a GPU batch without a host wait (kdlab.runtime.device_copy)
    rows = to_device(top, device).view(batch, 1) + torch.arange(height, device=device).view(1, height)  # B x H
    cols = torch.arange(width, device=device).view(1, width).expand(batch, width)
    cols = torch.where(to_device(flip, device).view(batch, 1), (width - 1) - cols, cols)
    cols = cols + to_device(left, device).view(batch, 1)  # B x W
    # One gather over each flattened padded plane (2-3x faster than 3-D advanced indexing on CPU).
    flat_index = (rows.view(batch, height, 1) * padded_width + cols.view(batch, 1, width)).view(batch, 1, -1)
    planes = padded.reshape(batch, channels, -1)
    out = planes.gather(2, flat_index.expand(batch, channels, height * width))
    return out.view(batch, channels, height, width)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator | None = None,
                     padding: int = 4) -> torch.Tensor:
    """Random crop (with ``padding`` pixels of zero padding) and random horizontal flip (p = 0.5).

    ``images``: uint8 B x 3 x H x W (any device). Returns float32 in [0, 1] on the same device.
    Random numbers come from ``generator`` (on its own device) in a fixed order: top offsets, left offsets, flips,
    so the result is a function of the generator's state.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    batch = images.shape[0]
    device = generator.device if generator is not None else torch.device("cpu")
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    flip = torch.rand(batch, generator=generator, device=device) < 0.5
    return to_float(crop_flip(images, top, left, flip, padding))


def sample_crop_flip(images: torch.Tensor, generator: SampleGenerator, indices: torch.Tensor,
                     padding: int = 4) -> torch.Tensor:
    """:func:`random_crop_flip` with sample ``indices[b]``'s top offset, left offset and flip drawn from the
    generator's ``augment`` stream at that index (three uniforms u: offset ``floor(u * (2 * padding + 1))``,
    flip ``u < 0.5``), on the images' device. Returns float32 in [0, 1]."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    uniforms = uniform_table(generator.stream("augment"), indices.to(images.device), 3).double()
    offsets = (uniforms[:, :2] * (2 * padding + 1)).floor().long()  # exact: 24-bit uniforms in float64
    return to_float(crop_flip(images, offsets[:, 0], offsets[:, 1], uniforms[:, 2] < 0.5, padding))
