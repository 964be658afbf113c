"""ARD's settings (``method: {name: ard}``; the step: :mod:`kdlab.methods.ard`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdlab.config.methods.adversarial import REDUCTION_HELP, AdversarialSettings, KLReduction


class ARDSettings(AdversarialSettings):
    """Goldblum et al. 2020 (``kdlab.methods.ard``); defaults: goldblum/AdversariallyRobustDistillation
    ``main.py`` (``--alpha 1.0 --temp 30``, ``nn.KLDivLoss()``, PGD 8/255, 2/255, 10 steps on the student's
    CE)."""

    name: Literal["ard"] = "ard"
    alpha: float = Field(1.0, ge=0, le=1,
                         description="weight of T^2 KL(t(x) || s(x')); 1 - alpha weighs CE(s(x), y)")
    temperature: float = Field(30.0, gt=0, description="T (their main.py: 30)")
    reduction: KLReduction = Field("mean", description=REDUCTION_HELP)
