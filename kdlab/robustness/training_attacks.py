"""Training-time adversarial examples (teachers): PGD-AT, FGSM-RS and the TRADES inner maximisation.

These are written out rather than taken from torchattacks because they sit on the training
hot path, must draw their random starts from the engine's per-epoch generator (exact resume; with
``train.rng: sample`` the generator is a :class:`kdlab.runtime.sample_random.SampleGenerator` and each sample's start
is drawn from its own index, whatever the batch or the number of processes),
and must leave the model in the mode training wants. Evaluation attacks live in
``kdlab.robustness.attacks`` and do use torchattacks. Every example stays in the L-inf eps-ball around the
clean images and in [0, 1].

* PGD-AT (Madry et al., ICLR 2018), as in Rice et al.'s ``train_cifar.py`` (locuslab/robust_overfitting,
  ``attack_pgd``): a uniform start in [-eps, eps] clipped to the pixel range, then ``steps`` sign-gradient
  steps of size alpha on CE, each projected onto the eps-ball and the pixel range; 10 steps of 2/255 for
  eps 8/255 by default. The model stays in the mode training left it in (train: BatchNorm uses, and
  updates, the statistics of the adversarial iterates), as there. Not reproduced: that script's last
  forward pass to pick the best of its restarts, which with its default single restart only adds one more
  BatchNorm running-statistics update.
* FGSM-RS, "fast" AT (Wong et al., ICLR 2020), as in locuslab/fast_adversarial ``CIFAR10/train_fgsm.py``:
  the same uniform start, one step of alpha = 10/255 for eps 8/255, projection; train mode throughout.
* TRADES (Zhang et al., ICML 2019), as in yaodongyu/TRADES ``trades.py`` (``trades_loss``): the model is
  switched to eval mode while x' is built (BatchNorm uses its running statistics and does not update
  them), from x + 0.001 * N(0, 1) (not clipped until the first step), ascending KL(f(x) || f(x')) with
  f(x) the eval-mode prediction on the clean input, by sign steps of alpha, each projected onto the
  eps-ball and [0, 1]. The reference's CIFAR script uses eps 0.031 and step 0.007; kdlab's defaults are
  8/255 and 2/255, the values the field quotes for it (set ``alpha: 0.007`` / ``eps: 0.031`` to match
  the script exactly). Afterwards every module is put back in the mode it was in (the reference calls
  ``model.train()``, the same thing inside a training step).

All three are one loop, :func:`pgd_maximise`: sign-gradient ascent of a scalar ``objective(x')`` under the
L-inf ball and [0, 1]. The adversarial distillation methods (``kdlab.methods.ard``, ``rslad``, ``iad``,
``adaad``) call it too, so their inner loops differ only in the quantity they maximise (and the mode the
model is in, which each method states).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.runtime.device_copy import to_device
from kdlab.runtime.sample_random import per_sample, sample_normal, sample_uniform


def _uniform_start(images: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    keyed = per_sample(generator)
    if keyed is not None:  # train.rng: sample -- each sample's start from its own index, on the images' device
        noise = (sample_uniform(keyed, images.shape, images.device) * 2 - 1).to(images.dtype)
    else:  # drawn on the generator's device (the CPU) so a run's randomness does not depend on where it trains
        noise = to_device(torch.rand(images.shape, generator=generator, dtype=images.dtype) * 2 - 1, images.device)
    return (images + eps * noise).clamp(0, 1)


def _project(adversarial: torch.Tensor, images: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(adversarial, images - eps), images + eps).clamp(0, 1)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` inside the block; afterwards each module gets back its own training flag."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


Start = Literal["uniform", "normal", "none"]


def _start(images: torch.Tensor, eps: float, start: Start, generator: torch.Generator) -> torch.Tensor:
    if start == "uniform":
        return _uniform_start(images, eps, generator)
    if start == "normal":
        # x + 0.001 * N(0, 1), not clipped until the first step (TRADES trades.py, RSLAD, AdaAD)
        keyed = per_sample(generator)
        if keyed is not None:
            noise = sample_normal(keyed, images.shape, images.device).to(images.dtype)
        else:
            noise = to_device(torch.randn(images.shape, generator=generator, dtype=images.dtype), images.device)
        return images + 0.001 * noise
    if start == "none":
        return images.clone()
    raise ValueError(f"unknown PGD start '{start}': uniform, normal or none")


def pgd_maximise(objective: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *, eps: float,
                 alpha: float, steps: int, generator: torch.Generator,
                 start: Start = "uniform") -> torch.Tensor:
    """``steps`` sign-gradient ascent steps of size ``alpha`` on the scalar ``objective(x')``, each projected
    onto the L-inf ``eps``-ball around ``images`` and [0, 1], from ``start`` (``uniform``: U(-eps, eps)
    clipped to [0, 1], Madry et al.; ``normal``: x + 0.001 N(0, 1), TRADES; ``none``: x itself).

    The models inside ``objective`` are used in whatever mode the caller left them (each method states its
    reference's mode). Gradients are taken with respect to x' only (``torch.autograd.grad``), so no parameter
    gradient is accumulated, also not through a frozen teacher the objective runs. The result is detached and
    always in the ball and in [0, 1].

    Under fp16 autocast (``train.precision: fp16``) the objective is multiplied by :data:`FP16_OBJECTIVE_SCALE`
    before its gradient is taken, so small input gradients do not underflow in fp16 (a positive factor leaves
    the sign step unchanged; a gradient entry that overflows to NaN takes no step). fp32 and bf16 (fp32's
    exponent range) are left as they are.
    """
    scale = _fp16_objective_scale(images.device)
    adversarial = _start(images, eps, start, generator)
    for _ in range(steps):
        adversarial.requires_grad_(True)
        with torch.enable_grad():
            value = objective(adversarial)
            (gradient,) = torch.autograd.grad(value if scale is None else value * scale, adversarial)
        direction = gradient.sign() if scale is None else gradient.sign().nan_to_num(0.0)
        adversarial = _project(adversarial.detach() + alpha * direction, images, eps)
    return _project(adversarial.detach(), images, eps)


# Loss scaling of the inner maximisation under fp16 autocast (a fixed power of two: exact, and sign-invariant).
FP16_OBJECTIVE_SCALE = 2.0 ** 10


def _fp16_objective_scale(device: torch.device) -> float | None:
    device_type = device.type if device.type in ("cuda", "cpu") else "cpu"
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16:
        return FP16_OBJECTIVE_SCALE
    return None


def pgd_examples(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float, alpha: float,
                 steps: int, generator: torch.Generator) -> torch.Tensor:
    """PGD-AT examples (random start, ``steps`` sign-gradient steps on CE)."""
    return pgd_maximise(lambda adversarial: F.cross_entropy(model(adversarial), labels), images,
                        eps=eps, alpha=alpha, steps=steps, generator=generator)


def fgsm_rs_examples(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
                     alpha: float, generator: torch.Generator) -> torch.Tensor:
    """FGSM with a uniform random start (Wong et al.'s fast adversarial training)."""
    return pgd_examples(model, images, labels, eps=eps, alpha=alpha, steps=1, generator=generator)


def trades_examples(model: nn.Module, images: torch.Tensor, *, eps: float, alpha: float, steps: int,
                    generator: torch.Generator) -> torch.Tensor:
    """TRADES inner maximisation of KL(f(x) || f(x')) under the L-inf ball, in eval mode (``trades.py``)."""
    with eval_mode(model):
        with torch.no_grad():
            clean_probabilities = F.softmax(model(images), dim=1)

        def kl_to_clean(adversarial: torch.Tensor) -> torch.Tensor:
            log_probabilities = F.log_softmax(model(adversarial), dim=1)
            return F.kl_div(log_probabilities, clean_probabilities, reduction="sum")

        return pgd_maximise(kl_to_clean, images, eps=eps, alpha=alpha, steps=steps, generator=generator,
                            start="normal")
