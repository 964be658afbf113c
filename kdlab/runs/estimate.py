"""A run's expected time, announced once from its first timed training steps, before most of the work.

:class:`ExpectedTime` wraps a run's progress reporter. After a few warm-up steps (cuDNN autotuning, the
allocator's growth, ``torch.compile``) it times the following steps -- until at least :data:`MIN_STEPS` steps
and :data:`MIN_SECONDS` seconds have passed, or an epoch ends -- and then calls its ``note(text)`` once with
the run's expected time. The steps are counted from the ``step`` the engine reports, so a loop that reports
only every ``train.log_every`` steps is timed alike; time between an epoch's last step and the next epoch
(validation, checkpoints) is left out of the window. The estimate:

* training: the time its steps took so far plus the steps left at the measured steps per second;
* validation (the time it took so far, plus the epochs left) and the final evaluation: the pass counting of :mod:`kdlab.runs.step_timing` (the model
  ``kdlab check`` uses), with the cost of one forward+backward pass of the trained network read off the same
  measurement. A training image costs the method's ``passes`` forward+backward passes of it plus its
  ``teacher_forwards`` teacher forward passes; a forward pass counts as a third of a forward+backward, and the
  teacher's forward as the student's times their FLOP ratio (``torch.utils.flop_counter``, one image). This
  part is rougher than the training figure: evaluation runs in fp32 whatever the training precision, and
  early-stopping attacks (AutoAttack) stop early.

On a GPU both ends of the timed window are bracketed by ``torch.cuda.synchronize()`` (twice per run), so the
figure is the device's time even when the training loop does not wait for the device at every step. The
reporter is wrapped around progress displays that offer ``note`` (the console's; :class:`NoteReporter` for
ablation cells, which show no progress bar); other reporters are left as they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdlab.runs.step_timing import clock, evaluation_seconds, validation_seconds
from kdlab.train.engine import Reporter

WARMUP_STEPS = 3
MIN_STEPS = 10
MIN_SECONDS = 2.0


@dataclass(frozen=True)
class RunShape:
    """What the estimate scales: the recipe, its split sizes and a training image's cost in forward+backward
    passes of the trained network (``passes``, teacher forwards included)."""

    recipe: Any
    train: int
    val: int
    test: int | None
    passes: float

    def split(self, name: str) -> int | None:  # the facts interface of kdlab.runs.step_timing
        return self.val if name == "val" else self.test


@dataclass(frozen=True)
class _PassCost:
    """Seconds per image of a forward+backward and of a forward pass (kdlab.runs.step_timing's cost interface)."""

    forward_backward: float
    forward: float


def forward_flops(model: nn.Module, image_shape: tuple[int, ...]) -> float | None:
    """FLOPs of one eval-mode forward pass on one image (``torch.utils.flop_counter``); None when uncountable.
    The model's train/eval flags are restored, so its BatchNorm statistics do not move."""
    from torch.utils.flop_counter import FlopCounterMode

    modes = [(module, module.training) for module in model.modules()]
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *image_shape, device=device))
        return float(counter.get_total_flops()) or None
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return None
    finally:
        for module, training in modes:
            module.training = training


def run_shape(recipe: Any, data: Any, summary: dict[str, Any], model: nn.Module,
              teacher: nn.Module | None) -> RunShape:
    """The shape of a run about to train: ``summary`` is the task setup's (``passes_per_image``,
    ``teacher_forwards_per_image``); a classification teacher's forward is weighed by its FLOPs."""

    def size(split: Any) -> int:
        return len(split) if split is not None else 0

    passes = float(summary.get("passes_per_image", 1.0))
    teacher_forwards = float(summary.get("teacher_forwards_per_image", 0.0))
    ratio = 1.0
    if teacher_forwards and teacher is not None and recipe.task == "classification":
        image_shape = tuple(data.train.images.shape[1:])
        student_flops, teacher_flops = forward_flops(model, image_shape), forward_flops(teacher, image_shape)
        if student_flops and teacher_flops:
            ratio = teacher_flops / student_flops
    test = getattr(data, "test", None)
    return RunShape(recipe=recipe, train=size(data.train), val=size(getattr(data, "val", None)),
                    test=None if test is None else len(test), passes=passes + teacher_forwards * ratio / 3.0)


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class ExpectedTime(Reporter):
    """Forwards every callback to ``inner``; once, after the timed window, calls ``note`` with the estimate."""

    def __init__(self, inner: Reporter, note: Callable[[str], None], shape: RunShape, *,
                 now: Callable[[], float] = time.perf_counter, synchronize: Callable[[], None] = _synchronize):
        self.inner, self.note, self.shape = inner, note, shape
        self.now, self.synchronize = now, synchronize
        self.window: tuple[int, float] | None = None  # (steps done, time) where the timed window opened
        self.excluded = 0.0  # seconds inside the window spent between epochs (validation, checkpoints)
        self.epoch_end: float | None = None  # when the current epoch's last step was reported
        self.between = 0.0  # seconds spent between epochs since the start (validation, checkpoints)
        self.announced = False
        self.text = ""
        self.seconds: dict[str, float] = {}  # training, validation, evaluation: what the text shows

    def __getattr__(self, name: str) -> Any:  # evaluation_progress and whatever else the display offers
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def fit_started(self, epochs: int, batches_per_epoch: int, start_epoch: int) -> None:
        self.inner.fit_started(epochs, batches_per_epoch, start_epoch)
        self.epochs, self.per_epoch, self.start_epoch = epochs, batches_per_epoch, start_epoch
        self.total = (epochs - start_epoch + 1) * batches_per_epoch
        self.warmup = min(WARMUP_STEPS, self.total // 4)
        self.started = self.now()

    def step_done(self, epoch: int, step: int, terms: dict[str, float], images: int) -> None:
        self.inner.step_done(epoch, step, terms, images)
        if self.announced:
            return
        done = (epoch - self.start_epoch) * self.per_epoch + step
        if self.window is None:
            if done >= max(1, self.warmup):
                self.synchronize()
                self.window, self.excluded = (done, self.now()), 0.0
        else:
            opened_at, opened = self.window
            timed = done - opened_at
            if ((timed >= MIN_STEPS and self.now() - opened - self.excluded >= MIN_SECONDS)
                    or (step == self.per_epoch and timed > 0)):
                self.synchronize()
                self._announce(epoch, done, timed, self.now() - opened - self.excluded)
                return
        if step == self.per_epoch:
            self.epoch_end = self.now()

    def epoch_done(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.epoch_end is not None and not self.announced:
            gap = self.now() - self.epoch_end  # validation and checkpoints are not step time
            self.between += gap
            if self.window is not None:
                self.excluded += gap
        self.epoch_end = None
        self.inner.epoch_done(epoch, metrics)

    def fit_finished(self) -> None:
        self.inner.fit_finished()

    def _announce(self, epoch: int, done: int, timed: int, seconds: float) -> None:
        self.announced = True
        if seconds <= 0:
            return
        shape, recipe = self.shape, self.shape.recipe
        step_seconds = seconds / timed
        training = (self.now() - self.started - self.between) + (self.total - done) * step_seconds
        rate = recipe.data.batch_size / step_seconds
        forward_backward = 1.0 / (rate * max(shape.passes, 1e-9))
        cost = _PassCost(forward_backward=forward_backward, forward=forward_backward / 3.0)
        validation = self.between + validation_seconds(recipe, shape, cost) * (self.epochs - epoch + 1)
        evaluation = evaluation_seconds(recipe, shape, cost)
        self.seconds = {"training": training, "validation": validation, "evaluation": evaluation}
        lead = "expected time to finish" if self.start_epoch > 1 else "expected time"
        parts = [f"training {clock(training)} ({rate:,.0f} img/s over steps {done - timed + 1}-{done})"]
        if validation:
            parts.append(f"validation {clock(validation)}")
        parts.append(f"evaluation ~{clock(evaluation)}")
        self.text = f"{lead} {clock(training + validation + evaluation)}: " + ", ".join(parts)
        self.note(self.text)


class NoteReporter(Reporter):
    """No progress display, only notes as plain lines naming the run (ablation cells, teachers trained for
    them): their expected time."""

    def __init__(self, title: str):
        self.title = title

    def note(self, text: str) -> None:
        print(f"  {self.title}: {text}", flush=True)


def with_expected_time(reporter: Reporter | None, recipe: Any, data: Any, setup: Any,
                       teacher: nn.Module | None) -> Reporter | None:
    """``reporter`` wrapped in :class:`ExpectedTime` when it can show a note; otherwise as it is."""
    note = getattr(reporter, "note", None)
    if reporter is None or not callable(note):
        return reporter
    return ExpectedTime(reporter, note, run_shape(recipe, data, setup.summary, setup.model, teacher))
