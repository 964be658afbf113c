"""FitNet's settings (``method: {name: fitnet}``; the step: :mod:`kdlab.methods.fitnet`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kdlab.config.methods.base import MethodSettings
from kdlab.config.schema import BlockKey, Taps


class FitNetSettings(MethodSettings):
    """Romero et al. 2015 (``kdlab.methods.fitnet``); defaults: mdistiller engine/cfg.py CFG.FITNET."""

    name: Literal["fitnet"] = "fitnet"
    ce_weight: float = Field(1.0, ge=0, description="weight of CE (mdistiller 1.0)")
    weight: float = Field(100.0, ge=0, description="weight of the hint MSE (mdistiller FEAT_WEIGHT 100)")
    block: Annotated[BlockKey, Taps(teacher="teacher_block")] = Field(
        3, description="student hint block: 3 = the middle stage of a 3-stage resnet (mdistiller HINT_LAYER 2, "
                       "which counts the stem as 0)")
    teacher_block: BlockKey | None = Field(None, description="teacher hint block (default: the same key)")
    connector: Literal["conv1x1-bn", "conv1x1"] = Field(
        "conv1x1-bn", description="the regressor: 1x1 conv + BN (mdistiller ConvReg without its ReLU) or a plain "
                                  "1x1 conv")
