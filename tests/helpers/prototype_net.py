"""A tiny conv net trained in ~1 s on synthetic, noisy 5-class data (3x8x8 images in [0, 1]) to clearly-above-chance
clean accuracy with partial robustness at eps = 8/255: the model the attack and evaluation tests attack.

``trained_model`` and ``eval_data`` are cached, so every test module of a session attacks the same model on the
same images (tests/robustness/conftest.py serves them as the ``model`` and ``data`` fixtures).
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 5
SIZE = 8
EPS = 8 / 255


def make_data(n: int, seed: int, sigma: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of 5 fixed random prototypes, clipped to [0, 1]."""
    protos = 0.25 + 0.5 * torch.rand(NUM_CLASSES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1234))
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    images = (protos[labels] + sigma * torch.randn(n, 3, SIZE, SIZE, generator=gen)).clamp(0, 1)
    return images, labels


class TinyNet(nn.Module):
    """Normalisation inside (images in [0, 1]), one strided conv, a two-layer head."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(8 * (SIZE // 2) ** 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv((x - self.mean) / self.std))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@functools.cache
def trained_model() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = make_data(2000, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, images.shape[0], (128,), generator=gen)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def copy_module(model: nn.Module) -> nn.Module:
    """A frozen eval-mode copy, for running reference attacks without touching the shared model."""
    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


@functools.cache
def eval_data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(n, seed=1)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * float((model(images).argmax(1) == labels).float().mean())
