"""L-infinity adversarial attacks for robustness evaluation: torchattacks wiring and the standard AutoAttack.

Every attack is built from a registry (``ATTACKS``: name -> :class:`AttackDef`), configured by an
:class:`AttackSpec` (name, eps, alpha, steps, restarts, seed) and run through :func:`run_attack`, which makes
the numbers trustworthy whatever the caller's state:

- the model is wrapped by :class:`LogitsModel` (logits only, fp32) and put in eval mode for the attack, its
  previous per-module train/eval flags restored afterwards (:func:`attack_mode`);
- attacks run under ``torch.enable_grad()`` (and outside inference mode / autocast), so calling them from
  ``torch.no_grad()`` code still attacks; parameters stop requiring grad meanwhile, so no ``.grad`` is left on
  the model; results are detached fp32 tensors;
- randomness is seeded: torchattacks' own ``seed`` arguments, ``torch.manual_seed(seed)`` before every batch
  (inside ``torch.random.fork_rng``, so the caller's RNG stream is untouched), and -- for ``pgd`` and ``cw`` --
  a random start drawn per *sample* from ``(seed, restart, sample index)``, so the result does not depend on
  the batch size or the device.

Defaults (images in [0, 1]; ``eps`` defaults to 8/255 for every attack; C = number of classes)

==========  =========  ==================  =====  ========  ====================================================
name        kind       alpha (step)        steps  restarts  notes
==========  =========  ==================  =====  ========  ====================================================
clean       none       --                  0      0         no attack: the clean predictions
fgsm        white-box  eps (at most eps)   1      1         torchattacks.FGSM (one signed-gradient step of CE)
pgd         white-box  eps/4 (2/255)       20     1         torchattacks.PGD loop on CE; uniform random start
cw          white-box  eps/4 (2/255)       30     1         same loop on the CW margin (CW-inf), kappa = 0
apgd-ce     white-box  adaptive (2*eps)    100    1         torchattacks.APGD, loss 'ce', rho 0.75
apgd-dlr    white-box  adaptive (2*eps)    100    1         torchattacks.APGD, loss 'dlr', rho 0.75 (C >= 3)
apgd-t      white-box  adaptive (2*eps)    100    1         torchattacks.APGDT, DLR-targeted, min(9, C-1) targets
                                                            x 100 iterations, rho 0.75 (C >= 4)
fab-t       white-box  --                  100    1         torchattacks.FAB multi-targeted, min(9, C-1) targets
square      black-box  --                  5000   1         torchattacks.Square, margin loss, p_init 0.8,
                                                            resc_schedule=False; ``steps`` = queries
autoattack  ensemble   --                  100    1         standard AutoAttack (below)
aa-fast     ensemble   --                  10     1         torchattacks.AutoAttack(version='standard'): APGD,
                                                            APGD-T (C-1 targets), FAB-T at torchattacks' 10
                                                            steps, Square 5000 queries with resc_schedule=True
==========  =========  ==================  =====  ========  ====================================================

``autoattack`` is the reference protocol (Croce & Hein, ICML 2020; ``AutoAttack(version='standard')`` of
github.com/fra31/auto-attack, checked against ``pyautoattack.autoattack._set_version('standard')``), built from
torchattacks components with the reference settings: APGD-CE (100 iterations, 1 restart, rho 0.75), APGD-T
(9 target classes x 100 iterations, 1 restart, rho 0.75), FAB-T (9 target classes x 100 iterations, 1 restart),
Square (5000 queries, p_init 0.8, 1 restart, resc_schedule=False); with C < 10 classes the targeted attacks use
C - 1 targets. The components run in that order, each on the points still robust (clean-correct and not yet
broken), in batches of those points in index order -- exactly as the reference -- and a point counts as robust
only if it survives all of them. With the same seed and batch size the per-point results equal the reference's
(the components are seeded per batch like the reference; tests/robustness/test_attacks.py checks it against pyautoattack).
``aa-fast`` is torchattacks' own AutoAttack class; it runs 10x fewer iterations and a faster Square schedule, so
it usually reports a higher (weaker) robust accuracy, and it is never labelled 'autoattack'.

Batch-size independence holds for ``clean``, ``fgsm``, ``pgd`` and ``cw``; the APGD/FAB/Square family seeds each
batch (as the reference does), so it is reproducible for a fixed batch size.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torchattacks
from torch import Tensor, nn

from kdlab.config.units import EpsError, format_eps, parse_eps, parse_eps_list
from kdlab.errors import KdlabError, did_you_mean
from kdlab.robustness.seeded_pgd import DEFAULT_EPS, SeededPGD, start_noise
from kdlab.robustness.standing import strike

__all__ = [
    "ATTACKS",
    "AttackDef",
    "AttackSpec",
    "BatchAttack",
    "CompositeAttack",
    "EpsError",
    "LogitsModel",
    "SeededPGD",
    "attack_mode",
    "available_attacks",
    "build_attack",
    "format_eps",
    "parse_eps",
    "parse_eps_list",
    "precision_context",
    "run_attack",
    "start_noise",
]


# EpsError, parse_eps, parse_eps_list and format_eps live in kdlab.config.units (one parser for recipes and the CLI).

# --------------------------------------------------------------------------------------------------------------
# model wrapping and the safe calling context


def _first_logits(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, dict):
        if "logits" in out:
            return out["logits"]
        raise KdlabError("the model returned a dict without a 'logits' entry: return logits from forward")
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise KdlabError(f"the model returned {type(out).__name__}, not logits: make forward return a logits tensor")


class LogitsModel(nn.Module):
    """Wraps a classifier so that ``forward(x in [0, 1])`` returns fp32 logits only.

    Accepts models that return a tensor, a tuple/list whose first item is the logits, a dict with ``"logits"``
    or an object with a ``.logits`` attribute. Inputs are cast to fp32.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        logits = _first_logits(self.model(x.float()))
        if logits.dim() != 2:
            raise KdlabError(f"the model returned logits of shape {tuple(logits.shape)}; expected (batch, classes)")
        return logits.float()


def _unwrap(model: nn.Module) -> LogitsModel:
    return model if isinstance(model, LogitsModel) else LogitsModel(model)


@contextlib.contextmanager
def attack_mode(model: nn.Module, deterministic: bool = True) -> Iterator[LogitsModel]:
    """Context for attacking ``model``: eval mode, no parameter grads, deterministic cuDNN; all restored after.

    Yields the :class:`LogitsModel` wrapper to attack. The train/eval flag of every submodule and the
    ``requires_grad`` of every parameter are restored exactly on exit, also after an exception.
    """
    wrapped = _unwrap(model)
    modes = [(m, m.training) for m in wrapped.modules()]
    grads = [(p, p.requires_grad) for p in wrapped.parameters()]
    cudnn_flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        wrapped.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        if deterministic:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        yield wrapped
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in grads:
            p.requires_grad_(flag)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_flags


# --------------------------------------------------------------------------------------------------------------
# specs and the registry


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration. ``None`` fields take the registry default (see the module docstring).

    ``alpha`` is the step size of ``pgd``/``cw`` (default eps/4) and of ``fgsm`` (eps); for the adaptive and
    black-box attacks it is not used. For ``square``, ``steps`` is the number of queries.
    """

    name: str
    eps: float = DEFAULT_EPS
    alpha: float | None = None
    steps: int | None = None
    restarts: int | None = None
    seed: int = 0

    def resolved(self) -> AttackSpec:
        """A copy with every default filled in and every field validated (``KdlabError`` on a bad value)."""
        entry = attack_def(self.name)
        if self.name == "autoattack" and (self.steps not in (None, entry.steps) or self.restarts not in (None, 1)):
            # a weakened ensemble must not be reported under the standard protocol's name
            raise KdlabError(f"autoattack is the standard protocol ({entry.steps} iterations, 1 restart): steps and "
                             "restarts cannot change it; evaluate it without --steps/--restarts, or use aa-fast or "
                             "apgd-ce/apgd-t with --steps for a cheaper attack")
        eps = 0.0 if entry.kind == "none" else parse_eps(self.eps)
        alpha = self.alpha if self.alpha is not None else entry.default_alpha(eps)
        steps = entry.steps if self.steps is None else self.steps
        restarts = entry.restarts if self.restarts is None else self.restarts
        if alpha is not None and (not math.isfinite(alpha) or alpha < 0):
            raise KdlabError(f"{self.name}: step size alpha={alpha} must be >= 0: give e.g. alpha=2/255")
        if not isinstance(steps, int) or steps < entry.min_steps:
            raise KdlabError(f"{self.name}: steps={steps!r} must be an integer >= {entry.min_steps}")
        if not isinstance(restarts, int) or restarts < entry.min_steps:
            raise KdlabError(f"{self.name}: restarts={restarts!r} must be an integer >= {entry.min_steps}")
        if not isinstance(self.seed, int):
            raise KdlabError(f"{self.name}: seed={self.seed!r} must be an integer")
        return replace(self, eps=eps, alpha=alpha, steps=steps, restarts=restarts)

    @property
    def label(self) -> str:
        """``"pgd@8/255"``: how progress and tables name this configuration."""
        return f"{self.name}@{format_eps(self.eps)}"


class BatchAttack:
    """Callable ``(images, labels, indices) -> adversarial images`` for one batch (indices = sample ids)."""

    def __call__(self, images: Tensor, labels: Tensor, indices: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class _Identity(BatchAttack):
    def __call__(self, images: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        return images


class _Torchattacks(BatchAttack):
    """Adapts a ``torchattacks.Attack`` (which ignores sample indices)."""

    def __init__(self, attack: torchattacks.Attack):
        self.attack = attack

    def __call__(self, images: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        return self.attack(images, labels)


class _IndexedTorchattacks(_Torchattacks):
    """Adapts a torchattacks attack whose ``forward`` takes the sample indices (:class:`SeededPGD`)."""

    def __call__(self, images: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        return self.attack(images, labels, indices)


@dataclass
class CompositeAttack(BatchAttack):
    """An ensemble run component by component on the still-robust points (worst case per point).

    The evaluation loop (:func:`kdlab.robustness.accuracy.evaluate_robustness`) runs each component over the points that
    survived the previous ones, in index order and batches -- like the reference AutoAttack -- and reports the
    robust accuracy after each component. Called directly on one batch, it does the same within that batch.
    """

    components: list[tuple[str, BatchAttack]] = field(default_factory=list)
    model: nn.Module | None = None

    def __call__(self, images: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
        adv = images.clone()
        with torch.no_grad():
            alive = self.model(images).argmax(1) == labels
        for _, attack in self.components:
            strike(lambda out: self.model(out).argmax(1),
                   lambda idx, attack=attack: attack(images[idx], labels[idx], indices[idx]),
                   alive.nonzero().flatten(), labels, alive, adv)
        return adv


Builder = Callable[[LogitsModel, AttackSpec, int], BatchAttack]


@dataclass(frozen=True)
class AttackDef:
    """A registry entry: how to build the attack and its defaults."""

    build: Builder
    kind: str
    steps: int
    restarts: int
    alpha_rule: str  # "eps/4", "eps" or "none"
    description: str
    min_classes: int = 2
    min_steps: int = 1

    def default_alpha(self, eps: float) -> float | None:
        return _ALPHA_RULES[self.alpha_rule](eps)


_ALPHA_RULES: dict[str, Callable[[float], float | None]] = {
    "eps/4": lambda eps: eps / 4,
    "eps": lambda eps: eps,
    "none": lambda eps: None,
}


def _targets(num_classes: int) -> int:
    return min(9, num_classes - 1)


def _build_clean(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    return _Identity()


def _build_fgsm(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    # the single step is alpha (default eps), never more than eps
    return _Torchattacks(torchattacks.FGSM(model, eps=min(spec.alpha, spec.eps)))


def _build_pgd(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    return _IndexedTorchattacks(
        SeededPGD(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, restarts=spec.restarts,
                  seed=spec.seed, loss="ce")
    )


def _build_cw(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    return _IndexedTorchattacks(
        SeededPGD(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, restarts=spec.restarts,
                  seed=spec.seed, loss="cw")
    )


def _apgd(model: LogitsModel, spec: AttackSpec, loss: str) -> torchattacks.APGD:
    return torchattacks.APGD(model, norm="Linf", eps=spec.eps, steps=spec.steps, n_restarts=spec.restarts,
                             seed=spec.seed, loss=loss, eot_iter=1, rho=0.75, verbose=False)


def _apgd_t(model: LogitsModel, spec: AttackSpec, num_classes: int) -> torchattacks.APGDT:
    attack = torchattacks.APGDT(model, norm="Linf", eps=spec.eps, steps=spec.steps, n_restarts=spec.restarts,
                                seed=spec.seed, eot_iter=1, rho=0.75, verbose=False, n_classes=num_classes)
    attack.n_target_classes = _targets(num_classes)
    return attack


def _fab_t(model: LogitsModel, spec: AttackSpec, num_classes: int) -> torchattacks.FAB:
    attack = torchattacks.FAB(model, norm="Linf", eps=spec.eps, steps=spec.steps, n_restarts=spec.restarts,
                              seed=spec.seed, multi_targeted=True, n_classes=num_classes, verbose=False)
    attack.n_target_classes = _targets(num_classes)
    return attack


def _square(model: LogitsModel, spec: AttackSpec, queries: int) -> torchattacks.Square:
    return torchattacks.Square(model, norm="Linf", eps=spec.eps, n_queries=queries, n_restarts=spec.restarts,
                               p_init=0.8, loss="margin", resc_schedule=False, seed=spec.seed, verbose=False)


def _build_apgd_ce(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    return _Torchattacks(_apgd(model, spec, "ce"))


def _build_apgd_dlr(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    return _Torchattacks(_apgd(model, spec, "dlr"))


def _build_apgd_t(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    return _Torchattacks(_apgd_t(model, spec, num_classes))


def _build_fab_t(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    return _Torchattacks(_fab_t(model, spec, num_classes))


def _build_square(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    return _Torchattacks(_square(model, spec, queries=spec.steps))


def _build_autoattack(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    return CompositeAttack(
        components=[
            ("apgd-ce", _Torchattacks(_apgd(model, spec, "ce"))),
            ("apgd-t", _Torchattacks(_apgd_t(model, spec, num_classes))),
            ("fab-t", _Torchattacks(_fab_t(model, spec, num_classes))),
            ("square", _Torchattacks(_square(model, replace(spec, restarts=1), queries=5000))),
        ],
        model=model,
    )


def _build_aa_fast(model: LogitsModel, spec: AttackSpec, num_classes: int) -> BatchAttack:
    return _Torchattacks(
        torchattacks.AutoAttack(model, norm="Linf", eps=spec.eps, version="standard", n_classes=num_classes,
                                seed=spec.seed, verbose=False)
    )


ATTACKS: dict[str, AttackDef] = {
    "clean": AttackDef(_build_clean, "none", 0, 0, "none", "no attack (clean accuracy)", min_steps=0),
    "fgsm": AttackDef(_build_fgsm, "white-box", 1, 1, "eps", "FGSM, one signed-gradient step on CE"),
    "pgd": AttackDef(_build_pgd, "white-box", 20, 1, "eps/4", "PGD on cross-entropy, random start"),
    "cw": AttackDef(_build_cw, "white-box", 30, 1, "eps/4", "PGD on the CW margin (CW-inf), random start"),
    "apgd-ce": AttackDef(_build_apgd_ce, "white-box", 100, 1, "none", "APGD on cross-entropy"),
    "apgd-dlr": AttackDef(_build_apgd_dlr, "white-box", 100, 1, "none", "APGD on the DLR loss", min_classes=3),
    "apgd-t": AttackDef(_build_apgd_t, "white-box", 100, 1, "none", "targeted APGD on DLR", min_classes=4),
    "fab-t": AttackDef(_build_fab_t, "white-box", 100, 1, "none", "targeted FAB"),
    "square": AttackDef(_build_square, "black-box", 5000, 1, "none", "Square attack (score-based black box)"),
    "autoattack": AttackDef(_build_autoattack, "ensemble", 100, 1, "none",
                            "standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square", min_classes=4),
    "aa-fast": AttackDef(_build_aa_fast, "ensemble", 10, 1, "none",
                         "torchattacks.AutoAttack (fewer iterations; not the standard protocol)", min_classes=4),
}


def available_attacks() -> list[str]:
    return list(ATTACKS)  # the same names, in the same order, as kdlab.config.names.ATTACKS (tests/config/test_names.py)


def attack_def(name: str) -> AttackDef:
    try:
        return ATTACKS[name]
    except KeyError:
        raise KdlabError(f"unknown attack {name!r}{did_you_mean(str(name), list(ATTACKS))}: choose one of "
                         f"{', '.join(ATTACKS)}") from None


def build_attack(model: nn.Module, spec: AttackSpec, num_classes: int) -> BatchAttack:
    """Build the attack for ``spec`` (resolved first) against ``model`` (wrapped in :class:`LogitsModel`)."""
    spec = spec.resolved()
    entry = attack_def(spec.name)
    if num_classes < entry.min_classes:
        raise KdlabError(f"attack {spec.name} needs at least {entry.min_classes} classes but the model has "
                         f"{num_classes}: use pgd, cw, apgd-ce or square instead")
    return entry.build(_unwrap(model), spec, num_classes)


# --------------------------------------------------------------------------------------------------------------
# the one safe way to call an attack on a batch


def precision_context(device: torch.device, precision: str = "fp32"):
    """The arithmetic of an evaluation (``eval.precision``): ``fp32`` switches any caller's autocast off (the
    reference protocol); ``bf16`` runs the model under bf16 autocast (inputs, perturbations and logits stay
    fp32; bf16 keeps fp32's exponent range, so input gradients do not underflow as they could in fp16)."""
    if precision not in ("fp32", "bf16"):
        raise KdlabError(f"evaluation precision '{precision}' is not supported: use fp32 or bf16")
    device_type = device.type if device.type in ("cuda", "cpu") else "cpu"
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def run_attack(attack: BatchAttack, images: Tensor, labels: Tensor, indices: Tensor | None = None,
               seed: int = 0, precision: str = "fp32") -> Tensor:
    """Run ``attack`` on one batch with gradients on, fp32 (or bf16 autocast, ``precision``), seeded; returns
    detached fp32 adversarial images.

    Call it inside :func:`attack_mode` (which puts the model in eval mode). Works from inside
    ``torch.no_grad()``/``torch.inference_mode()``; the caller's RNG state is restored afterwards.
    """
    if indices is None:
        indices = torch.arange(images.shape[0])
    devices = [images.device] if images.device.type == "cuda" else []
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.random.fork_rng(devices=devices))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(precision_context(images.device, precision))
        torch.manual_seed(seed)
        x = images.detach().clone().float()
        y = labels.detach().clone().long()
        adv = attack(x, y, indices.detach().clone().cpu())
    return adv.detach().float()
