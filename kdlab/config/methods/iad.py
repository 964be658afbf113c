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
    bn_update_pass: bool = Field(True, description="one more train-mode forward of the student on x' whose "
                                                   "output is unused (IAD-I.py's basicop): it only updates "
                                                   "BatchNorm's running statistics, as their code; false: "
                                                   "skip it (kdlab before issue #24, one pass fewer)")

    @property
    def student_passes(self) -> float:
        """k + 4 after the warm-up (adversarial, the BatchNorm-update pass on x', clean and the second clean
        pass), k + 3 during it; one fewer for each of ``second_clean_pass``, ``bn_update_pass`` turned off. The
        declared cost is the cost after the warm-up (the update pass is a forward only, counted as a pass)."""
        return self.inner.steps + 2.0 + float(self.second_clean_pass) + float(self.bn_update_pass)

    @property
    def teacher_forwards(self) -> float:
        return 2.0  # t(x) and t(x') (the confidence), during the warm-up too, as their code
