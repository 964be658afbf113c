"""Sanity checks that a robust-accuracy number is trustworthy (``kdlab eval --sanity``).

The checks of Carlini et al. ("On Evaluating Adversarial Robustness", 2019) and Athalye et al.
("Obfuscated Gradients Give a False Sense of Security", ICML 2018): eps = 0 gives the clean accuracy,
the model is deterministic at test time, adversarial images stay in the eps-ball and in [0, 1], accuracy does
not rise with eps, a huge eps drives accuracy to ~0, one-step FGSM is not stronger than iterative PGD, and
black-box Square is not stronger than the strongest white-box attack on record for the same images -- the checks'
own PGD/APGD-CE, and the evaluation's other white-box attacks and AutoAttack's white-box stages where they ran
(``whitebox``). With an AutoAttack result, its own Square stage must also find (almost) nothing its white-box
stages missed: the reference's check ``check_square_sr`` (fra31/auto-attack ``autoattack/checks.py``; alpha 0.002
of accuracy, 0.2 points here). Each violation names its likely cause; a degenerate model (predictions collapsed
onto one or two classes, or clean accuracy at chance) is named as such, and the gradient-masking checks, which it
would fail for that reason, are skipped.

Square beating cross-entropy PGD/APGD-CE alone does not show gradient masking: on weakly robust models a margin
loss often goes further than cross-entropy, and AutoAttack's targeted DLR stage (APGD-T, white-box) then beats
Square too. So the black-box check compares with the strongest white-box number available, and names it.

The black-box check uses Square with 5000 queries by default -- the query budget of the standard AutoAttack
(``SquareAttack(n_queries=5000, p_init=.8)`` in github.com/fra31/auto-attack, ``autoattack/autoattack.py``):
with a few hundred queries Square rarely finds what masked gradients hide, so the check would pass a masked
model. ``square_queries`` lowers it for a quick look; the number used is recorded in the report's ``settings``
and ``summary()`` (the ``sanity`` column of ``results/eval.csv``), never left implicit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kdlab.config.units import format_eps, parse_eps
from kdlab.errors import KdlabError
from kdlab.robustness.accuracy import (
    AttackResult,
    Estimate,
    OnResult,
    Progress,
    _batches,
    _check_inputs,
    _model_device,
    _range_problem,
    evaluate_probed,
    probe_size,
)
from kdlab.robustness.attacks import AttackSpec, attack_def, attack_mode
from kdlab.robustness.seeded_pgd import DEFAULT_EPS

__all__ = ["SANITY_RULES", "SQUARE_QUERIES", "SQUARE_SR_ALPHA", "SanityReport", "SanityViolation", "sanity_check",
           "sanity_specs", "whitebox_accuracy"]

SQUARE_QUERIES = attack_def("square").steps
"""5000: Square's query budget in the standard AutoAttack (fra31/auto-attack ``autoattack/autoattack.py``)."""

SANITY_RULES = 2
"""The version of the checks' judgement, raised whenever a check judges differently: a cached final evaluation
(:mod:`kdlab.runs.final_eval`) made under other rules is judged again (its attacks are reused from the record).
2: the black-box check compares with the evaluation's other white-box attacks and AutoAttack's stages."""

SQUARE_SR_ALPHA = 0.2
"""Points of robust accuracy that AutoAttack's own Square stage may remove below its white-box stages before the
check flags it: the reference's ``check_square_sr(acc_dict, alpha=.002)`` on accuracies in [0, 1]
(fra31/auto-attack ``autoattack/checks.py``), in percent. Exactly 0.2 points is not flagged."""


@dataclass(frozen=True)
class SanityViolation:
    """One failed sanity check: ``check`` is a short id, ``message`` states the evidence and the likely cause."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}"


class SanityReport(list):
    """The violations found (a list of :class:`SanityViolation`; empty means every check passed), with the
    settings the checks ran under and the :class:`~kdlab.robustness.accuracy.AttackResult` of each attack they ran.

    ``settings`` holds eps, n, seed, ``pgd_steps``, ``apgd_steps``, ``square_queries`` and ``whitebox`` (the other
    white-box results the black-box check compared with, by label); :meth:`summary` is the one-line text stored in
    the ``sanity`` column of an evaluation row, so the budget and the comparison are always on record.
    """

    def __init__(self, violations: Sequence[SanityViolation], settings: dict[str, object],
                 results: Sequence[AttackResult] = ()):
        super().__init__(violations)
        self.settings = dict(settings)
        self.results = list(results)

    @property
    def square_queries(self) -> int:
        return int(self.settings["square_queries"])

    def settings_text(self) -> str:
        s = self.settings
        also = f"; also compared with {', '.join(s['whitebox'])}" if s.get("whitebox") else ""
        return (f"eps {format_eps(s['eps'])}, n {s['n']}, seed {s['seed']}: pgd {s['pgd_steps']} steps, "
                f"apgd-ce {s['apgd_steps']} steps, square {s['square_queries']} queries{also}")

    def summary(self) -> str:
        """``"ok (eps 8/255, n 1000, seed 0: pgd 10 steps, apgd-ce 20 steps, square 5000 queries)"`` (with
        ``"; also compared with pgd-20, autoattack"`` when other white-box results were given), or the violations
        joined by ``" | "`` followed by the same settings."""
        verdict = " | ".join(str(v) for v in self) if self else "ok"
        return f"{verdict} ({self.settings_text()})"


def _determinism_problem(model: nn.Module, images: Tensor, batch_size: int, device: torch.device) -> str | None:
    with attack_mode(model) as net, torch.no_grad():
        flips, max_change = 0, 0.0
        for start, end in _batches(images.shape[0], batch_size):
            x = images[start:end].to(device)
            a, b = net(x), net(x)
            flips += int((a.argmax(1) != b.argmax(1)).sum())
            scale = float(a.abs().max()) + 1e-12
            max_change = max(max_change, float((a - b).abs().max()) / scale)
    if flips or max_change > 1e-4:
        return (f"two clean passes in eval mode disagree ({flips} of {images.shape[0]} predictions flip, relative "
                f"logit change {max_change:.2g}): the model is random at test time -- dropout/BatchNorm forced "
                "into train mode inside forward, or a randomized defense; make forward deterministic or "
                "evaluate with EOT")
    return None


def whitebox_accuracy(result: AttackResult) -> tuple[str, float] | None:
    """``(name, accuracy)``: the robust accuracy white-box attacks left in ``result`` -- a white-box attack's own
    (``"pgd-20"``), or an ensemble's after its white-box stages (``"autoattack before square"``: the cumulative
    accuracy of its last stage before Square, which is what the reference's ``check_square_sr`` compares with);
    ``None`` for the clean pass, a black-box attack, or an ensemble whose stages are not on record."""
    kind = attack_def(result.attack).kind
    if kind == "white-box":
        return (f"{result.attack}-{result.steps}" if result.steps > 1 else result.attack), result.accuracy
    stages = [value for name, value in result.components.items() if name not in ("clean", "square")]
    if kind == "ensemble" and stages:
        return f"{result.attack} before square", min(stages)
    return None


def _square_stage_problem(result: AttackResult) -> str | None:
    """The reference's ``check_square_sr`` on an ensemble's recorded stages (fra31/auto-attack
    ``autoattack/checks.py``): its Square stage must not lower the accuracy by more than :data:`SQUARE_SR_ALPHA`."""
    stages = result.components
    if "square" not in stages or len(stages) <= 2:
        return None
    before = min(value for name, value in stages.items() if name != "square")
    if stages["square"] < before - SQUARE_SR_ALPHA - 1e-9:
        return (f"{result.attack}'s own Square stage lowers the robust accuracy its white-box stages left from "
                f"{before:.2f}% to {stages['square']:.2f}% at eps={format_eps(result.eps)}: the white-box attacks "
                "miss points a black-box attack finds, so the evaluation is unreliable -- gradient masking; run "
                "Square with more queries and restarts, or an adaptive attack (the reference's check_square_sr)")
    return None


def sanity_specs(eps: float = DEFAULT_EPS, eps_factors: Sequence[float] = (0.5, 1.0, 2.0), large_eps: float = 0.5,
                 pgd_steps: int = 10, apgd_steps: int = 20, square_queries: int = SQUARE_QUERIES,
                 seed: int = 0) -> list[AttackSpec]:
    """The attacks the sanity checks run, in order: PGD at eps 0, the ``eps_factors`` x eps, eps and
    ``large_eps`` (ascending), then FGSM, APGD-CE and Square at eps."""
    eps, large_eps = parse_eps(eps), parse_eps(large_eps)
    pgd_eps = sorted({0.0, *(float(f) * eps for f in eps_factors), float(eps), float(large_eps)})
    return [*(AttackSpec("pgd", eps=e, steps=pgd_steps, seed=seed) for e in pgd_eps),
            AttackSpec("fgsm", eps=eps, seed=seed),
            AttackSpec("apgd-ce", eps=eps, steps=apgd_steps, seed=seed),
            AttackSpec("square", eps=eps, steps=square_queries, seed=seed)]


def sanity_check(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float = DEFAULT_EPS,
    *,
    eps_factors: Sequence[float] = (0.5, 1.0, 2.0),
    large_eps: float = 0.5,
    large_eps_max_accuracy: float = 5.0,
    pgd_steps: int = 10,
    apgd_steps: int = 20,
    square_queries: int = SQUARE_QUERIES,
    tolerance: float = 1.0,
    bound_tolerance: float = 1e-5,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress | None = None,
    on_result: OnResult | None = None,
    recorded: Callable[[AttackSpec], AttackResult | None] | None = None,
    on_estimate: Estimate | None = None,
    whitebox: Sequence[AttackResult] = (),
) -> SanityReport:
    """Run the sanity checks and return a :class:`SanityReport` (a list of violations; ``[]`` means all passed).

    Runs PGD (``pgd_steps``) at eps 0, ``eps_factors`` x eps and ``large_eps``; FGSM, APGD-CE (``apgd_steps``)
    and Square (``square_queries``, default 5000 as in the standard AutoAttack) at ``eps``. Accuracy comparisons
    allow ``tolerance`` points, and at least one image. Adversarial images must lie within eps
    (+``bound_tolerance``) of the originals and in [0, 1].

    ``on_result`` gets each check's attack result as soon as it is done (to record it at once); ``recorded(spec)``
    returns a result already on record for one of them (:func:`~kdlab.robustness.accuracy.recorded_result`), which
    is judged instead of attacking again; ``on_estimate`` (``"sanity"``, probe images, seconds, n) is told how long
    the first images took, before the rest run (:func:`~kdlab.robustness.accuracy.evaluate_probed`).

    ``whitebox``: results of the evaluation's other attacks on the same images at ``eps`` (e.g. PGD-20, CW and
    AutoAttack). The black-box check compares Square with the strongest white-box number among them and the
    checks' own (:func:`whitebox_accuracy`), and an AutoAttack result's own Square stage is checked as the
    reference does (``square-improves-autoattack``). A result on other images (another n) or eps is refused.
    """
    _check_inputs(images, labels, batch_size)
    eps, large_eps = parse_eps(eps), parse_eps(large_eps)
    n = images.shape[0]
    for other in whitebox:
        if other.n != n or abs(other.eps - eps) > 1e-12:
            raise KdlabError(f"whitebox result {other.label} is on n {other.n} at eps {format_eps(other.eps)}, the "
                             f"sanity checks on n {n} at eps {format_eps(eps)}: pass results on the same images")
    extra = [(result, whitebox_accuracy(result)) for result in whitebox]
    extra = [(result, found) for result, found in extra if found is not None]
    settings = {"eps": eps, "n": n, "seed": seed, "pgd_steps": pgd_steps, "apgd_steps": apgd_steps,
                "square_queries": square_queries,
                "whitebox": [result.attack if result.components else name for result, (name, _) in extra]}
    problem = _range_problem(images)
    if problem:
        return SanityReport([SanityViolation("input-range", problem)], settings)
    device = _model_device(model, images)
    violations: list[SanityViolation] = []
    problem = _determinism_problem(model, images, batch_size, device)
    if problem:
        violations.append(SanityViolation("deterministic", problem))

    tol = max(tolerance, 100.0 / n)
    pgd_eps = sorted({0.0, *(float(f) * eps for f in eps_factors), float(eps), float(large_eps)})
    specs = sanity_specs(eps, eps_factors, large_eps, pgd_steps, apgd_steps, square_queries, seed)
    known = [recorded(spec) if recorded is not None else None for spec in specs]
    todo = [spec for spec, result in zip(specs, known) if result is None]

    def done(result: AttackResult) -> None:
        if on_result is not None and result.attack != "clean":
            on_result(result)

    # the clean pass (cheap) always runs: the clean accuracy and the collapse check are judged on it
    fresh = iter(evaluate_probed(model, images, labels, [AttackSpec("clean", seed=seed), *todo], batch_size,
                                 progress, probe=probe_size(n, batch_size) if on_estimate is not None and todo else 0,
                                 on_estimate=on_estimate or (lambda *_: None), what="sanity", on_result=done))
    clean_result = next(fresh)
    results = [result if result is not None else next(fresh) for result in known]
    pgd = {r.eps: r for r in results if r.attack == "pgd"}
    other = {r.attack: r for r in results if r.attack != "pgd"}
    clean = clean_result.clean_accuracy

    # recorded accuracies carry 4 decimals; two different accuracies on n images differ by 100/n
    if abs(pgd[0.0].accuracy - clean) > 5e-5:
        violations.append(SanityViolation(
            "eps0-equals-clean",
            f"PGD at eps=0 gives {pgd[0.0].accuracy:.2f}% but the clean accuracy is {clean:.2f}%: unperturbed "
            "inputs are classified differently -- the model is stochastic (dropout/BatchNorm in train mode) or "
            "the attack moves the images although eps=0"))

    for r in results:
        if r.max_perturbation > r.eps + bound_tolerance or r.min_value < -bound_tolerance \
                or r.max_value > 1 + bound_tolerance:
            violations.append(SanityViolation(
                "within-eps-and-range",
                f"{r.label} returned images up to {r.max_perturbation * 255:.3f}/255 from the originals (eps "
                f"{r.eps * 255:.3f}/255) with values in [{r.min_value:.4f}, {r.max_value:.4f}]: the attack "
                "breaks the threat model -- eps in the wrong units, or images not in [0, 1] (wrong "
                "normalisation)"))

    if clean_result.collapsed:
        # A degenerate model defeats every attack-based check below, and each would blame gradient masking.
        violations.append(SanityViolation(
            "collapsed",
            f"the model is degenerate: {clean_result.collapsed}; robust accuracy is meaningless (an attack "
            "cannot move predictions that ignore the input), not a sign of gradient masking -- train it "
            "longer or check the labels, learning rate and normalisation; the gradient-masking checks were "
            "skipped"))
        return SanityReport(violations, settings, results)

    ordered = [pgd[e] for e in pgd_eps]
    for lo, hi in itertools.pairwise(ordered):
        if hi.accuracy > lo.accuracy + tol:
            violations.append(SanityViolation(
                "monotone-in-eps",
                f"PGD accuracy rises from {lo.accuracy:.2f}% at eps={format_eps(lo.eps)} to {hi.accuracy:.2f}% "
                f"at eps={format_eps(hi.eps)}: a larger budget cannot help the model -- gradient masking "
                "(shattered or vanishing gradients), a stochastic model, or a step size unsuited to the eps"))

    big = pgd[float(large_eps)]
    if big.accuracy > large_eps_max_accuracy:
        violations.append(SanityViolation(
            "large-eps-breaks-all",
            f"PGD at eps={format_eps(big.eps)} still leaves {big.accuracy:.2f}% accuracy (expected about 0, at "
            f"most {large_eps_max_accuracy:.1f}%): the gradients do not lead anywhere -- gradient masking "
            "(a non-differentiable or quantising layer, saturated logits), or the attacked inputs are not what "
            "the model sees (normalisation applied outside the model, model in train mode)"))

    at_eps = pgd[float(eps)]
    fgsm = other["fgsm"]
    if fgsm.accuracy < at_eps.accuracy - tol:
        violations.append(SanityViolation(
            "fgsm-not-stronger-than-pgd",
            f"one-step FGSM ({fgsm.accuracy:.2f}%) beats {at_eps.steps}-step PGD ({at_eps.accuracy:.2f}%) at "
            f"eps={format_eps(eps)}: the iterative attack is being misled -- gradient masking (a locally "
            "flat or highly curved loss) or a PGD step size / step count too small"))

    square = other["square"]
    compared = [whitebox_accuracy(at_eps), whitebox_accuracy(other["apgd-ce"]), *(found for _, found in extra)]
    strongest, white = min(compared, key=lambda found: found[1])
    if square.accuracy < white - tol:
        ensemble = any(result.components for result, _ in extra)
        why = ("gradient masking, so the white-box numbers overstate robustness; use an adaptive attack" if ensemble
               else "gradient masking, or a cross-entropy loss that is a poor guide on this model, so these "
               "white-box numbers overstate robustness; run AutoAttack (--attack autoattack: its targeted DLR "
               "stage is compared too) or an adaptive attack")
        violations.append(SanityViolation(
            "blackbox-not-stronger-than-whitebox",
            f"black-box Square with {square.steps} queries ({square.accuracy:.2f}%) beats the strongest white-box "
            f"attack on record, {strongest} ({white:.2f}%), at eps={format_eps(eps)}: the gradients mislead the "
            f"attacks -- {why}"))
    for result, _ in extra:
        problem = _square_stage_problem(result)
        if problem:
            violations.append(SanityViolation("square-improves-autoattack", problem))
    return SanityReport(violations, settings, results)
