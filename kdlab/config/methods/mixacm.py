"""MixACM's settings (``method: {name: mixacm}``, classification; the step: :mod:`kdlab.methods.mixacm`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from kdlab.config.methods.base import MethodSettings
from kdlab.config.schema import BlockKey, Section, Taps


class MixupSpec(Section):
    enabled: bool = Field(True, description="mix every batch (teacher and student see the same mixed images)")
    alpha: float = Field(1.0, gt=0, description="Beta(alpha, alpha) of the mixing weight")


class KDSpec(Section):
    weight: float = Field(1.0, ge=0, description="0 turns soft labels off")
    temperature: float = Field(4.0, gt=0, description="softmax temperature of the soft labels")


class ACMSpec(Section):
    weight: float = Field(10.0, ge=0, description="0 turns ACM off; multiplies every block's beta")
    blocks: Annotated[list[BlockKey], Taps(teacher="teacher_blocks")] = Field(
        default_factory=lambda: [2, 3, 4], description="student blocks tapped")
    teacher_blocks: list[BlockKey] | None = Field(
        None, description="the teacher block paired with each student block, in order (default: same keys)"
    )
    block_weights: list[float] | None = None
    p: float = Field(1.0, gt=0)
    normalize: Literal["l2", "none"] = "l2"
    distance: Literal["squared_l2", "l1", "cosine"] = "squared_l2"
    connector: Literal["auto", "conv1x1", "conv1x1-bn", "identity"] = Field(
        "auto", description="auto: identity when channels match, else a plain 1x1 conv"
    )

    @model_validator(mode="after")
    def _weights_match_blocks(self) -> ACMSpec:
        if self.block_weights is not None and len(self.block_weights) != len(self.blocks):
            raise ValueError(
                f"acm.block_weights has {len(self.block_weights)} entries but acm.blocks has {len(self.blocks)}"
            )
        if self.teacher_blocks is not None and len(self.teacher_blocks) != len(self.blocks):
            raise ValueError(
                f"acm.teacher_blocks has {len(self.teacher_blocks)} entries but acm.blocks has "
                f"{len(self.blocks)}: give one teacher block per student block, in the same order"
            )
        return self

    @property
    def block_pairs(self) -> list[tuple[BlockKey, BlockKey]]:
        """(student block, teacher block) per ACM term: ``teacher_blocks`` when given, else the same keys."""
        return list(zip(self.blocks, self.teacher_blocks if self.teacher_blocks is not None else self.blocks))


class MixACMSettings(MethodSettings):
    """MixACM (``kdlab.methods.mixacm``): mixup CE + KD + activated-channel-map matching."""

    name: Literal["mixacm"] = "mixacm"
    label_weight: float = Field(1.0, ge=0, description="w_mix: weight of the (mixup) cross-entropy")
    mixup: MixupSpec = MixupSpec()
    kd: KDSpec = KDSpec()
    acm: ACMSpec = ACMSpec()

    @property
    def teacher_forwards(self) -> float:
        return 1.0 if self.kd.weight > 0 or self.acm.weight > 0 else 0.0
