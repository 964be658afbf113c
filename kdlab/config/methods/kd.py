"""KD's settings (``method: {name: kd}``; the step: :mod:`kdlab.methods.kd`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdlab.config.methods.base import MethodSettings


class KDSettings(MethodSettings):
    """Hinton et al. 2015 (``kdlab.methods.kd``); defaults: mdistiller engine/cfg.py CFG.KD, as RepDistiller's
    ``train_student.py --distill kd -r 0.1 -a 0.9`` with ``--kd_T 4``."""

    name: Literal["kd"] = "kd"
    ce_weight: float = Field(0.1, ge=0, description="weight of CE on the true labels (mdistiller 0.1)")
    weight: float = Field(0.9, ge=0, description="weight of T^2 * KL to the teacher's soft labels (mdistiller 0.9)")
    temperature: float = Field(4.0, gt=0, description="T (mdistiller and RepDistiller: 4)")
