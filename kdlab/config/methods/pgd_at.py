"""PGD-AT's settings (``method: {name: pgd-at}``; the step: :mod:`kdlab.methods.pgd_at`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from kdlab.config.methods.adversarial import AdversarialSettings


class PGDATSettings(AdversarialSettings):
    """PGD-AT (Madry et al. 2018), the student adversarially trained alone (``kdlab.methods.pgd_at``), no
    teacher: CE(s(x'), y), x' from PGD on CE in train mode, as ``train.adversarial.method: pgd`` (Rice et
    al.)."""

    name: Literal["pgd-at"] = "pgd-at"
    outer_passes: ClassVar[float] = 1.0

    @model_validator(mode="after")
    def _as_train_adversarial_pgd(self) -> PGDATSettings:
        if self.inner.steps < 1:
            raise ValueError("pgd-at needs method.inner.steps >= 1 (0 steps is not adversarial training)")
        if self.inner.start not in ("default", "uniform"):
            raise ValueError(f"pgd-at starts PGD uniformly in the eps-ball (kdlab.robustness.training_attacks.pgd_examples, "
                             f"as train.adversarial: pgd), not '{self.inner.start}': drop method.inner.start")
        return self

    @property
    def teacher_forwards(self) -> float:
        return 0.0
