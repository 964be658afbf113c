"""Model selection: which epoch's weights become ``best.pt`` -- the one owner of the best-checkpoint rule.

``train.select`` names the rule; the recipe only checks its names (``auto``, ``pgd``, ``clean``, ``last``:
:class:`kdlab.config.sections.TrainSpec`) and refuses a metric without a validation split or for the wrong
task. What the names mean lives here:

* the metric (:func:`selection_metric`): an explicit ``train.select`` is honoured; ``auto`` is AP50 for
  detection, PGD accuracy for adversarial training and for (robust) distillation, clean accuracy for standard
  training. Rice et al. (robust_overfitting/train_cifar.py) early-stop adversarial training on PGD-10 accuracy
  because clean accuracy keeps rising while robust accuracy falls (robust overfitting; with FGSM-RS,
  catastrophic overfitting); a detector selects on AP50, the cheaper, less noisy figure on small validation sets;
* whether epochs are validated at all (:func:`selects_on_validation`): only with a validation split and a
  metric (not ``last``);
* how epochs compare (:func:`epoch_score`, :func:`improves`): on the metric measured on the validation split,
  or, without validation, on the epoch number, so the latest epoch is kept; ties go to the later epoch, and the
  test split never chooses. The engine (:func:`kdlab.train.engine.fit`) exports ``best.pt`` whenever an epoch
  improves on the best so far;
* what a run records of it (:func:`recorded_select`): the ``select`` of its summary and table rows.
"""

from __future__ import annotations

from typing import Any

from kdlab.errors import KdlabError

LAST = "last"  # no metric: the latest epoch is kept


def selection_metric(recipe: Any) -> str:
    """The validation metric that chooses best.pt (``train.select`` with ``auto`` resolved), or ``last``."""
    if recipe.train.select != "auto":
        return recipe.train.select
    if recipe.task == "detection":
        return "AP50"
    robust = recipe.train.adversarial.method != "none" or recipe.is_distillation
    return "pgd" if robust else "clean"


def selects_on_validation(recipe: Any, has_validation: bool) -> bool:
    """Whether every epoch is validated to choose best.pt: a validation split and a metric (not ``last``)."""
    return has_validation and selection_metric(recipe) != LAST


def epoch_score(select: str, measured: dict[str, float] | None, epoch: int) -> float:
    """The number an epoch is compared on: ``measured[select]`` (its validation), or without validation
    (``measured`` None) the epoch itself, so the latest epoch is "best"."""
    if measured is None:
        return float(epoch)
    if select not in measured:
        raise KdlabError(f"model selection on '{select}' but validation measured only {sorted(measured)}")
    return measured[select]


def improves(score: float, best_score: float) -> bool:
    """Whether an epoch replaces the best so far: ties go to the later epoch."""
    return score >= best_score


def recorded_select(recipe: Any, validated: bool) -> str:
    """The ``select`` a run records: its metric when its epochs were validated, else ``last``."""
    return selection_metric(recipe) if validated else LAST
