"""The resumable training state: what the engine saves in ``last.pt`` after every epoch and reads back on resume.

A training state (:data:`STATE_FORMAT`) holds the method's weights (the student plus any connectors/adapters),
the optimizer, the learning-rate schedule, the gradient scaler's state (fp16), the torch RNG state, the history
of every epoch's metrics and the best epoch so far with its score. It is written atomically and read with
``weights_only=True`` (:func:`kdlab.models.files.atomic_save`, :func:`kdlab.models.files.safe_load`): only
tensors, numbers, strings, lists and dicts, never pickled code. Unlike a model file (``best.pt``,
:mod:`kdlab.models.files`) it cannot rebuild a network: it resumes the run that wrote it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.errors import KdlabError
from kdlab.models.files import atomic_save, safe_load
from kdlab.runtime.acceleration import StepPrecision

STATE_FORMAT = "kdlab-train-state/1"


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def save_state(path: Path, *, epoch: int, method: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, precision: StepPrecision,
               history: list[dict[str, Any]], best_score: float, best_epoch: int) -> None:
    """Write the state after ``epoch`` (atomically: a crash mid-save keeps the previous epoch's)."""
    state = {
        "format": STATE_FORMAT,
        "epoch": epoch,
        "method": method.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "history": history,
        "best_score": best_score,
        "best_epoch": best_epoch,
        **({"scaler": precision.state_dict()} if precision.scaler is not None else {}),
    }
    atomic_save(state, path)


def load_state(path: Path, method: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler,
               precision: StepPrecision) -> tuple[list[dict[str, Any]], float, int, int]:
    """Restore the method, optimizer, schedule, scaler and RNG from the state at ``path``; return the history,
    the best score and epoch so far, and the epoch to continue from."""
    state = safe_load(path)
    if state.get("format") != STATE_FORMAT:
        raise KdlabError(f"'{path}' is not a kdlab training state; remove it or pass --force")
    try:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise KdlabError(
            f"'{path}' does not match this recipe ({str(error).splitlines()[0][:120]}); pass --force to restart"
        ) from None
    precision.load_state_dict(state.get("scaler", {}))
    torch.set_rng_state(state["rng"]["torch"])
    return state["history"], state["best_score"], state["best_epoch"], state["epoch"] + 1
