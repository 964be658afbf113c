"""IAD's settings (``method: {name: iad}``; the step: :mod:`kdlab.methods.iad`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdlab.config.methods.adversarial import REDUCTION_HELP, AdversarialSettings, KLReduction


class IADSettings(AdversarialSettings):
    """Zhu et al. 2022, IAD-I (``kdlab.methods.iad``); defaults: ZFancy/IAD ``IAD-I.py`` (``--alpha 1.0
    --temp 1.0 --beta 0.1 --begin 60`` of 200 epochs, on their ARD base ``ARD.py``: batchmean KL, PGD 8/255,
    2/255, 10 steps)."""

    name: Literal["iad"] = "iad"
    alpha: float = Field(1.0, ge=0, le=1,
                         description="weight of the distillation terms; 1 - alpha weighs CE(s(x), y)")
    temperature: float = Field(1.0, gt=0, description="T of the teacher term (their 1.0)")
    beta: float = Field(0.1, ge=0, description="teacher trust w = P_t(y | x')^beta (their 0.1)")
    warmup_epochs: int = Field(60, ge=0, description="epochs of plain ARD before the introspection term "
                                                     "(their --begin 60 of 200 epochs)")
    reduction: KLReduction = Field("batchmean", description=REDUCTION_HELP + " (IAD's code: batchmean)")
    second_clean_pass: bool = Field(True, description="the introspection target s(x) is a second forward "
                                                      "pass of the student, as their code (false: reuse the "
                                                      "clean logits)")

    @property
    def student_passes(self) -> float:
        """k + 3 after the warm-up (adversarial, clean and the second clean pass), k + 2 during it and without
        the second pass: the declared cost is the cost after the warm-up."""
        return self.inner.steps + (3.0 if self.second_clean_pass else 2.0)

    @property
    def teacher_forwards(self) -> float:
        return 2.0  # t(x) and t(x') (the confidence), during the warm-up too, as their code
