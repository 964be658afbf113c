"""Structural KD's settings (``method: {name: skd}``, detection; the step: :mod:`kdlab.methods.skd`): the
per-FPN-level feature loss and the options of each kind."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from kdlab.config.methods.base import MethodSettings
from kdlab.config.schema import Section


class PKDSpec(Section):
    """``kind: pkd`` (``kdlab.losses.pkd``; MMRazor ``PKDLoss``)."""

    granularity: Literal["channel", "sample_channel"] = Field(
        "channel", description="standardise each channel over batch and positions (MMRazor PKDLoss.norm) or "
                               "each (sample, channel) map over its positions")


class CWDSpec(Section):
    """``kind: cwd`` (``kdlab.losses.cwd``; MMRazor ``ChannelWiseDivergence``)."""

    tau: float = Field(1.0, gt=0, description="temperature of the spatial softmax (MMRazor detection configs: 1)")


class MGDSpec(Section):
    """``kind: mgd`` (``kdlab.losses.mgd``; the authors' ``FeatureLoss`` and MMRazor's MGD connector)."""

    mask_ratio: float = Field(0.65, ge=0, le=1, description="share of positions masked (lambda_mgd: 0.65)")
    generator: Literal["conv3x3-relu-conv3x3"] = Field(
        "conv3x3-relu-conv3x3", description="the regenerating block per FPN level, trained and saved with the "
                                            "student (the references' only one)")


class FGDSpec(Section):
    """``kind: fgd`` (``kdlab.losses.fgd``; the authors' ``FeatureLoss`` and MMRazor ``FGDLoss``). Defaults: the
    authors' RetinaNet configs (their Faster R-CNN config: 5e-5, 2.5e-5, 5e-5, 5e-7); ``method.feature.weight``
    multiplies the whole sum, so ``weight: 1`` is the references' scale."""

    temp: float = Field(0.5, gt=0, description="temperature T of the spatial and channel attention (0.5)")
    alpha_fgd: float = Field(0.001, ge=0, description="weight of the foreground term (0.001)")
    beta_fgd: float = Field(0.0005, ge=0, description="weight of the background term (0.0005)")
    gamma_fgd: float = Field(0.0005, ge=0, description="weight of the attention (L1) term (RetinaNet 0.0005)")
    lambda_fgd: float = Field(0.000005, ge=0, description="weight of the global (context block) term (5e-6)")


# Per-kind options: present (with defaults) exactly when ``kind`` uses them, so that another kind's run, and
# every run from before they existed, keeps its key (the recipe key leaves null options out).
KIND_OPTIONS = {"pkd": "pkd", "cwd": "cwd", "mgd": "mgd", "fgd": "fgd"}


class FeatureKDSpec(Section):
    """Feature distillation on detector FPN levels (Structural KD): L_det + weight * sum_levels ``kind``."""

    kind: Literal["none", "l1", "l2", "ssim", "pkd", "cwd", "mgd", "fgd"] = Field(
        "ssim",
        description="per-level loss, a mean over the level: ssim (form: ssim_form), l1 = |psi_s - psi_t|, "
        "l2 = (psi_s - psi_t)^2; detection peers on raw features: pkd (1 - Pearson, Cao et al. 2022), cwd "
        "(channel-wise softmax KL, Shu et al. 2021), mgd (masked generation, Yang et al. 2022, sum over the "
        "map), fgd (focal and global, Yang et al. 2022, needs the boxes, weighted inside); or none (no teacher "
        "forward)",
    )
    weight: float = Field(
        2.0,
        ge=0,
        description="lambda, multiplies the per-level loss summed over FPN levels; per level ssim halved, "
        "l1 and l2 (with psi) lie in [0, 1], ssim one_minus in [0, 2]; "
        "2 = the paper's (2 and 4 best, for (1 - SSIM)/2); the peers' references: pkd 6-10, cwd 10, mgd 2e-5, "
        "fgd 1 (its four weights are fgd.*_fgd)",
    )
    ssim_form: Literal["halved", "one_minus"] = Field(
        "halved",
        description="ssim per-level loss: halved = mean (1 - SSIM)/2 (the paper's L_SSIM, "
        "kornia.losses.ssim_loss), one_minus = mean (1 - SSIM), twice as large for the same lambda",
    )
    components: Literal["lcs", "cs", "s"] = Field(
        "lcs", description="SSIM terms: lcs = full SSIM, cs = contrast-structure, s = structure only"
    )
    normalize: Literal["sample_channel", "level", "none"] = Field(
        "sample_channel", description="psi (ssim, l1, l2): min-max to [0, 1] per (sample, channel) map, per "
                                      "sample, or none"
    )
    adapter: bool = Field(False, description="learned 1x1 conv per student FPN level (needed if FPN widths differ)")
    pkd: PKDSpec | None = Field(None, description="kind pkd only (default granularity: channel)")
    cwd: CWDSpec | None = Field(None, description="kind cwd only (default tau: 1)")
    mgd: MGDSpec | None = Field(None, description="kind mgd only (default mask_ratio: 0.65)")
    fgd: FGDSpec | None = Field(None, description="kind fgd only (default: the authors' RetinaNet weights)")

    @model_validator(mode="before")
    @classmethod
    def _options_of_the_kind(cls, data):
        """A kind's own options get their defaults; other kinds' options are dropped (they change nothing)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind", "ssim")
        for option, owner in KIND_OPTIONS.items():
            if kind == owner:
                data[option] = {} if data.get(option) is None else data[option]
            else:
                data.pop(option, None)
        return data


class SKDSettings(MethodSettings):
    """Structural KD (``kdlab.methods.skd``): detector losses + lambda * per-FPN-level feature loss."""

    name: Literal["skd"] = "skd"
    tasks: ClassVar[tuple[str, ...]] = ("detection",)
    feature: FeatureKDSpec = FeatureKDSpec()

    @property
    def teacher_forwards(self) -> float:
        return 0.0 if self.feature.kind == "none" else 1.0
