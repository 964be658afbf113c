"""Structural KD's multi-level feature term: lambda times a per-level loss summed over the FPN levels.

Source: de Rijk, Schneider, Cordts & Gavrila, "Structural Knowledge Distillation for Object Detection",
NeurIPS 2022, L = L_det + lambda * L_feat with

    L_feat = sum_{levels r} (1 / N_r) sum_{b,c,h,w} L(psi(phi_r(F_s^r)), psi(F_t^r)),   N_r = B C H_r W_r

i.e. a mean over each level, SUMMED (not averaged) over the levels, so lambda multiplies the sum. What lambda
means therefore depends on the per-level loss ``kind`` (psi = min-max to [0, 1] unless ``normalize="none"``):

    "ssim", ssim_form="halved"    (default):  mean (1 - SSIM) / 2     in [0, 1] per level
    "ssim", ssim_form="one_minus":            mean (1 - SSIM)         in [0, 2] per level (2 x "halved")
    "l1":                                      mean |psi_s - psi_t|    in [0, 1] per level with psi
    "l2":                                      mean (psi_s - psi_t)^2  in [0, 1] per level with psi (MSE)
    "pkd":   mean (z_s - z_t)^2 / 2 of standardised maps ~ 1 - Pearson r, in [0, 2]  (kdlab.losses.pkd)
    "cwd":   tau^2 KL(spatial softmax_t || softmax_s), mean over (n, c), in [0, tau^2 log HW]  (kdlab.losses.cwd)
    "mgd":   sum (G(F_s * M) - F_t)^2 / N, unbounded, grows with C H W  (kdlab.losses.mgd)
    "fgd":   alpha L_fg + beta L_bg + gamma L_attention + lambda L_global, box masks and attention-weighted
             squared errors summed over channels, unbounded  (kdlab.losses.fgd)
    "none":                                    0 (no teacher term)

The detection-distillation peers (pkd, cwd, mgd, fgd) take the raw features after the adapter, as their reference
code; ``normalize`` (psi) applies to ssim, l1 and l2 only.

With R levels the term lies in [0, lambda R] ([0, 2 lambda R] for ``"one_minus"``). The paper reports lambda
2 and 4 as its best values (within ~0.5 AP) for (1 - SSIM) / 2; the same lambda on ``"one_minus"`` weighs
the structural term twice as much. The l1 / l2 baselines use the same lambda and the same psi, so a ``kind``
ablation changes only the distance. The peers' scales differ (their references weigh them 6-10 for pkd, 10 for
cwd, 2e-5 for mgd, 1 for fgd whose four weights are inside it), so a fair comparison chooses lambda per kind
on validation data (``kdlab ablate --tune``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from kdlab.losses.cwd import cwd_loss
from kdlab.losses.feature import feature_distance
from kdlab.losses.fgd import fgd_loss
from kdlab.losses.mgd import MGD_MASK_RATIO, mgd_loss, mgd_mask
from kdlab.losses.pkd import pkd_loss
from kdlab.losses.ssim import SSIM_FORMS, ssim_loss

FEATURE_LOSS_KINDS = ("ssim", "l1", "l2", "pkd", "cwd", "mgd", "fgd", "none")

Levels = Sequence[Tensor] | Mapping[str, Tensor]
Adapters = nn.ModuleList | nn.ModuleDict | Sequence[nn.Module] | Mapping[str, nn.Module] | None


def _as_named_levels(levels: Levels, what: str) -> list[tuple[str, Tensor]]:
    if isinstance(levels, Mapping):
        return [(str(name), level) for name, level in levels.items()]
    if isinstance(levels, (list, tuple)):
        return [(str(index), level) for index, level in enumerate(levels)]
    raise ValueError(f"{what} levels must be a list/tuple or a dict of tensors, got {type(levels).__name__}")


def _adapter_for(adapters: Adapters, name: str, index: int, what: str = "adapter") -> nn.Module | None:
    if adapters is None:
        return None
    if isinstance(adapters, (Mapping, nn.ModuleDict)):
        if name not in adapters:
            raise ValueError(
                f"no {what} for feature level {name!r}; {what}s exist for {sorted(adapters.keys())}"
            )
        return adapters[name]
    if index >= len(adapters):
        raise ValueError(f"no {what} for feature level {index}: only {len(adapters)} {what}s were given")
    return adapters[index]


def multilevel_feature_loss(
    student_levels: Levels,
    teacher_levels: Levels,
    kind: str = "ssim",
    weight: float = 1.0,
    components: str = "lcs",
    normalize: str = "sample_channel",
    adapters: Adapters = None,
    window_size: int = 11,
    sigma: float = 1.5,
    ssim_form: str = "halved",
    tau: float = 1.0,
    pkd_granularity: str = "channel",
    generators: Adapters = None,
    mask_ratio: float = MGD_MASK_RATIO,
    rng: torch.Generator | None = None,
    boxes: Sequence[Tensor] | None = None,
    image_size: tuple[int, int] | None = None,
    contexts: Adapters = None,
    fgd_options: Mapping[str, float] | None = None,
) -> Tensor:
    """``weight * sum over levels`` of the per-level loss ``kind`` (what weight means per kind: module doc).

    ``weight`` here is a plain multiplier (default 1); the recipe's lambda default (``method.feature.weight``)
    is the paper's value. Levels are matched by position (lists) or by key (dicts; the two must have the same
    keys). ``adapters`` maps each student level before the loss (e.g. a connector per FPN level), indexed like
    the levels. The teacher levels are detached. ``"none"`` returns a zero scalar on the student's device (a
    no-distillation baseline). ``"l1"``/``"l2"`` use the same psi as ``"ssim"`` (pass ``normalize="none"`` for
    the raw-feature baseline); ``ssim_form`` applies to ``"ssim"`` only. ``tau``: the ``"cwd"`` temperature;
    ``pkd_granularity``: ``"pkd"``'s standardisation; ``"mgd"`` needs ``generators`` (one G per level, indexed
    like the levels) and draws each level's mask (``mask_ratio``) from ``rng`` in level order. ``"fgd"``
    needs ``boxes`` (per image, K x 4 in the pixels of the ``image_size`` = (H, W) batch the backbone saw),
    ``contexts`` (one ``FGDContexts`` per level) and takes ``fgd_options`` (``temp``, ``alpha_fgd``, ...).
    """
    if kind not in FEATURE_LOSS_KINDS:
        raise ValueError(
            f"unknown feature loss kind {kind!r}; allowed values: {', '.join(FEATURE_LOSS_KINDS)}"
        )
    if ssim_form not in SSIM_FORMS:
        raise ValueError(f"unknown SSIM loss form {ssim_form!r}; allowed values: {', '.join(SSIM_FORMS)}")
    if isinstance(student_levels, Mapping) != isinstance(teacher_levels, Mapping):
        raise ValueError("student and teacher feature levels must both be lists or both be dicts")
    student_named = _as_named_levels(student_levels, "student")
    teacher_named = _as_named_levels(teacher_levels, "teacher")
    if [name for name, _ in student_named] != [name for name, _ in teacher_named]:
        if isinstance(student_levels, Mapping) and isinstance(teacher_levels, Mapping):
            if set(student_levels) == set(teacher_levels):
                teacher_named = [(name, teacher_levels[name]) for name, _ in student_named]
            else:
                raise ValueError(
                    f"student and teacher feature levels differ: {sorted(student_levels)} vs {sorted(teacher_levels)}"
                )
        else:
            raise ValueError(
                f"student has {len(student_named)} feature levels but teacher has {len(teacher_named)}"
            )
    if not student_named:
        raise ValueError("no feature levels given")

    first_student = student_named[0][1]
    total = torch.zeros((), dtype=first_student.dtype, device=first_student.device)
    if kind == "none":
        return total
    for index, ((name, student), (_, teacher)) in enumerate(zip(student_named, teacher_named)):
        adapter = _adapter_for(adapters, name, index)
        if adapter is not None:
            student = adapter(student)
        teacher = teacher.detach()
        if student.shape != teacher.shape:
            raise ValueError(
                f"feature level {name!r}: student shape {tuple(student.shape)} (after the adapter) does not match "
                f"teacher shape {tuple(teacher.shape)}"
            )
        if kind == "ssim":
            total = total + ssim_loss(
                student,
                teacher,
                components=components,
                normalize=normalize,
                window_size=window_size,
                sigma=sigma,
                form=ssim_form,
            )
        elif kind == "pkd":
            total = total + pkd_loss(student, teacher, granularity=pkd_granularity)
        elif kind == "cwd":
            total = total + cwd_loss(student, teacher, tau=tau)
        elif kind == "mgd":
            if generators is None:
                raise ValueError("kind 'mgd' needs generators: one regenerating module per feature level")
            generator = _adapter_for(generators, name, index, "generator")
            total = total + mgd_loss(student, teacher, generator, mgd_mask(student, mask_ratio, rng))
        elif kind == "fgd":
            if boxes is None or image_size is None or contexts is None:
                raise ValueError("kind 'fgd' needs boxes, image_size and contexts (one FGDContexts per level)")
            context = _adapter_for(contexts, name, index, "context block")
            total = total + fgd_loss(student, teacher, boxes, image_size, context, **(fgd_options or {}))
        else:
            total = total + feature_distance(student, teacher, kind=kind, normalize=normalize)
    return weight * total


__all__ = ["FEATURE_LOSS_KINDS", "multilevel_feature_loss"]
