"""What the settings of the methods that adversarially train the student share: the inner maximisation
(``method.inner``) and the KL reduction option (the steps' common part: :mod:`kdlab.methods.adversarial_step`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kdlab.config.methods.base import MethodSettings
from kdlab.config.schema import Perturbation, Section


class InnerMaxSpec(Section):
    """The inner maximisation: kdlab's PGD (``kdlab.robustness.training_attacks.pgd_maximise``), L-inf ball and [0, 1].

    Every adversarial method uses it, so their inner loops differ only in the quantity maximised, the start
    and the model's mode (each method's file says which). Defaults: eps 8/255, step 2/255, 10 steps, as the
    ARD, RSLAD and IAD scripts (AdaAD's parser defaults to 16/255 and 4/255, not checked against its paper's
    runs; kdlab uses 8/255 for every method so that their inner loops compare); ``start``: each method's
    reference's.
    """

    eps: Perturbation = Field(8 / 255, description="Linf budget, e.g. 8/255 or 0.031 (<= 1)")
    step: Perturbation = Field(2 / 255, description="step size of each sign-gradient step, e.g. 2/255")
    steps: int = Field(10, ge=0, description="k: inner steps (10 in every reference script)")
    start: Literal["default", "uniform", "normal", "none"] = Field(
        "default", description="default: the method's reference (uniform U(-eps, eps) for PGD-AT, ARD, IAD; "
                               "x + 0.001 N(0, 1) for RSLAD, AdaAD); none: from x")


class AdversarialSettings(MethodSettings):
    """Base of the methods that adversarially train the student: an ``inner`` maximisation of k steps."""

    inner: InnerMaxSpec = InnerMaxSpec()
    # the start the reference uses when inner.start is "default"
    reference_start: ClassVar[str] = "uniform"
    # student forward passes per image outside the inner loop (adversarial + clean pass of the outer loss)
    outer_passes: ClassVar[float] = 2.0

    @property
    def start(self) -> str:
        return self.reference_start if self.inner.start == "default" else self.inner.start

    @property
    def student_passes(self) -> float:
        """k inner steps (a forward and a backward to the input each) plus the outer loss's student passes."""
        return self.inner.steps + self.outer_passes


KLReduction = Literal["mean", "batchmean"]
REDUCTION_HELP = ("mean: over batch x classes (nn.KLDivLoss() default, as the authors' CIFAR-10 code); "
                  "batchmean: summed over classes, averaged over the batch (C times larger)")
