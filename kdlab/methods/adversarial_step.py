"""What the methods that adversarially train the student share: the inner maximisation through kdlab's PGD.

Each such method (``ard``, ``rslad``, ``iad``, ``adaad``, ``pgd-at``) says three things and nothing else about
its inner loop: the quantity it maximises (:meth:`AdversarialDistillation.objective`, a scalar function of
x'), the mode the student is in while x' is made (:attr:`AdversarialDistillation.generation_mode`: ``train``
or ``eval``, its reference script's), and where PGD starts (``settings.start``). Eps, step and the number of
steps come from ``method.inner`` (``kdlab.config.methods.adversarial.InnerMaxSpec``), and the loop is
:func:`kdlab.robustness.training_attacks.pgd_maximise` for all of them. The teacher is always in eval mode and frozen
(``kdlab.methods.base``): gradients may flow through it to x' (AdaAD), never into its parameters. """

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import ClassVar, Literal

import torch

from kdlab.config.methods.adversarial import AdversarialSettings
from kdlab.methods.base import DistillationMethod
from kdlab.robustness.training_attacks import eval_mode, pgd_maximise


class AdversarialDistillation(DistillationMethod):
    """Base of the adversarial methods: :meth:`adversarial_examples` ascends :meth:`objective` by PGD."""

    generation_mode: ClassVar[Literal["train", "eval"]] = "train"

    def objective(self, images: torch.Tensor, labels: torch.Tensor,
                  teacher_logits: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The scalar the inner maximisation ascends, as a function of x' (``teacher_logits``: t(x) when the
        method already has it)."""
        raise NotImplementedError

    def generation(self):
        """The context the examples are made in: the student in eval mode (each module's flag restored after)
        when the reference does so, else the mode the engine left it in (train)."""
        return eval_mode(self.student) if self.generation_mode == "eval" else nullcontext()

    def adversarial_examples(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                             teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        settings: AdversarialSettings = self.settings  # type: ignore[assignment]
        inner = settings.inner
        with self.generation():
            return pgd_maximise(self.objective(images, labels, teacher_logits), images, eps=inner.eps,
                                alpha=inner.step, steps=inner.steps, generator=generator,
                                start=settings.start)  # type: ignore[arg-type]
