"""AdaAD's settings (``method: {name: adaad}``; the step: :mod:`kdlab.methods.adaad`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kdlab.config.methods.adversarial import REDUCTION_HELP, AdversarialSettings, KLReduction


class AdaADSettings(AdversarialSettings):
    """Huang et al. 2023 (``kdlab.methods.adaad``); defaults: boyellow/AdaAD ``main.py`` and ``AT_helper.py``
    (``--AdaAD_alpha 1.0``, ``nn.KLDivLoss()``, ``adaad_inner_loss``: 0.001 N(0, 1) start, both in eval)."""

    name: Literal["adaad"] = "adaad"
    alpha: float = Field(1.0, ge=0, le=1, description="weight of KL(t(x') || s(x')); 1 - alpha weighs "
                                                      "KL(t(x) || s(x)) (their --AdaAD_alpha 1.0)")
    reduction: KLReduction = Field("mean", description=REDUCTION_HELP)
    reference_start: ClassVar[str] = "normal"

    @property
    def teacher_forwards(self) -> float:
        """k inner forwards (with a backward to the input through the frozen teacher) plus t(x') and t(x)."""
        return self.inner.steps + 2.0
