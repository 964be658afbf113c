"""Training-time adversarial examples (teachers): PGD-AT, FGSM-RS and the TRADES inner maximisation.

These are written out rather than taken from torchattacks because they sit on the training
hot path, must draw their random starts from the engine's per-epoch generator (exact resume),
and must leave the model in the mode training wants. Evaluation attacks live in
``kdlab.attacks`` and do use torchattacks.

* PGD-AT (Madry et al., ICLR 2018): k steps of sign-gradient ascent on CE from a uniform
  random start in the eps-ball, projected back each step.
* FGSM-RS, "fast" AT (Wong et al., ICLR 2020): one step of size alpha (10/255 for eps 8/255)
  from a uniform random start, then projection.
* TRADES (Zhang et al., ICML 2019): the inner maximisation ascends KL(f(x) || f(x')) from a
  small Gaussian start (0.001 std), as in the reference implementation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _uniform_start(images: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    # Drawn on the generator's device (the CPU) so a run's randomness does not depend on where it trains.
    noise = (torch.rand(images.shape, generator=generator, dtype=images.dtype) * 2 - 1).to(images.device)
    return (images + eps * noise).clamp(0, 1)


def _project(adversarial: torch.Tensor, images: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(adversarial, images - eps), images + eps).clamp(0, 1)


def pgd_examples(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float, alpha: float,
                 steps: int, generator: torch.Generator) -> torch.Tensor:
    """PGD-AT examples (random start, ``steps`` sign-gradient steps on CE)."""
    adversarial = _uniform_start(images, eps, generator)
    for _ in range(steps):
        adversarial.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(adversarial), labels)
            (gradient,) = torch.autograd.grad(loss, adversarial)
        adversarial = _project(adversarial.detach() + alpha * gradient.sign(), images, eps)
    return adversarial.detach()


def fgsm_rs_examples(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float, alpha: float,
                     generator: torch.Generator) -> torch.Tensor:
    """FGSM with a uniform random start (Wong et al.'s fast adversarial training)."""
    return pgd_examples(model, images, labels, eps=eps, alpha=alpha, steps=1, generator=generator)


def trades_examples(model: nn.Module, images: torch.Tensor, *, eps: float, alpha: float, steps: int,
                    generator: torch.Generator) -> torch.Tensor:
    """TRADES inner maximisation of KL(f(x) || f(x')) under the Linf ball."""
    with torch.no_grad():
        clean_probabilities = F.softmax(model(images), dim=1)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    adversarial = (images + 0.001 * noise).clamp(0, 1)
    for _ in range(steps):
        adversarial.requires_grad_(True)
        with torch.enable_grad():
            loss = F.kl_div(F.log_softmax(model(adversarial), dim=1), clean_probabilities, reduction="sum")
            (gradient,) = torch.autograd.grad(loss, adversarial)
        adversarial = _project(adversarial.detach() + alpha * gradient.sign(), images, eps)
    return adversarial.detach()
