"""Time estimates, all in one place: a plan's before it starts, a run's once it has started, an ablation's rest.

**Before a run** (``kdlab check``): :func:`kdlab.check.models.time_steps` times three training steps (the median
counts; one for a slow model) on random images of the data's size (after warm-up steps), one forward+backward
and one forward of the trained network alone, the way the run will take them: with the run's torch thread count
(the ``--threads`` default or value, set while timing), on the recipe's device when it is here, under
``train.precision``, on the recipe's batch (fewer images when one step of it would take more than a couple of
seconds). :func:`run_seconds` scales them:

* training: seconds per image of a step x images per epoch (full batches; ``train.max_batches_per_epoch``
  caps them) x ``train.epochs``;
* validation (``data.val_size`` with a selection metric): per epoch, every validation image once (clean
  accuracy, or a detector's AP50) plus ``train.select_steps`` + 1 forward+backward passes for PGD selection;
* evaluation: the ``eval.n`` images of the evaluated split once per attack, times the attack's iterations
  (PGD: ``eval.steps``; others: their documented defaults, ``kdlab.robustness.attacks``) in forward+backward passes.

It is a rough figure: the machine's load during the check stands for its load during the run, no data loading
time; early-stopping attacks (AutoAttack) make it an upper bound.

**Once a run has started**, its expected time is announced once from its first timed training steps, before most
of the work. :class:`ExpectedTime` wraps a run's progress reporter. After a few warm-up steps (cuDNN autotuning,
the allocator's growth, ``torch.compile``) it times the following steps -- until at least :data:`MIN_STEPS` steps
and :data:`MIN_SECONDS` seconds have passed, or an epoch ends -- and then calls its ``note(text)`` once with
the run's expected time. The steps are counted from the ``step`` the engine reports, so a loop that reports
only every ``train.log_every`` steps is timed alike; time between an epoch's last step and the next epoch
(validation, checkpoints) is left out of the window. The estimate:

* training: the time its steps took so far plus the steps left at the measured steps per second;
* validation (the time it took so far, plus the epochs left) and the final evaluation: the pass counting above
  (the model ``kdlab check`` uses), with the cost of one forward+backward pass of the trained network read off
  the same measurement. A training image costs the method's ``passes`` forward+backward passes of it plus its
  ``teacher_forwards`` teacher forward passes; a forward pass counts as a third of a forward+backward, and the
  teacher's forward as the student's times their FLOP ratio (``torch.utils.flop_counter``, one image). This
  part is rougher than the training figure: evaluation runs in fp32 whatever the training precision, and
  early-stopping attacks (AutoAttack) stop early.

On a GPU both ends of the timed window are bracketed by ``torch.cuda.synchronize()`` (twice per run), so the
figure is the device's time even when the training loop does not wait for the device at every step. The
reporter is wrapped around progress displays that offer ``note`` (the console's; :class:`NoteReporter` for
ablation cells, which show no progress bar); other reporters are left as they are.

**An ablation's remaining time** (:func:`remaining_seconds`, ``kdlab ablate``'s progress lines): the mean time of
the cells finished so far for each round of parallel cells still to go.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdlab.train.reporter import Reporter
from kdlab.train.selection import selection_metric, selects_on_validation

WARMUP_STEPS = 3
MIN_STEPS = 10
MIN_SECONDS = 2.0


# --------------------------------------------------------------------------- before a run: pass counting
def _images_per_epoch(recipe: Any, facts: Any) -> int:
    batch = recipe.data.batch_size
    if recipe.task == "detection" and facts.train < batch:
        return facts.train  # detection keeps a lone partial batch
    batches = facts.train // batch
    if recipe.train.max_batches_per_epoch is not None:
        batches = min(batches, recipe.train.max_batches_per_epoch)
    return batches * batch


def _attack_passes(recipe: Any, name: str) -> float:
    """Forward+backward passes per image of one evaluation column (clean: one forward, counted apart)."""
    from kdlab.robustness.attacks import attack_def

    if name == "pgd":
        return recipe.eval.steps + 1.0
    entry = attack_def(name)
    return float(max(1, entry.steps) * max(1, entry.restarts) + 1)


def validation_seconds(recipe: Any, facts: Any, cost: Any) -> float:
    """Estimated wall seconds of one epoch's validation (0 without a validation split or selection)."""
    if not selects_on_validation(recipe, bool(facts.val)):
        return 0.0
    per_image = cost.forward
    if selection_metric(recipe) == "pgd":
        per_image += (recipe.train.select_steps + 1) * cost.forward_backward
    return facts.val * per_image


def evaluation_seconds(recipe: Any, facts: Any, cost: Any) -> float:
    """Estimated wall seconds of the final evaluation (``eval.n`` images, every column of ``eval.attacks``)."""
    evaluated = facts.split(recipe.eval.split) or 0
    n = min(recipe.eval.n, evaluated)
    if recipe.task == "detection":
        return n * cost.forward
    return sum(cost.forward if name == "clean" else _attack_passes(recipe, name) * cost.forward_backward
               for name in recipe.eval.attacks) * n


def run_seconds(recipe: Any, facts: Any, cost: Any) -> float:
    """Estimated wall seconds of one run (training, per-epoch validation, final evaluation)."""
    train = cost.train * _images_per_epoch(recipe, facts) * recipe.train.epochs
    validation = validation_seconds(recipe, facts, cost) * recipe.train.epochs
    return train + validation + evaluation_seconds(recipe, facts, cost)


def how_estimated(runs: list[Any], threads: int | None) -> str:
    """One sentence saying how the estimate was made."""
    timed = [run.cost for run in runs if run.cost is not None]
    sizes = sorted({cost.images for cost in timed})
    shown = "/".join(str(s) for s in sizes) or "a few"
    counts = sorted({cost.threads for cost in timed}) or ([threads] if threads else [])
    devices = sorted({cost.device for cost in timed} - {"cpu"})
    where = f"on this machine{' (' + '/'.join(devices) + ')' if devices else ''}"
    if counts:
        shown_threads = "/".join(str(c) for c in counts)
        where += f" with {shown_threads} torch thread{'s' if counts != [1] else ''} (the runs' count)"
    return (f"timed training steps on {shown} random images per distinct setting (the median of 3 after warm-up "
            f"steps; one step for slow models), {where}{_load()}, scaled to the split sizes, epochs, validation and "
            "attack iterations; data loading not included")


def _load() -> str:
    """``, load average L on C cores ...`` (the 1-minute figure when the estimate is printed): the estimate
    assumes that load persists; empty where the platform has no load average."""
    import os

    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return ""
    return f", load average {load:.1f} on {os.cpu_count()} cores (assumed to persist)"


def clock(seconds: float | None) -> str | None:
    """``H:MM:SS`` (``1 day, H:MM:SS`` past a day)."""
    import datetime

    return None if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


def plan_lines(plan: Any) -> list[str]:
    """One line per run of the plan: what it is, whether it trains or is reused, its estimate, its directory
    (plain padded text, never cut to the terminal's width: the directory is what a user looks for)."""
    status = {"finished": "finished: reused", "unfinished": "unfinished: resumes", "to train": "to train",
              "committed": "from the table"}

    def role(run: Any) -> str:
        return run.role if run.role == "teacher" or plan.seeds <= 1 else f"{run.role}, seed {run.seed}"

    rows = [(role(run), status[run.status],
             (clock(run.seconds) or "-") if run.trains else "",
             str(run.reuse_from or run.run_dir)) for run in plan.runs]
    rows.insert(0, ("run", "status", "estimate", "directory"))
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
            for row in rows]


def plan_summary(plan: Any, threads: int | None = None) -> list[str]:
    """The lines under the plan's table: counts, the estimate and how it was made (``threads``: the count the
    steps were timed with when the plan does not say)."""
    threads = getattr(plan, "threads", None) or threads
    finished = [run for run in plan.runs if run.status == "finished"]
    kept = [run for run in plan.runs if run.status == "committed"]
    lines = [f"{len(plan.runs)} runs: {len(finished)} finished (reused), "
             + (f"{len(kept)} from the committed table, " if kept else "") + f"{len(plan.to_train)} to train"
             + (f"; {plan.cells} cells x {plan.seeds} seeds" if plan.cells > 1 or plan.seeds > 1 else "")]
    timed = [run.seconds for run in plan.to_train if run.seconds is not None]
    if plan.to_train and timed:
        lines.append(f"estimated time, one run after another: {clock(sum(timed))} "
                     f"({how_estimated(plan.to_train, threads)})")
    elif not plan.to_train:
        lines.append("nothing to train: every run is finished and will be reused (--force retrains)")
    return lines + list(getattr(plan, "after", []))


# --------------------------------------------------------------------------- a started run: its expected time
@dataclass(frozen=True)
class RunShape:
    """What the estimate scales: the recipe, its split sizes and a training image's cost in forward+backward
    passes of the trained network (``passes``, teacher forwards included)."""

    recipe: Any
    train: int
    val: int
    test: int | None
    passes: float

    def split(self, name: str) -> int | None:  # the facts interface of the pass counting above
        return self.val if name == "val" else self.test


@dataclass(frozen=True)
class _PassCost:
    """Seconds per image of a forward+backward and of a forward pass (the cost interface of the pass counting
    above)."""

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


# --------------------------------------------------------------------------- an ablation's remaining time
def remaining_seconds(cell_seconds: list[float], remaining: int, jobs: int) -> float | None:
    """ETA of an ablation: the mean training time of the cells finished so far (a reused cell counts
    with the time it took when it ran) for each of the ``ceil(remaining / jobs)`` rounds still to go."""
    if not cell_seconds:
        return None
    return sum(cell_seconds) / len(cell_seconds) * math.ceil(remaining / max(1, jobs))
