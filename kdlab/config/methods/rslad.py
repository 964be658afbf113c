"""RSLAD's settings (``method: {name: rslad}``; the step: :mod:`kdlab.methods.rslad`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kdlab.config.methods.adversarial import REDUCTION_HELP, AdversarialSettings, KLReduction


class RSLADSettings(AdversarialSettings):
    """Zi et al. 2021 (``kdlab.methods.rslad``); defaults: zibojia/RSLAD ``resnet18_rslad_cifar10.py`` and
    ``rslad_loss.py`` (5/6 and 1/6, ``torch.mean`` of the elementwise KL, PGD 8/255, 2/255, 10 steps); their
    CIFAR-100 scripts' 10 x ``torch.mean``: ``kl_scale: 10``."""

    name: Literal["rslad"] = "rslad"
    alpha: float = Field(5 / 6, ge=0, le=1, description="weight of KL(t(x) || s(x')); 1 - alpha weighs "
                                                        "KL(t(x) || s(x)) (their 5/6 and 1/6)")
    reduction: KLReduction = Field("mean", description=REDUCTION_HELP)
    kl_scale: float = Field(1.0, gt=0, description="factor on both outer KL terms: 1 as their CIFAR-10 scripts; "
                                                   "their CIFAR-100 scripts (resnet18_rslad_cifar100.py, "
                                                   "mobilenet_v2_rslad_cifar100.py) use 10 (10*torch.mean, the "
                                                   "CIFAR-10 scale of the mean over 100 classes): set 10, with "
                                                   "reduction mean, to follow them on CIFAR-100")
    reference_start: ClassVar[str] = "normal"
