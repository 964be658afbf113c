"""Encoded image files to uint8 tensors: JPEGs in one batched torchvision call, other formats one by one (Pillow).

Used by the loaders that read encoded images (:mod:`kdlab.data.imagefolder`, :mod:`kdlab.data.embedded`); every
decoder failure becomes one message naming the file.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from kdlab.errors import KdlabError

__all__ = ["decode_many", "read_files"]


@contextlib.contextmanager
def _quiet_torchvision_io():
    """torchvision 0.29 warns on every decode call that its image codecs are deprecated (for TorchCodec);
    kdlab pins that torchvision and falls back to Pillow, so the warning is noise for users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TorchVision are deprecated.*", category=DeprecationWarning)
        yield


def _torchvision_io():
    try:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    except ImportError:  # pragma: no cover - future torchvision without image codecs: Pillow does it all
        return None
    return ImageReadMode, decode_image, decode_jpeg


def _decode_one(data: bytes, source: str) -> torch.Tensor:
    tv = _torchvision_io()
    if tv is not None:
        mode, decode_image, _ = tv
        try:
            with _quiet_torchvision_io():
                return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode.RGB)
        except (RuntimeError, ValueError):
            pass
    try:  # formats torchvision cannot decode (BMP, PPM, TIFF, ...)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            array = np.asarray(im.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    except Exception as error:  # noqa: BLE001 - any decoder failure becomes one friendly message
        raise KdlabError(f"cannot decode image {source} ({type(error).__name__}): remove or replace the file") from None


def decode_many(blobs: Sequence[bytes | torch.Tensor], sources: Sequence[str]) -> torch.Tensor:
    """Decode encoded images to one uint8 N x 3 x H x W tensor (JPEGs in one batched call)."""
    tv = _torchvision_io()
    tensors = [b if isinstance(b, torch.Tensor) else torch.frombuffer(bytearray(b), dtype=torch.uint8)
               for b in blobs]
    out: list[torch.Tensor | None] = [None] * len(tensors)
    jpeg_pos = [i for i, t in enumerate(tensors) if len(t) >= 2 and int(t[0]) == 0xFF and int(t[1]) == 0xD8]
    if jpeg_pos and tv is not None:
        mode, _, decode_jpeg = tv
        try:
            with _quiet_torchvision_io():
                decoded = decode_jpeg([tensors[i] for i in jpeg_pos], mode=mode.RGB)
            for i, img in zip(jpeg_pos, decoded):
                out[i] = img
        except (RuntimeError, ValueError):
            pass  # one bad file: fall back to one-by-one decoding to name it
    for i, img in enumerate(out):
        if img is None:
            out[i] = _decode_one(bytes(tensors[i].numpy()), sources[i])
    if not out:
        raise KdlabError("no images to decode: check data.root and the subset sizes")
    shapes = {tuple(img.shape) for img in out}
    if len(shapes) > 1:
        first = tuple(out[0].shape)
        odd = next(i for i, img in enumerate(out) if tuple(img.shape) != first)
        raise KdlabError(f"images have different sizes ({sources[0]} is {first[1]}x{first[2]}, {sources[odd]} is "
                         f"{out[odd].shape[1]}x{out[odd].shape[2]}): resize the dataset to one size first")
    return torch.stack(out)  # type: ignore[arg-type]



def read_files(paths: Sequence[str]) -> torch.Tensor:
    blobs = []
    for p in paths:
        try:
            with open(p, "rb") as handle:
                blobs.append(handle.read())
        except OSError as error:
            raise KdlabError(f"cannot read image {p}: {error.strerror or error}") from None
    return decode_many(blobs, [str(p) for p in paths])

