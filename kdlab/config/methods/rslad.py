"""RSLAD's settings (``method: {name: rslad}``; the step: :mod:`kdlab.methods.rslad`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kdlab.config.methods.adversarial import REDUCTION_HELP, AdversarialSettings, KLReduction


class RSLADSettings(AdversarialSettings):
    """Zi et al. 2021 (``kdlab.methods.rslad``); defaults: zibojia/RSLAD ``resnet18_rslad_cifar10.py`` and
    ``rslad_loss.py`` (5/6 and 1/6, ``torch.mean`` of the elementwise KL, PGD 8/255, 2/255, 10 steps)."""

    name: Literal["rslad"] = "rslad"
    alpha: float = Field(5 / 6, ge=0, le=1, description="weight of KL(t(x) || s(x')); 1 - alpha weighs "
                                                        "KL(t(x) || s(x)) (their 5/6 and 1/6)")
    reduction: KLReduction = Field("mean", description=REDUCTION_HELP)
    reference_start: ClassVar[str] = "normal"
