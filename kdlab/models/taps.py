"""Feature taps: read intermediate outputs through forward hooks, without rewriting the model.

    with FeatureTaps(student, [2, 3, "net.stage3"]) as taps:
        logits = student(x)
    f2 = taps.features[2]

Keys are block indices (``int``, numbered by ``model.blocks()``: 1 = stem, 2.. = stages) or module paths
(``str``, as accepted by ``model.get_submodule``). A string of digits ("2") is read as a block index when
the model has ``blocks()`` (an :class:`~kdlab.models.registry.ImageClassifier`), else as a path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from typing_extensions import Self

from kdlab.errors import KdlabError

__all__ = ["FeatureTaps", "TapKey", "block_name", "describe_model_blocks", "resolve_tap"]

TapKey = int | str


def _model_name(model: nn.Module) -> str:
    return str(getattr(model, "arch", None) or type(model).__name__)


def describe_model_blocks(model: nn.Module) -> str:
    """'model resnet_small has blocks 1 (net.stem), 2 (net.stage1), ...' (for error messages)."""
    name = _model_name(model)
    blocks_fn = getattr(model, "blocks", None)
    if blocks_fn is None:
        return f"model {name} has no numbered blocks; tap it by module path"
    try:
        blocks = blocks_fn()
    except KdlabError:
        return f"model {name} has no numbered blocks; tap it by module path"
    listing = ", ".join(f"{b.index} ({b.path})" for b in blocks)
    return f"model {name} has blocks {listing}"


def _normalise_key(model: nn.Module, key: TapKey) -> TapKey:
    """A digit string ("2", e.g. from a command line) is a block index for models that number their blocks."""
    if isinstance(key, str) and key.strip().isdigit() and hasattr(model, "blocks"):
        return int(key.strip())
    return key


def resolve_tap(model: nn.Module, key: TapKey) -> str:
    """Return the module path that ``key`` names in ``model``; raise :class:`KdlabError` if it names nothing."""
    key = _normalise_key(model, key)
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise KdlabError(f"feature tap {key!r} must be a block index (int) or a module path (str); "
                         f"{describe_model_blocks(model)}")
    if isinstance(key, int):
        blocks_fn = getattr(model, "blocks", None)
        if blocks_fn is None:
            raise KdlabError(f"cannot tap block {key}: {describe_model_blocks(model)}")
        for block in blocks_fn():
            if block.index == key:
                return block.path
        raise KdlabError(f"unknown block {key}: {describe_model_blocks(model)}")
    path = key.strip()
    if not path:
        raise KdlabError(f"feature tap path is empty: {describe_model_blocks(model)}")
    try:
        model.get_submodule(path)
    except AttributeError:
        raise KdlabError(f"unknown module path '{path}': {describe_model_blocks(model)}") from None
    return path


def block_name(model: nn.Module, key: TapKey) -> str:
    """How loss terms name a tap: the block index when ``key`` is or resolves to a numbered block
    (``net.stage2`` -> ``"3"``), else the key itself (a module path inside a block)."""
    key = _normalise_key(model, key)
    if isinstance(key, str):
        try:
            return str(next(block.index for block in model.blocks() if block.path == key.strip()))
        except (AttributeError, KdlabError, StopIteration):
            return key
    return str(key)


class FeatureTaps:
    """Context manager that records the outputs of the tapped modules during forward passes.

    ``features[key]`` holds the output of the last forward for each requested key (keys as given, except that
    digit strings become block indices on models with ``blocks()``); ``paths[key]`` is the resolved module
    path. All keys are resolved before any hook is registered, and every hook is removed on exit, also when
    the body raises.
    ``detach=True`` stores ``output.detach()`` (use for teacher features). ``inputs=True`` records each tapped
    module's (first) input instead of its output: e.g. the penultimate features, the input of the final linear layer.
    """

    def __init__(self, model: nn.Module, keys: Iterable[TapKey], detach: bool = False, inputs: bool = False):
        self.model = model
        self.detach = detach
        self.inputs = inputs
        self.keys: list[TapKey] = [_normalise_key(model, k) for k in keys]
        self.paths: dict[TapKey, str] = {}
        self.features: dict[TapKey, Any] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _make_hook(self, key: TapKey):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self.inputs:
                output = inputs[0]
            if self.detach:
                output = _detach(output)
            self.features[key] = output

        return hook

    def open(self) -> Self:
        if self._handles:
            raise RuntimeError("FeatureTaps is already open")
        paths = {key: resolve_tap(self.model, key) for key in self.keys}
        self.paths = paths
        self.features = {}
        try:
            for key, path in paths.items():
                module = self.model.get_submodule(path)
                self._handles.append(module.register_forward_hook(self._make_hook(key)))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Drop stored features (frees the activations they keep alive)."""
        self.features = {}

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __getitem__(self, key: TapKey) -> Any:
        return self.features[_normalise_key(self.model, key)]


def _detach(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, (tuple, list)):
        return type(output)(_detach(o) for o in output)
    if isinstance(output, dict):
        return {k: _detach(v) for k, v in output.items()}
    return output
