"""How a training step is made fast on the device: mixed precision, channels-last memory, ``torch.compile``.

Three recipe options, each off by default because each changes floating-point results (so each enters the run
key when set, :meth:`kdlab.config.recipe.Recipe.key`):

* ``train.precision`` (``fp32`` | ``bf16`` | ``fp16``): the method's whole step (student, frozen teacher, the
  inner maximisation of adversarial methods) runs under :func:`torch.autocast` on the recipe's device; the
  backward pass and the optimizer step run outside it, on fp32 master weights (PyTorch's AMP recipe,
  https://pytorch.org/docs/stable/amp.html). ``fp16`` adds :class:`torch.amp.GradScaler` (dynamic loss
  scaling; its scale is saved in ``last.pt`` for exact resume). Note: the scaler reads its inf check back
  once per step (``GradScaler.step``), a host synchronisation ``bf16`` does not have; ``bf16`` (fp32's
  exponent range, no scaler) is the choice on GPUs that have it (compute capability >= 8.0). Both work on
  CPU (slowly; for tests). Inside the inner maximisation an fp16 objective is multiplied by a power of two
  before its gradient is taken (:func:`kdlab.robustness.training_attacks.pgd_maximise`), so small input gradients do not
  underflow to zero: the sign step is unchanged by a positive factor.
* ``train.channels_last``: the trained network, the frozen teacher and (classification) every input batch use
  :data:`torch.channels_last` memory (NHWC), which tensor cores prefer for convolutions
  (https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html). Off by default: convolutions on
  NHWC data take other kernels, whose sums run in another order, so results differ in the last bits.
* ``train.compile``: the trained network and the teacher are compiled in place (:meth:`torch.nn.Module.compile`,
  which keeps parameter names, so checkpoints and resume are unchanged); the method's own step (feature taps,
  inner maximisation) stays eager around them. Checked on CPU with supervised FGSM-RS, KD and MixACM (feature
  taps added per step: one graph per network, no recompilation). A compilation failure stops the run at its
  first step with one line (set ``train.compile: false``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from kdlab.errors import KdlabError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` on ``device``'s type in ``precision`` (bf16 / fp16); a no-op context for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def check_precision(device: torch.device, precision: str, key: str = "train.precision") -> None:
    """Refuse, with one line, a precision the device cannot run."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise KdlabError(f"{key}: bf16 needs a GPU of compute capability 8.0 or newer (this one has "
                         f"{torch.cuda.get_device_capability(device)}): use fp16 or fp32")


def channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 4-d parameters and buffers in channels-last memory (in place)."""
    return module.to(memory_format=torch.channels_last)


def compile_in_place(module: nn.Module) -> nn.Module:
    """Compile ``module`` in place (:meth:`torch.nn.Module.compile`): its ``state_dict`` keeps its keys."""
    if not hasattr(module, "compile") or not hasattr(torch, "compile"):
        raise KdlabError(f"train.compile needs torch.compile (PyTorch 2.2 or newer; this is {torch.__version__}): "
                         "set train.compile: false")
    module.compile()
    return module


def prepare_models(method: nn.Module, networks: list[nn.Module | None], spec: Any) -> None:
    """Apply ``train.channels_last`` to everything ``method`` trains (its registered modules) and to the frozen
    networks in ``networks`` (the teacher, held outside the method's module tree), and ``train.compile`` to
    ``networks`` (the trained network and the teacher: the method's own step, with its taps and its inner
    maximisation, stays eager). Call it after the method is built: building runs dry forward passes."""
    present = [network for network in networks if network is not None]
    if spec.channels_last:
        for module in [method, *present]:
            channels_last(module)
    if spec.compile:
        for network in present:
            compile_in_place(network)


@contextmanager
def compile_errors(enabled: bool) -> Iterator[None]:
    """Turn a ``torch.compile`` failure (raised at the first call of a compiled module) into one line."""
    if not enabled:
        yield
        return
    from torch._dynamo.exc import TorchDynamoException

    try:
        yield
    except TorchDynamoException as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise KdlabError(f"train.compile: torch.compile failed on this model ({first}); "
                         "set train.compile: false") from None


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float | None) -> None:
    """Scale the gradients of ``optimizer``'s parameters (those that have one) to a global L2 norm of at most
    ``max_norm``; nothing when ``max_norm`` is None."""
    if max_norm is None:
        return
    parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if parameters:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type=2.0)


class StepPrecision:
    """The step in ``train.precision``: :meth:`forward` under autocast, :meth:`backward_step` with the fp16
    gradient scaler (a plain ``backward()`` + ``optimizer.step()`` in fp32 and bf16)."""

    def __init__(self, precision: str, device: torch.device, compiled: bool = False):
        check_precision(device, precision)
        self.precision, self.device, self.compiled = precision, device, compiled
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def forward(self, method: Any, batch: Any, generator: torch.Generator):
        with compile_errors(self.compiled), autocast(self.device, self.precision):
            return method(batch, generator)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      max_norm: float | None = None) -> None:
        """Backward, then the optimizer's step; with ``max_norm`` (``train.grad_clip``) the gradients of the
        optimizer's parameters are first scaled so that their global L2 norm is at most ``max_norm`` (mmcv's
        ``OptimizerHook`` ``grad_clip``: ``clip_grad_norm_(params, max_norm, norm_type=2)``; unscaled first in
        fp16)."""
        if self.scaler is None:
            loss.backward()
            clip_gradients(optimizer, max_norm)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if max_norm is not None:
            self.scaler.unscale_(optimizer)
            clip_gradients(optimizer, max_norm)
        self.scaler.step(optimizer)  # skips the step when a gradient overflowed
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
