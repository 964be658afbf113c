"""Attention transfer's settings (``method: {name: at}``; the step: :mod:`kdlab.methods.at`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from kdlab.config.methods.base import MethodSettings
from kdlab.config.schema import BlockKey, Taps


class ATSettings(MethodSettings):
    """Zagoruyko & Komodakis 2017 (``kdlab.methods.at``); defaults: mdistiller engine/cfg.py CFG.AT."""

    name: Literal["at"] = "at"
    ce_weight: float = Field(1.0, ge=0, description="weight of CE (mdistiller 1.0)")
    weight: float = Field(1000.0, ge=0, description="beta, multiplies the AT loss summed over blocks (1000: "
                                                    "mdistiller FEAT_WEIGHT and the authors' README)")
    p: float = Field(2.0, gt=0, description="attention map sum_c |A_c|^p (the paper's and mdistiller's p = 2)")
    blocks: Annotated[list[BlockKey], Taps(teacher="teacher_blocks")] = Field(
        default_factory=lambda: [2, 3, 4], description="student blocks (default: every stage, as mdistiller feats[1:])")
    teacher_blocks: list[BlockKey] | None = Field(None, description="paired teacher blocks (default: same keys)")

    @model_validator(mode="after")
    def _pairs(self) -> ATSettings:
        if self.teacher_blocks is not None and len(self.teacher_blocks) != len(self.blocks):
            raise ValueError(f"at.teacher_blocks has {len(self.teacher_blocks)} entries but blocks has "
                             f"{len(self.blocks)}: give one teacher block per student block")
        return self
