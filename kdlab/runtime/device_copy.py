"""Copies from the host to the training device that do not make the host wait.

A plain ``tensor.to("cuda")`` of ordinary (pageable) host memory synchronises the CUDA stream: the host waits
until every queued kernel has run, the very stall the training loop avoids (PyTorch's ``copy_`` ends a blocking
host-to-device copy with ``cudaStreamSynchronize``). The per-batch random numbers kdlab draws on the CPU
(augmentation offsets, attack starts) therefore go through pinned memory with ``non_blocking=True``, which only
queues the copy. On the CPU (and for tensors already on the device) this is ``tensor.to(device)``.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``; a CPU tensor bound for a CUDA device is copied asynchronously from pinned memory
    (safe: the pinned copy is kept until the transfer has finished, by PyTorch's caching host allocator)."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
