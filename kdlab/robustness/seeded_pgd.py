"""PGD with random starts seeded per sample: the ``pgd`` and ``cw`` attacks of :mod:`kdlab.robustness.attacks`.

A sample's random start is a fixed function of (seed, restart, sample index), drawn on the CPU, so the result
does not depend on the batch size or the device; restarts attack only the points still standing
(:func:`kdlab.robustness.standing.strike`), keeping the worst case per point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torchattacks
from torch import Tensor, nn

from kdlab.errors import KdlabError
from kdlab.losses.cw_margin import cw_margin_loss
from kdlab.robustness.standing import strike

DEFAULT_EPS = 8 / 255


def _sample_seed(seed: int, restart: int, index: int) -> int:
    digest = hashlib.blake2b(f"kdlab:{seed}:{restart}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def start_noise(seed: int, restart: int, indices: Tensor, shape: Sequence[int], device: torch.device | str
                ) -> Tensor:
    """Uniform noise in [-1, 1] of shape ``(len(indices), *shape)``, a fixed function of (seed, restart, index).

    Drawn on the CPU, one generator per sample, so a sample's random start is the same whatever the batch it
    falls in and whatever the device.
    """
    out = torch.empty((len(indices), *shape), dtype=torch.float32)
    gen = torch.Generator()
    for row, index in enumerate(indices.tolist()):
        gen.manual_seed(_sample_seed(seed, restart, int(index)))
        out[row].uniform_(-1.0, 1.0, generator=gen)
    return out.to(device)


def _ce_sum(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="sum")


def _cw_sum(logits: Tensor, labels: Tensor) -> Tensor:
    return cw_margin_loss(logits, labels, kappa=0.0, reduction="sum")


_PGD_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ce": _ce_sum, "cw": _cw_sum}


class SeededPGD(torchattacks.PGD):
    """torchattacks' L-inf PGD loop (same update, projection and clipping) with three changes.

    - the uniform random start is drawn per sample by :func:`start_noise`, so results do not depend on the
      batch size (``forward(images, labels, indices)``; ``indices`` default ``arange(batch)``);
    - ``restarts``: restart ``r`` re-attacks, from a fresh random start, the points not fooled so far;
    - ``loss``: ``"ce"`` (cross-entropy) or ``"cw"`` (CW margin), summed over the batch -- the sign of the
      gradient is that of torchattacks' mean, without the 1/batch scaling.

    Like torchattacks.PGD it returns the last iterate of each restart.
    """

    def __init__(self, model: nn.Module, eps: float = DEFAULT_EPS, alpha: float = 2 / 255, steps: int = 20,
                 restarts: int = 1, seed: int = 0, loss: str = "ce", random_start: bool = True):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        if loss not in _PGD_LOSSES:
            raise KdlabError(f"PGD loss {loss!r} is not one of {', '.join(_PGD_LOSSES)}")
        self.attack = "SeededPGD"
        self.restarts = restarts
        self.seed = seed
        self.loss_name = loss
        self.supported_mode = ["default"]

    def _single_run(self, images: Tensor, labels: Tensor, indices: Tensor, restart: int) -> Tensor:
        loss_fn = _PGD_LOSSES[self.loss_name]
        adv = images.clone().detach()
        if self.random_start:
            noise = start_noise(self.seed, restart, indices, images.shape[1:], images.device)
            adv = torch.clamp(adv + self.eps * noise, min=0, max=1).detach()
        for _ in range(self.steps):
            adv.requires_grad = True
            cost = loss_fn(self.get_logits(adv), labels)
            grad = torch.autograd.grad(cost, adv, retain_graph=False, create_graph=False)[0]
            adv = adv.detach() + self.alpha * grad.sign()
            delta = torch.clamp(adv - images, min=-self.eps, max=self.eps)
            adv = torch.clamp(images + delta, min=0, max=1).detach()
        return adv

    def forward(self, images: Tensor, labels: Tensor, indices: Tensor | None = None) -> Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        if indices is None:
            indices = torch.arange(images.shape[0])
        indices = indices.cpu()
        adv = self._single_run(images, labels, indices, restart=0)
        if self.restarts <= 1:
            return adv
        with torch.no_grad():
            alive = self.get_logits(adv).argmax(1) == labels
        for restart in range(1, self.restarts):
            strike(lambda out: self.get_logits(out).argmax(1),
                   lambda idx, restart=restart: self._single_run(images[idx], labels[idx], indices[idx.cpu()],
                                                                 restart),
                   alive.nonzero().flatten(), labels, alive, adv)
        return adv
