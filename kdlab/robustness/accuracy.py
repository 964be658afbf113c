"""Robust accuracy of a classifier under L-inf attacks (one concept: measuring it, hence past 500 lines).

- :func:`evaluate_robustness`: clean accuracy (one shared clean pass) and accuracy under each attack, batched so
  memory stays flat for any number of images. A point is *robust* when it is classified correctly both clean and
  under the attack; ``autoattack`` reports the worst case over its components (see :mod:`kdlab.robustness.attacks`).
- :func:`eps_sweep`: the same for every (attack, eps) pair -- the data of a robustness curve.
- :func:`evaluate_specs`: a list of attacks as ``kdlab eval`` runs them: each result handed on as it finishes
  (``on_result``); an ensemble (AutoAttack) runs as one call, each component's expected time told after its first
  batch. :func:`evaluate_probed`: a list first timed on its first images, then the rest (the sanity checks).

The self-checks that catch unreliable evaluations (gradient masking, wrong normalisation, train mode) live in
:mod:`kdlab.robustness.sanity`.

Images are float tensors in [0, 1], shape (N, C, H, W); the model normalises inside and returns logits.
Every number is reported with its attack, eps, alpha, steps, restarts, seed and sample count (``AttackResult.row``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from kdlab.config.units import format_eps
from kdlab.errors import KdlabError
from kdlab.robustness.attacks import (
    AttackSpec,
    CompositeAttack,
    LogitsModel,
    attack_def,
    attack_mode,
    build_attack,
    precision_context,
    run_attack,
)
from kdlab.robustness.standing import strike

__all__ = [
    "AttackResult",
    "Progress",
    "eps_sweep",
    "evaluate_probed",
    "evaluate_robustness",
    "evaluate_specs",
    "probe_size",
    "recorded_result",
    "setting_columns",
]

Progress = Callable[[str, int, int], None]
"""``progress(name, done, total)``: called with ``done = 0`` when a pass starts (so its elapsed time is real) and
after every batch. ``name`` is ``"clean"`` for the shared clean pass,
``spec.label`` (e.g. ``"pgd@8/255"``) for an attack, and ``"autoattack@8/255:apgd-t"`` for an AutoAttack
component, whose ``total`` is the number of points still robust when the component starts."""

OnResult = Callable[["AttackResult"], None]
"""``on_result(result)``: called with each attack's result as soon as it is complete (to record it at once)."""

Estimate = Callable[[str, int, float, int], None]
"""``on_estimate(what, probe_n, seconds, n)``: ``what`` took ``seconds`` on the first ``probe_n`` of ``n`` images."""


def setting_columns(attack: str, eps: float, alpha: float | None, steps: int, restarts: int, seed: int,
                    n: int) -> dict[str, object]:
    """The columns that say which measurement a row is (besides the model and the images): the one definition,
    used by :meth:`AttackResult.row` and to find a recorded row before attacking (``kdlab eval`` skips it)."""
    return {"attack": attack, "eps": eps, "alpha": alpha if alpha is not None else float("nan"), "steps": steps,
            "restarts": restarts, "seed": seed, "n": n}

_RANGE_TOL = 1e-6


@dataclass
class AttackResult:
    """Accuracy of one attack configuration on ``n`` images.

    ``accuracy`` and ``clean_accuracy`` are percentages; ``robust`` is the per-sample bool mask (CPU) of points
    correct both clean and under the attack. ``components`` holds, for ``autoattack``, the robust accuracy after
    each component (cumulative, like the reference's log), starting with ``"clean"``. ``max_perturbation`` is
    the largest L-inf distance of any adversarial image from its original, ``min_value``/``max_value`` the range
    of the adversarial images (for the bound checks). ``adv_images`` is kept only on request.
    """

    attack: str
    eps: float
    alpha: float | None
    steps: int
    restarts: int
    n: int
    seed: int
    accuracy: float
    robust: Tensor
    wall_s: float
    images_per_s: float
    clean_accuracy: float
    components: dict[str, float] = field(default_factory=dict)
    max_perturbation: float = 0.0
    min_value: float = 0.0
    max_value: float = 1.0
    adv_images: Tensor | None = field(default=None, repr=False)
    top_class_share: float = float("nan")
    collapsed: str = ""
    predictions: Tensor | None = field(default=None, repr=False)  # clean predictions (CPU), for merging shards
    num_classes: int = 0

    @property
    def label(self) -> str:
        return f"{self.attack}@{format_eps(self.eps)}"

    @property
    def robust_count(self) -> int:
        return int(self.robust.sum())

    def row(self) -> dict[str, object]:
        """One CSV row; the same columns for every attack (``components`` is ``"name=acc;..."`` or ``""``)."""
        columns = setting_columns(self.attack, self.eps, self.alpha, self.steps, self.restarts, self.seed, self.n)
        return {
            "attack": columns["attack"],
            "eps": columns["eps"],
            "eps_255": round(self.eps * 255, 4),
            "alpha": columns["alpha"],
            "steps": columns["steps"],
            "restarts": columns["restarts"],
            "seed": columns["seed"],
            "n": columns["n"],
            "clean_accuracy": round(self.clean_accuracy, 4),
            "accuracy": round(self.accuracy, 4),
            "robust_count": self.robust_count,
            "max_linf": self.max_perturbation,
            "adv_min": self.min_value,
            "adv_max": self.max_value,
            "wall_s": round(self.wall_s, 3),
            "images_per_s": round(self.images_per_s, 2),
            "components": ";".join(f"{k}={v:.2f}" for k, v in self.components.items()),
            "top_class_share": round(self.top_class_share, 2),
            "flag": self.flag,
        }

    @property
    def flag(self) -> str:
        """``"collapsed: robust accuracy meaningless (...)"`` for a degenerate model, else ``""``."""
        return f"collapsed: robust accuracy meaningless ({self.collapsed})" if self.collapsed else ""


def recorded_result(row: dict[str, str]) -> AttackResult | None:
    """An :class:`AttackResult` rebuilt from a recorded CSV row (its text cells), for judging it again (the
    sanity checks): accuracies, eps, steps, an ensemble's ``components`` and the range of the adversarial images;
    no per-image mask. ``None`` when the row lacks a column that needs (a row written before ``adv_min``/``adv_max``
    were recorded)."""
    try:
        alpha = float(row["alpha"]) if row.get("alpha") not in (None, "", "nan") else None
        components = {name: float(value) for name, value in (
            part.split("=", 1) for part in str(row.get("components") or "").split(";") if "=" in part)}
        return AttackResult(
            attack=row["attack"], eps=float(row["eps"]), alpha=alpha, steps=int(row["steps"]),
            restarts=int(row["restarts"]), n=int(row["n"]), seed=int(row["seed"]), accuracy=float(row["accuracy"]),
            robust=torch.zeros(0, dtype=torch.bool), wall_s=float(row["wall_s"]),
            images_per_s=float(row["images_per_s"]), clean_accuracy=float(row["clean_accuracy"]),
            max_perturbation=float(row["max_linf"]), min_value=float(row["adv_min"]),
            max_value=float(row["adv_max"]), components=components,
        )
    except (KeyError, TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------------------
# input checks


def _model_device(model: nn.Module, images: Tensor) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return images.device


def _check_inputs(images: Tensor, labels: Tensor, batch_size: int) -> None:
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise KdlabError("images and labels must be torch tensors")
    if images.dim() != 4:
        raise KdlabError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise KdlabError(f"images are {images.dtype}: convert them to float in [0, 1] (e.g. uint8 / 255)")
    if images.shape[0] == 0:
        raise KdlabError("no images to evaluate: select at least one test image")
    if labels.shape != (images.shape[0],):
        raise KdlabError(f"labels must be ({images.shape[0]},) to match the images, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise KdlabError("labels must be integer class indices")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise KdlabError(f"batch_size={batch_size!r} must be a positive integer")


def _range_problem(images: Tensor) -> str | None:
    lo, hi = float(images.min()), float(images.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL or math.isnan(lo) or math.isnan(hi):
        return (f"images span [{lo:.3g}, {hi:.3g}], outside [0, 1]: wrong normalisation -- kdlab models normalise "
                "inside, so pass raw [0, 1] images (do not normalise them in the data pipeline)")
    return None


# --------------------------------------------------------------------------------------------------------------
# evaluation


@dataclass
class _Stats:
    max_perturbation: float = 0.0
    min_value: float = math.inf
    max_value: float = -math.inf

    def update(self, adv: Tensor, clean: Tensor) -> None:
        if adv.numel() == 0:
            return
        self.max_perturbation = max(self.max_perturbation, float((adv - clean).abs().max()))
        self.min_value = min(self.min_value, float(adv.min()))
        self.max_value = max(self.max_value, float(adv.max()))


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _percent(mask: Tensor) -> float:
    return 100.0 * float(mask.sum()) / mask.numel()


def _clean_pass(net: LogitsModel, images: Tensor, labels: Tensor, batch_size: int, device: torch.device,
                progress: Progress | None, precision: str = "fp32") -> tuple[Tensor, int, Tensor]:
    n = images.shape[0]
    correct = torch.zeros(n, dtype=torch.bool)
    predictions = torch.zeros(n, dtype=torch.long)
    num_classes = 0
    if progress is not None:
        progress("clean", 0, n)
    with torch.no_grad(), precision_context(device, precision):
        for start, end in _batches(n, batch_size):
            logits = net(images[start:end].to(device))
            num_classes = logits.shape[1]
            predicted = logits.argmax(1).cpu()
            predictions[start:end] = predicted
            correct[start:end] = predicted == labels[start:end].cpu()
            if progress is not None:
                progress("clean", end, n)
    return correct, num_classes, predictions


def collapse_reason(predictions: Tensor, labels: Tensor, num_classes: int) -> tuple[float, str]:
    """``(top_class_share, reason)``: the share (%) of the most frequent prediction, and why the model is
    degenerate (``""`` when it is not). A model is degenerate when (a) its clean predictions collapse onto one
    or two classes -- the two most frequent hold >= 90 % of them while the true labels are spread wider, with
    at least 4 classes -- or (b) its clean accuracy is at chance: within two binomial standard errors of
    100/C %. Its robust accuracy then measures the class balance, not robustness: an attack cannot move a
    prediction that ignores the input, so PGD accuracy equals clean accuracy."""
    n = predictions.numel()
    counts = torch.bincount(predictions, minlength=num_classes).float()
    label_counts = torch.bincount(labels.long().cpu(), minlength=num_classes).float()
    top, top_class = float(counts.max()), int(counts.argmax())
    share = 100.0 * top / n
    two = 100.0 * float(counts.topk(min(2, num_classes)).values.sum()) / n
    label_two = 100.0 * float(label_counts.topk(min(2, num_classes)).values.sum()) / n
    if num_classes >= 4 and two >= 90.0 and label_two < 90.0:
        used = int((counts > 0).sum())
        return share, (f"predicts class {top_class} for {share:.0f}% of {n} images"
                       + (f", two classes for {two:.0f}%" if used > 1 else ""))
    chance = 1.0 / num_classes
    accuracy = 100.0 * float((predictions == labels.long().cpu()).float().mean())
    if num_classes >= 2 and accuracy <= 100.0 * (chance + 2 * math.sqrt(chance * (1 - chance) / n)):
        return share, f"clean accuracy {accuracy:.1f}% on {n} images is at chance ({100 * chance:.1f}%)"
    return share, ""


def _predict(net: LogitsModel, x: Tensor, precision: str = "fp32") -> Tensor:
    with torch.no_grad(), precision_context(x.device, precision):
        return net(x).argmax(1)


def _run_batched(net, attack, spec, images, labels, clean_correct, batch_size, device, progress, keep_adv,
                 precision="fp32", offset=0):
    n = images.shape[0]
    robust = torch.zeros(n, dtype=torch.bool)
    stats = _Stats()
    adv_store = images.detach().clone().cpu() if keep_adv else None
    if progress is not None:
        progress(spec.label, 0, n)
    for start, end in _batches(n, batch_size):
        x = images[start:end].to(device)
        y = labels[start:end].to(device)
        adv = run_attack(attack, x, y, torch.arange(start + offset, end + offset), seed=spec.seed,
                         precision=precision)
        robust[start:end] = clean_correct[start:end] & (_predict(net, adv, precision) == y).cpu()
        stats.update(adv, x)
        if adv_store is not None:
            adv_store[start:end] = adv.cpu()
        if progress is not None:
            progress(spec.label, end, n)
    return robust, stats, {}, adv_store


def _run_composite(net, attack: CompositeAttack, spec, images, labels, clean_correct, batch_size, device,
                   progress, keep_adv, precision="fp32", offset=0):
    """Each component on the still-robust points, in index order and batches (the reference's schedule)."""
    robust = clean_correct.clone()
    stats = _Stats()
    adv_store = images.detach().clone().cpu() if keep_adv else None
    components = {"clean": _percent(clean_correct)}
    for name, component in attack.components:
        alive = robust.nonzero().flatten()
        total = alive.numel()
        if progress is not None and total:
            progress(f"{spec.label}:{name}", 0, total)
        for start, end in _batches(total, batch_size):
            idx = alive[start:end]
            x = images[idx].to(device)
            adv, _ = strike(lambda out: _predict(net, out, precision),
                            lambda idx, component=component, x=x: run_attack(component, x, labels[idx].to(device),
                                                                             idx + offset, seed=spec.seed,
                                                                             precision=precision),
                            idx, labels, robust, adv_store)
            stats.update(adv, x)
            if progress is not None:
                progress(f"{spec.label}:{name}", end, total)
        components[name] = _percent(robust)
    return robust, stats, components, adv_store


def evaluate_robustness(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[AttackSpec | str],
    batch_size: int = 256,
    progress: Progress | None = None,
    *,
    device: torch.device | str | None = None,
    keep_adv: bool = False,
    deterministic: bool = True,
    precision: str = "fp32",
    index_offset: int = 0,
    on_result: OnResult | None = None,
) -> list[AttackResult]:
    """Clean and adversarial accuracy of ``model`` on ``images`` (float, [0, 1]) for each attack, in order.

    ``attacks`` are :class:`AttackSpec` (or bare names, which take every default). One clean pass is shared by
    all attacks. Images may stay on the CPU: each batch is moved to ``device`` (default: the model's device).
    The model is evaluated in eval mode and its modes are restored afterwards; the call works from inside
    ``torch.no_grad()``. The same call gives the same numbers (seeded); for ``clean``, ``fgsm``, ``pgd`` and
    ``cw`` they do not depend on ``batch_size`` either. ``keep_adv=True`` also returns the adversarial images
    (CPU; memory grows with n). ``deterministic`` asks cuDNN for deterministic kernels during the call.
    ``precision``: ``fp32`` (default, the reference protocol) or ``bf16`` autocast for the clean pass and every
    attack (``eval.precision``; :func:`kdlab.robustness.attacks.precision_context`). ``index_offset``: the images are
    positions ``index_offset ...`` of a larger set (one rank's share, :mod:`kdlab.robustness.sharded`): per-sample
    random starts use those positions. ``on_result`` is called with each attack's result as soon as it is done.
    """
    _check_inputs(images, labels, batch_size)
    problem = _range_problem(images)
    if problem:
        raise KdlabError(problem)
    specs = [(AttackSpec(a) if isinstance(a, str) else a).resolved() for a in attacks]
    if not specs:
        raise KdlabError("no attacks to run: give at least one attack name, e.g. pgd")
    device = torch.device(device) if device is not None else _model_device(model, images)
    n = images.shape[0]
    labels = labels.long()
    results: list[AttackResult] = []
    with attack_mode(model, deterministic=deterministic) as net:
        t0 = time.perf_counter()
        clean_correct, num_classes, predictions = _clean_pass(net, images, labels, batch_size, device,
                                                              progress, precision)
        clean_wall = time.perf_counter() - t0
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise KdlabError(f"labels range over [{int(labels.min())}, {int(labels.max())}] but the model has "
                             f"{num_classes} outputs: check the dataset/model pairing")
        clean_acc = _percent(clean_correct)
        top_share, collapsed = collapse_reason(predictions, labels, num_classes)
        for spec in specs:
            start = time.perf_counter()
            attack = build_attack(net, spec, num_classes)
            if attack_def(spec.name).kind == "none":
                robust, stats, components = clean_correct.clone(), _Stats(0.0, float(images.min()),
                                                                            float(images.max())), {}
                adv_store = images.detach().clone().cpu() if keep_adv else None
                wall = clean_wall
            else:
                runner = _run_composite if isinstance(attack, CompositeAttack) else _run_batched
                robust, stats, components, adv_store = runner(net, attack, spec, images, labels, clean_correct,
                                                              batch_size, device, progress, keep_adv, precision,
                                                              index_offset)
                wall = time.perf_counter() - start
            results.append(AttackResult(
                attack=spec.name, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, restarts=spec.restarts,
                n=n, seed=spec.seed, accuracy=_percent(robust), robust=robust, wall_s=wall,
                images_per_s=n / wall if wall > 0 else float("inf"), clean_accuracy=clean_acc,
                components=components, max_perturbation=stats.max_perturbation,
                min_value=stats.min_value, max_value=stats.max_value, adv_images=adv_store,
                top_class_share=top_share, collapsed=collapsed, predictions=predictions, num_classes=num_classes,
            ))
            if on_result is not None:
                on_result(results[-1])
    return results


def sweep_specs(attacks: Sequence[AttackSpec | str], eps_list: Sequence[float]) -> list[AttackSpec]:
    """Every attack at every eps, eps-major: the configurations of a robustness curve."""
    base = [AttackSpec(a) if isinstance(a, str) else a for a in attacks]
    if not eps_list:
        raise KdlabError("empty eps list: give values like 0,2/255,4/255,8/255")
    return [replace(spec, eps=float(eps)) for eps in eps_list for spec in base]


def eps_sweep(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[AttackSpec | str],
    eps_list: Sequence[float],
    batch_size: int = 256,
    progress: Progress | None = None,
    **kwargs,
) -> list[AttackResult]:
    """Every attack at every eps (eps-major order), sharing one clean pass: the data of a robustness curve.

    A spec's step size follows its eps (default rule, e.g. eps/4 for PGD) unless the spec fixed ``alpha``.
    Attacks at eps = 0 are not run: their rows carry the clean accuracy (and the clean pass's time).
    ``kwargs`` go to :func:`evaluate_specs`.
    """
    return evaluate_specs(model, images, labels, sweep_specs(attacks, eps_list), batch_size, progress,
                          zero_from_clean=True, **kwargs)


def probe_size(n: int, batch_size: int) -> int:
    """How many of ``n`` images an expensive evaluation is first timed on: a twentieth, at least 16, at most one
    batch (and never all of them: then there is nothing left to estimate)."""
    return min(n, batch_size, max(16, n // 20))


def _concat(first: AttackResult, rest: AttackResult, labels: Tensor) -> AttackResult:
    """One result over the images of ``first`` followed by those of ``rest`` (one attack, run in two parts)."""
    robust = torch.cat([first.robust, rest.robust])
    predictions = torch.cat([first.predictions, rest.predictions])
    n = robust.numel()
    share, collapsed = collapse_reason(predictions, labels, first.num_classes)
    counts = {name: round(pct * first.n / 100) + round(rest.components.get(name, 0.0) * rest.n / 100)
              for name, pct in first.components.items()}
    wall = first.wall_s + rest.wall_s
    advs = [first.adv_images, rest.adv_images]
    return replace(
        first, n=n, robust=robust, accuracy=_percent(robust),
        clean_accuracy=100.0 * float((predictions == labels.long().cpu()).sum()) / n,
        components={name: 100.0 * count / n for name, count in counts.items()},
        max_perturbation=max(first.max_perturbation, rest.max_perturbation),
        min_value=min(first.min_value, rest.min_value), max_value=max(first.max_value, rest.max_value),
        wall_s=wall, images_per_s=n / wall if wall > 0 else float("inf"), top_class_share=share,
        collapsed=collapsed, predictions=predictions,
        adv_images=torch.cat(advs) if all(a is not None for a in advs) else None,
    )


def evaluate_probed(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[AttackSpec | str],
    batch_size: int = 256,
    progress: Progress | None = None,
    *,
    probe: int,
    on_estimate: Estimate,
    what: str,
    on_result: OnResult | None = None,
    index_offset: int = 0,
    **kwargs,
) -> list[AttackResult]:
    """:func:`evaluate_robustness` run first on the first ``probe`` images, timed (``on_estimate(what, probe,
    seconds, n)`` says how long all n should take), then on the rest; each attack's two parts are joined into one
    result over all n images, so the timed part counts toward it (nothing is computed twice).

    The two parts are two shares, as in a sharded run (:mod:`kdlab.robustness.sharded`): ``clean``, ``fgsm``,
    ``pgd`` and ``cw`` give the numbers of one call; the APGD/FAB/Square family seeds each batch, so their per-image
    results may differ slightly from one call's: used for the sanity checks (judged against tolerances), never for
    AutoAttack itself (:func:`evaluate_specs`). ``probe`` <= 0 or >= n: one plain call.
    """
    n = images.shape[0]
    if probe <= 0 or probe >= n:
        return evaluate_robustness(model, images, labels, attacks, batch_size, progress, on_result=on_result,
                                   index_offset=index_offset, **kwargs)

    def first_part(name: str, done: int, total: int) -> None:
        if progress is not None:
            progress(f"{name} (first {probe})", done, total)

    started = time.perf_counter()
    first = evaluate_robustness(model, images[:probe], labels[:probe], attacks, batch_size, first_part,
                                index_offset=index_offset, **kwargs)
    on_estimate(what, probe, time.perf_counter() - started, n)
    joined: list[AttackResult] = []

    def done(result: AttackResult) -> None:
        joined.append(_concat(first[len(joined)], result, labels))
        if on_result is not None:
            on_result(joined[-1])

    evaluate_robustness(model, images[probe:], labels[probe:], attacks, batch_size, progress, on_result=done,
                        index_offset=index_offset + probe, **kwargs)
    return joined


def evaluate_specs(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    specs: Sequence[AttackSpec | str],
    batch_size: int = 256,
    progress: Progress | None = None,
    *,
    zero_from_clean: bool = False,
    on_result: OnResult | None = None,
    on_estimate: Estimate | None = None,
    **kwargs,
) -> list[AttackResult]:
    """Each spec's result, in the order given, each handed to ``on_result`` as soon as it is complete.

    The cheap attacks share one :func:`evaluate_robustness` call (one clean pass); then each ensemble
    (``autoattack``, ``aa-fast``) runs as one call; with ``on_estimate``, each of its components' expected time is
    told after that component's first batch (:func:`_estimating`). ``zero_from_clean``: an attack at eps = 0 is not run, its
    result is the clean pass's (an eps-0 PGD-20 would cost 21 passes for nothing).
    """
    specs = [AttackSpec(a) if isinstance(a, str) else a for a in specs]
    results: list[AttackResult | None] = [None] * len(specs)

    def keep(index: int, result: AttackResult) -> None:
        results[index] = result
        if on_result is not None:
            on_result(result)

    zero = [i for i, s in enumerate(specs) if zero_from_clean and s.eps is not None and s.eps <= 0]
    costly = [i for i, s in enumerate(specs)
              if i not in zero and on_estimate is not None and attack_def(s.name).kind == "ensemble"]
    cheap = [i for i in range(len(specs)) if i not in zero and i not in costly]
    seed = specs[0].seed if specs else 0
    order = ([-1] if zero else []) + cheap  # -1: the clean pass the eps-0 results are read from
    run = [AttackSpec("clean", seed=seed) if i == -1 else specs[i] for i in order]

    positions = iter(order)

    def cheap_done(result: AttackResult) -> None:
        index = next(positions)
        if index >= 0:
            keep(index, result)
            return
        for i in zero:
            resolved = specs[i].resolved()
            keep(i, replace(result, attack=resolved.name, eps=0.0, alpha=resolved.alpha, steps=resolved.steps,
                            restarts=resolved.restarts, seed=resolved.seed, robust=result.robust.clone(),
                            components={}))

    if run:
        evaluate_robustness(model, images, labels, run, batch_size, progress, on_result=cheap_done, **kwargs)
    for i in costly:
        evaluate_robustness(model, images, labels, [specs[i]], batch_size, _estimating(progress, on_estimate),
                            on_result=lambda result, i=i: keep(i, result), **kwargs)
    return [result for result in results if result is not None]


def _estimating(progress: Progress | None, on_estimate: Estimate) -> Progress:
    """``progress`` that also tells ``on_estimate`` how long each pass's first batch took (an AutoAttack component's
    first batch: its expected time on the points it attacks), while the ensemble runs as one uninterrupted call.

    Not split like :func:`evaluate_probed`: AutoAttack's components seed each batch, so a split would change which
    points share a batch and so its numbers; one call keeps the reference schedule (:mod:`kdlab.robustness.attacks`).
    """
    started: dict[str, float] = {}
    told: set[str] = set()

    def report(name: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if done == 0:
            started[name] = now
        elif name != "clean" and name in started and name not in told:
            told.add(name)
            on_estimate(name, done, now - started[name], total)
        if progress is not None:
            progress(name, done, total)

    return report
