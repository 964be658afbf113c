"""Robust representation matching's settings (``method: {name: rrm}``; the step: :mod:`kdlab.methods.rrm`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdlab.config.methods.base import MethodSettings


class RRMSettings(MethodSettings):
    """Vaishnavi et al. 2022 (``kdlab.methods.rrm``); defaults: Ethos-lab/robust-representation-matching
    l_inf/README.md (``train_rrm.py --feat-loss cosine --xent-weight 0.005 --feat-weight -1``)."""

    name: Literal["rrm"] = "rrm"
    ce_weight: float = Field(0.005, ge=0, description="weight of CE (the authors' CIFAR-10 l_inf command: 0.005)")
    weight: float = Field(1.0, ge=0, description="weight of the representation loss (the authors': 1)")
    distance: Literal["cosine", "l2", "l2_absolute"] = Field(
        "cosine", description="cosine: mean (1 - cos(r_s, r_t)); l2: mean ||r_s - r_t||_2 / ||r_t||_2 (the "
                              "authors' --feat-loss l2, l_2/train_rrm.py); l2_absolute: mean ||r_s - r_t||_2, not "
                              "divided by ||r_t|| (kdlab's l2 before issue #24; not the authors')")
    layer: str = Field("auto", description="module whose INPUT is the representation: auto = the last linear "
                                           "layer (the penultimate features), or a module path")
    connector: Literal["auto", "linear", "identity"] = Field(
        "auto", description="student-to-teacher map when widths differ: auto = identity if equal, else linear")
