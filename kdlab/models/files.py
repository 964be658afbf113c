"""Model files: a checkpoint that rebuilds its own network, and checkpoints kdlab did not write.

Every file loads with ``torch.load(..., weights_only=True)``: it holds only tensors, numbers,
strings, lists and dicts, never pickled code. A model checkpoint carries what is needed to
rebuild the network (task, architecture, options, class count, and a classifier's input normalisation
statistics under ``normalization``), so ``kdlab eval x.pt`` and ``teacher.checkpoint: x.pt`` need nothing else.
The generic helpers here (:func:`atomic_save`, :func:`safe_load`) also write and read the resumable training
state (``last.pt``, :mod:`kdlab.train.state`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.errors import KdlabError

MODEL_FORMAT = "kdlab-model/1"


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    """Write through a temporary file so a crash mid-save never leaves a torn checkpoint. Saved through a file
    object, not a path: torch.save names the zip's records after a path's stem (the random temporary name), so the
    same weights would give other bytes; through a file object they are ``archive/...`` and equal weights give an
    equal file (its digest, :func:`file_digest`, then identifies the weights: a retrained teacher is compared by
    it, :func:`kdlab.ablation.execute.refuse_another_teacher`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "wb") as stream:
        torch.save(payload, stream)
    os.replace(temporary, path)


def safe_load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise KdlabError(f"checkpoint '{path}' not found: check the path or train the model first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as error:
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise KdlabError(
            f"checkpoint '{path}' is corrupt or not a kdlab checkpoint ({reason}); retrain it or pick another file"
        ) from None
    if not isinstance(payload, dict):
        raise KdlabError(f"checkpoint '{path}' is not a kdlab checkpoint (expected a dict); retrain it")
    return payload


def save_model(path: Path, model: nn.Module, *, task: str, arch: str, options: dict, num_classes: int,
               classes: list[str] | None = None, extra: dict | None = None) -> None:
    atomic_save(
        {
            "format": MODEL_FORMAT,
            "task": task,
            "arch": arch,
            "options": dict(options),
            "num_classes": num_classes,
            "classes": list(classes or []),
            **_normalization(model),
            "state_dict": model.state_dict(),
            **(extra or {}),
        },
        path,
    )


def _normalization(model: nn.Module) -> dict[str, Any]:
    """``{"normalization": {"mean": [...], "std": [...]}}`` for a model that normalises its input, else ``{}``."""
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if not isinstance(mean, torch.Tensor) or not isinstance(std, torch.Tensor):
        return {}
    return {"normalization": {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}}


def load_model_state(model: nn.Module, state_dict: dict, source: str) -> None:
    """Load weights, turning shape or key mismatches into one readable line."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise KdlabError(
            f"checkpoint '{source}' does not fit the model (wrong architecture or class count): {detail[:200]}"
        ) from None


def load_model(path: str | Path, expected_classes: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a model checkpoint describes and load its weights (eval mode)."""
    payload = safe_load(path)
    if payload.get("format") != MODEL_FORMAT:
        raise KdlabError(
            f"'{path}' is not a kdlab model checkpoint (format {payload.get('format')!r}); "
            "pass a run's best.pt or a run directory"
        )
    if expected_classes is not None and payload["num_classes"] != expected_classes:
        raise KdlabError(
            f"checkpoint '{path}' predicts {payload['num_classes']} classes but the data has {expected_classes}: "
            "use a checkpoint trained on the same dataset"
        )
    from kdlab.models.factory import build_model

    options = dict(payload["options"])
    # The statistics it was trained with; a checkpoint without them predates them: the CIFAR-10 default.
    options.update(payload.get("normalization") or {})
    model = build_model(payload["task"], payload["arch"], payload["num_classes"], options)
    load_model_state(model, payload["state_dict"], str(path))
    model.eval()
    return model, payload


def resolve_model_path(target: str | Path) -> Path:
    """A run directory means its best.pt; a file is taken as it is."""
    target = Path(target)
    if target.is_dir():
        best = target / "best.pt"
        if not best.is_file():
            raise KdlabError(f"run directory '{target}' has no best.pt: the run has not finished an epoch yet")
        return best
    return target


# --------------------------------------------------------------------------- checkpoints kdlab did not write
TORCHVISION_PREFIX = "torchvision:"


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise KdlabError(f"checkpoint '{path}' not found: check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as error:
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise KdlabError(f"'{path}' cannot be read as a weights-only state dict ({reason}): save it with "
                         "torch.save(model.state_dict(), path)") from None


def external_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights in a checkpoint kdlab did not write: a plain ``state_dict``, or one under ``state_dict``,
    ``model`` or ``net`` (common training-script layouts); a DataParallel ``module.`` prefix is removed."""
    path = Path(path)
    payload = _torch_load(path)
    if isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT:
        raise KdlabError(f"'{path}' is a kdlab model checkpoint, which names its own architecture: "
                         "drop --arch")
    if isinstance(payload, dict):
        for key in ("state_dict", "model", "net"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload or not all(
            isinstance(v, torch.Tensor) for v in payload.values()):
        raise KdlabError(f"'{path}' holds no state dict (a mapping of parameter names to tensors): "
                         "save it with torch.save(model.state_dict(), path)")
    if all(key.startswith("module.") for key in payload):
        payload = {key.removeprefix("module."): value for key, value in payload.items()}
    return payload


def _classes_in(state: dict[str, torch.Tensor]) -> int | None:
    """The output count of the last 2-D weight (the classifier layer), or None."""
    matrices = [value for key, value in state.items() if key.endswith("weight") and value.ndim == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def load_external_model(path: str | Path, arch: str, *, num_classes: int | None, mean, std) -> nn.Module:
    """A plain state dict evaluated as architecture ``arch`` -- a kdlab name (``resnet_small``,
    ``preact_resnet18``, ``wrn-34-10``, default options) or ``torchvision:<name>`` -- wrapped in an
    :class:`~kdlab.models.registry.ImageClassifier` with ``mean``/``std``, so it takes [0, 1] images like
    every kdlab model. The class count is ``num_classes`` or read off the last linear layer. Eval mode."""
    from kdlab.models.registry import ImageClassifier, build_classifier

    state = external_state_dict(path)
    classes = num_classes or _classes_in(state)
    if classes is None:
        raise KdlabError(f"cannot tell how many classes '{path}' predicts: pass --num-classes N")
    if arch.startswith(TORCHVISION_PREFIX):
        import torchvision

        name = arch.removeprefix(TORCHVISION_PREFIX)
        try:
            net = torchvision.models.get_model(name, weights=None, num_classes=classes)
        except ValueError:
            raise KdlabError(f"--arch {arch}: torchvision has no model '{name}' (e.g. torchvision:resnet18, "
                             "torchvision:wide_resnet50_2)") from None
        model = ImageClassifier(net, mean=mean, std=std, arch=arch)
    else:
        model = build_classifier(arch, classes, mean=list(mean), std=list(std))
    if all(key.startswith("net.") or key in ("mean", "std") for key in state):  # a whole ImageClassifier's
        state = {"mean": model.mean, "std": model.std, **state}  # normalisation stored with it wins
        load_model_state(model, state, str(path))
    else:
        load_model_state(model.net, state, str(path))
    model.eval()
    return model


def file_digest(path: Path) -> str:
    """SHA-256 prefix (16 hex digits) of a file: the identity of a checkpoint in run keys and result rows."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
