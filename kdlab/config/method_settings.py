"""Method settings: the ``method:`` section of a recipe, one class per method, chosen by ``method.name``.

The recipe's ``method`` section is a union discriminated by ``name`` over :data:`SETTINGS`, a registry filled by
:func:`register_settings`. Each class holds only its own method's settings, so a setting of another method
(``method: {name: kd, acm: ...}``) is an unknown key at load time, and declares the tasks it fits (``tasks``).
This module imports neither torch nor :mod:`kdlab.config.recipe` (which builds the union from it), so loading a recipe
stays fast and free of import cycles; the methods themselves live beside it, one file each, and are matched to
these classes by name in :mod:`kdlab.methods.registry`.

Every class also states what a training step costs (:attr:`MethodSettings.student_passes`,
:attr:`MethodSettings.teacher_forwards`), as data for the runs and ablation tables.
"""

from __future__ import annotations

import difflib
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from kdlab.config.schema import BlockKey, Perturbation, Section

# The method a recipe gets when it names none: what each task trained before methods became plug-ins.
DEFAULT_METHOD = {"classification": "mixacm", "detection": "skd"}


class MethodSettings(Section):
    """Base of every method's settings. Subclasses set ``name: Literal["..."] = "..."`` and ``tasks``."""

    name: str
    tasks: ClassVar[tuple[str, ...]] = ("classification",)

    @property
    def student_passes(self) -> float:
        """Forward+backward passes of the student per training image (1 for a plain step, 1 + k for a k-step
        inner maximisation); adversarial methods override it."""
        return 1.0

    @property
    def teacher_forwards(self) -> float:
        """Teacher forward passes per training image, counted apart from the student's (0: no teacher used)."""
        return 1.0


SETTINGS: dict[str, type[MethodSettings]] = {}


def register_settings(cls: type[MethodSettings]) -> type[MethodSettings]:
    """Add a settings class to the union under its ``name`` default (a decorator)."""
    name = cls.model_fields["name"].default
    if not isinstance(name, str):
        raise TypeError(f"{cls.__name__}.name needs a default, e.g. name: Literal['mine'] = 'mine'")
    if SETTINGS.get(name, cls) is not cls:
        raise ValueError(f"method '{name}' is already registered with {SETTINGS[name].__name__}")
    SETTINGS[name] = cls
    return cls


def methods_for(task: str) -> list[str]:
    return sorted(name for name, cls in SETTINGS.items() if task in cls.tasks)


def settings_class(name: object, task: str) -> type[MethodSettings]:
    """The settings class registered as ``name``; ``ValueError`` (one line) when unknown or not for ``task``."""
    names = methods_for(task)
    if not isinstance(name, str) or name not in SETTINGS:
        match = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f"did you mean '{match[0]}'? " if match else ""
        raise ValueError(f"unknown method.name '{name}': {hint}methods for {task}: {', '.join(names)}")
    cls = SETTINGS[name]
    if task not in cls.tasks:
        raise ValueError(f"method '{name}' is for {' and '.join(cls.tasks)} recipes, not {task}: set method.name: "
                         f"{DEFAULT_METHOD.get(task, names[0] if names else '?')} (methods for {task}: "
                         f"{', '.join(names)})")
    return cls


def owner_of(key: str) -> list[str]:
    """The registered methods that have a setting called ``key`` (for 'belongs to another method' errors)."""
    return sorted(name for name, cls in SETTINGS.items() if key in cls.model_fields and key != "name")


# --------------------------------------------------------------------------- MixACM (classification)
class MixupSpec(Section):
    enabled: bool = Field(True, description="mix every batch (teacher and student see the same mixed images)")
    alpha: float = Field(1.0, gt=0, description="Beta(alpha, alpha) of the mixing weight")


class KDSpec(Section):
    weight: float = Field(1.0, ge=0, description="0 turns soft labels off")
    temperature: float = Field(4.0, gt=0, description="softmax temperature of the soft labels")


class ACMSpec(Section):
    weight: float = Field(10.0, ge=0, description="0 turns ACM off; multiplies every block's beta")
    blocks: list[BlockKey] = Field(default_factory=lambda: [2, 3, 4], description="student blocks tapped")
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


@register_settings
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


# --------------------------------------------------------------------------- Structural KD (detection)
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


@register_settings
class SKDSettings(MethodSettings):
    """Structural KD (``kdlab.methods.skd``): detector losses + lambda * per-FPN-level feature loss."""

    name: Literal["skd"] = "skd"
    tasks: ClassVar[tuple[str, ...]] = ("detection",)
    feature: FeatureKDSpec = FeatureKDSpec()

    @property
    def teacher_forwards(self) -> float:
        return 0.0 if self.feature.kind == "none" else 1.0


# --------------------------------------------------------------------------- classic KD baselines
@register_settings
class KDSettings(MethodSettings):
    """Hinton et al. 2015 (``kdlab.methods.kd``); defaults: mdistiller engine/cfg.py CFG.KD, as RepDistiller's
    ``train_student.py --distill kd -r 0.1 -a 0.9`` with ``--kd_T 4``."""

    name: Literal["kd"] = "kd"
    ce_weight: float = Field(0.1, ge=0, description="weight of CE on the true labels (mdistiller 0.1)")
    weight: float = Field(0.9, ge=0, description="weight of T^2 * KL to the teacher's soft labels (mdistiller 0.9)")
    temperature: float = Field(4.0, gt=0, description="T (mdistiller and RepDistiller: 4)")


@register_settings
class FitNetSettings(MethodSettings):
    """Romero et al. 2015 (``kdlab.methods.fitnet``); defaults: mdistiller engine/cfg.py CFG.FITNET."""

    name: Literal["fitnet"] = "fitnet"
    ce_weight: float = Field(1.0, ge=0, description="weight of CE (mdistiller 1.0)")
    weight: float = Field(100.0, ge=0, description="weight of the hint MSE (mdistiller FEAT_WEIGHT 100)")
    block: BlockKey = Field(3, description="student hint block: 3 = the middle stage of a 3-stage resnet "
                                           "(mdistiller HINT_LAYER 2, which counts the stem as 0)")
    teacher_block: BlockKey | None = Field(None, description="teacher hint block (default: the same key)")
    connector: Literal["conv1x1-bn", "conv1x1"] = Field(
        "conv1x1-bn", description="the regressor: 1x1 conv + BN (mdistiller ConvReg without its ReLU) or a plain "
                                  "1x1 conv")


@register_settings
class ATSettings(MethodSettings):
    """Zagoruyko & Komodakis 2017 (``kdlab.methods.at``); defaults: mdistiller engine/cfg.py CFG.AT."""

    name: Literal["at"] = "at"
    ce_weight: float = Field(1.0, ge=0, description="weight of CE (mdistiller 1.0)")
    weight: float = Field(1000.0, ge=0, description="beta, multiplies the AT loss summed over blocks (1000: "
                                                    "mdistiller FEAT_WEIGHT and the authors' README)")
    p: float = Field(2.0, gt=0, description="attention map sum_c |A_c|^p (the paper's and mdistiller's p = 2)")
    blocks: list[BlockKey] = Field(default_factory=lambda: [2, 3, 4],
                                   description="student blocks (default: every stage, as mdistiller feats[1:])")
    teacher_blocks: list[BlockKey] | None = Field(None, description="paired teacher blocks (default: same keys)")

    @model_validator(mode="after")
    def _pairs(self) -> ATSettings:
        if self.teacher_blocks is not None and len(self.teacher_blocks) != len(self.blocks):
            raise ValueError(f"at.teacher_blocks has {len(self.teacher_blocks)} entries but blocks has "
                             f"{len(self.blocks)}: give one teacher block per student block")
        return self


@register_settings
class RRMSettings(MethodSettings):
    """Vaishnavi et al. 2022 (``kdlab.methods.rrm``); defaults: Ethos-lab/robust-representation-matching
    l_infty/README.md (``train_rrm.py --feat-loss cosine --xent-weight 0.005 --feat-weight -1``)."""

    name: Literal["rrm"] = "rrm"
    ce_weight: float = Field(0.005, ge=0, description="weight of CE (the authors' CIFAR-10 l_inf command: 0.005)")
    weight: float = Field(1.0, ge=0, description="weight of the representation loss (the authors': 1)")
    distance: Literal["cosine", "l2"] = Field(
        "cosine", description="cosine: mean (1 - cos(r_s, r_t)); l2: mean ||r_s - r_t||_2 (train_rrm.py l2)")
    layer: str = Field("auto", description="module whose INPUT is the representation: auto = the last linear "
                                           "layer (the penultimate features), or a module path")
    connector: Literal["auto", "linear", "identity"] = Field(
        "auto", description="student-to-teacher map when widths differ: auto = identity if equal, else linear")


# --------------------------------------------------------------------------- adversarial training of students
class InnerMaxSpec(Section):
    """The inner maximisation: kdlab's PGD (``kdlab.robustness.training_attacks.pgd_maximise``), L-inf ball and [0, 1].

    Every adversarial method uses it, so their inner loops differ only in the quantity maximised, the start
    and the model's mode (each method's file says which). Defaults: eps 8/255, step 2/255, 10 steps, as the
    ARD, RSLAD and IAD scripts (AdaAD's parser defaults to 16/255 and 4/255, not checked against its paper's
    runs; kdlab uses 8/255 for every method so that their inner loops compare); ``start``: each method's
    reference's.
    """

    eps: Perturbation = Field(8 / 255, description="Linf budget, e.g. 8/255 or 0.031 (<= 1)")
    step: Perturbation = Field(2 / 255, description="step size of each sign-gradient step, e.g. 2/255")
    steps: int = Field(10, ge=0, description="k: inner steps (10 in every reference script)")
    start: Literal["default", "uniform", "normal", "none"] = Field(
        "default", description="default: the method's reference (uniform U(-eps, eps) for PGD-AT, ARD, IAD; "
                               "x + 0.001 N(0, 1) for RSLAD, AdaAD); none: from x")


class AdversarialSettings(MethodSettings):
    """Base of the methods that adversarially train the student: an ``inner`` maximisation of k steps."""

    inner: InnerMaxSpec = InnerMaxSpec()
    # the start the reference uses when inner.start is "default"
    reference_start: ClassVar[str] = "uniform"
    # student forward passes per image outside the inner loop (adversarial + clean pass of the outer loss)
    outer_passes: ClassVar[float] = 2.0

    @property
    def start(self) -> str:
        return self.reference_start if self.inner.start == "default" else self.inner.start

    @property
    def student_passes(self) -> float:
        """k inner steps (a forward and a backward to the input each) plus the outer loss's student passes."""
        return self.inner.steps + self.outer_passes


KLReduction = Literal["mean", "batchmean"]
REDUCTION_HELP = ("mean: over batch x classes (nn.KLDivLoss() default, as the authors' CIFAR-10 code); "
                  "batchmean: summed over classes, averaged over the batch (C times larger)")


@register_settings
class PGDATSettings(AdversarialSettings):
    """PGD-AT (Madry et al. 2018), the student adversarially trained alone (``kdlab.methods.pgd_at``), no
    teacher: CE(s(x'), y), x' from PGD on CE in train mode, as ``train.adversarial.method: pgd`` (Rice et
    al.)."""

    name: Literal["pgd-at"] = "pgd-at"
    outer_passes: ClassVar[float] = 1.0

    @model_validator(mode="after")
    def _as_train_adversarial_pgd(self) -> PGDATSettings:
        if self.inner.steps < 1:
            raise ValueError("pgd-at needs method.inner.steps >= 1 (0 steps is not adversarial training)")
        if self.inner.start not in ("default", "uniform"):
            raise ValueError(f"pgd-at starts PGD uniformly in the eps-ball (kdlab.robustness.training_attacks.pgd_examples, "
                             f"as train.adversarial: pgd), not '{self.inner.start}': drop method.inner.start")
        return self

    @property
    def teacher_forwards(self) -> float:
        return 0.0


@register_settings
class ARDSettings(AdversarialSettings):
    """Goldblum et al. 2020 (``kdlab.methods.ard``); defaults: goldblum/AdversarialRobustnessDistillation
    ``main.py`` (``--alpha 1.0 --temp 30``, ``nn.KLDivLoss()``, PGD 8/255, 2/255, 10 steps on the student's
    CE)."""

    name: Literal["ard"] = "ard"
    alpha: float = Field(1.0, ge=0, le=1,
                         description="weight of T^2 KL(t(x) || s(x')); 1 - alpha weighs CE(s(x), y)")
    temperature: float = Field(30.0, gt=0, description="T (their main.py: 30)")
    reduction: KLReduction = Field("mean", description=REDUCTION_HELP)


@register_settings
class RSLADSettings(AdversarialSettings):
    """Zi et al. 2021 (``kdlab.methods.rslad``); defaults: zibojia/RSLAD ``resnet18_rslad_cifar10.py`` and
    ``rslad_loss.py`` (5/6 and 1/6, ``torch.mean`` of the elementwise KL, PGD 8/255, 2/255, 10 steps)."""

    name: Literal["rslad"] = "rslad"
    alpha: float = Field(5 / 6, ge=0, le=1, description="weight of KL(t(x) || s(x')); 1 - alpha weighs "
                                                        "KL(t(x) || s(x)) (their 5/6 and 1/6)")
    reduction: KLReduction = Field("mean", description=REDUCTION_HELP)
    reference_start: ClassVar[str] = "normal"


@register_settings
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


@register_settings
class AdaADSettings(AdversarialSettings):
    """Huang et al. 2023 (``kdlab.methods.adaad``); defaults: boyellow/AdaAD ``main.py`` and ``AT_helper.py``
    (``--AdaAD_alpha 1.0``, ``nn.KLDivLoss()``, ``adaad_inner_loss``: 0.001 N(0, 1) start, both in eval)."""

    name: Literal["adaad"] = "adaad"
    alpha: float = Field(1.0, ge=0, le=1, description="weight of KL(t(x') || s(x')); 1 - alpha weighs "
                                                      "KL(t(x) || s(x)) (their --AdaAD_alpha 1.0)")
    reduction: KLReduction = Field("mean", description=REDUCTION_HELP)
    reference_start: ClassVar[str] = "normal"

    @property
    def teacher_forwards(self) -> float:
        """k inner forwards (with a backward to the input through the frozen teacher) plus t(x') and t(x)."""
        return self.inner.steps + 2.0
