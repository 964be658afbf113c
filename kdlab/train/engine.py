"""The one training loop shared by every method and task.

A *method* is an ``nn.Module`` whose registered submodules are exactly what is trained and
checkpointed (the student plus any connectors/adapters; a frozen teacher is held outside
the module tree) and whose ``forward(batch, generator)`` returns a :class:`StepResult`. The engine
calls ``method(batch, generator)``, so a wrapper that hooks ``forward`` (``DistributedDataParallel``,
which synchronises the gradients of calls that go through it) sees every step.
The engine owns everything else: optimizer, learning-rate schedule, progress, per-epoch
``last.pt`` (weights, optimizer, scheduler, RNG state, history: :mod:`kdlab.train.state`), ``best.pt`` chosen
on the validation split by the selection rule (``select``: :mod:`kdlab.train.selection`),
``metrics.csv`` (every validation metric of every epoch), resume and the NaN guard.

Resume is exact on CPU: every epoch draws its randomness (shuffling, augmentation, mixup,
attack starts) from a generator seeded by ``(seed, epoch)``, so an epoch computes the same
thing whether it follows a restart or not. With ``train.rng: sample`` that generator is a
:class:`kdlab.runtime.sample_random.SampleGenerator`: augmentation and attack starts are drawn per sample from
``(seed, epoch, sample index)`` (each batch's indices are bound to it before its step), so they do not depend
on the batch size or the number of processes; shuffling and batch-level draws (mixup) stay on its stream.

The step loop never waits for the device: loss terms, accuracy counts and the finiteness check accumulate in
device tensors (:class:`kdlab.train.epoch_totals.EpochTotals`) and are read back every ``train.log_every`` steps
(progress) and at the end of the epoch. A non-finite loss therefore stops the run up to ``log_every`` steps
after it happened, always before anything of that epoch is validated or saved: ``last.pt`` stays the previous
epoch's. ``train.precision``, ``train.channels_last`` and ``train.compile``: :mod:`kdlab.runtime.acceleration`.

Several processes (torchrun, :mod:`kdlab.runtime.distributed`): the method is wrapped in DistributedDataParallel,
every rank steps its shard of each global batch, the epoch's loss terms and counts are added over ranks, and
only rank 0 writes ``last.pt``, ``best.pt`` and ``metrics.csv``; every rank reads ``last.pt`` on resume.

A deadline (:func:`deadline`, set by ``kdlab ablate --time-limit``: :mod:`kdlab.ablation.slices`) stops the loop at
an epoch boundary: before each epoch, when the next epoch (as long as the longest one measured, this process's or
``last.pt``'s history) would end past the deadline, :class:`OutOfTime` is raised; ``last.pt`` then holds every
finished epoch and a resume continues from there. Nothing is ever stopped mid-write.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from kdlab.config.sections import TrainSpec
from kdlab.errors import Diverged, KdlabError
from kdlab.results import atomic_write_text
from kdlab.runtime import distributed
from kdlab.runtime.acceleration import StepPrecision
from kdlab.runtime.sample_random import SampleGenerator, bind_batch, key_of
from kdlab.train.epoch_totals import EpochTotals, Reading
from kdlab.train.reporter import Reporter
from kdlab.train.selection import epoch_score, improves
from kdlab.train.state import load_state, save_state


class OutOfTime(Exception):
    """The run stopped at an epoch boundary because its next epoch would pass the deadline: not an error;
    ``last.pt`` keeps every finished epoch (``epoch`` of ``epochs``) and a resume continues from there."""

    def __init__(self, message: str, epoch: int = 0, epochs: int = 0):
        super().__init__(message)
        self.epoch, self.epochs = epoch, epochs

    def __reduce__(self):  # raised in a worker process of ``kdlab ablate --jobs``: rebuilt in the parent
        return OutOfTime, (str(self), self.epoch, self.epochs)


@dataclass(frozen=True)
class Deadline:
    """A point in time (``at``, in the seconds of ``now``) that training must not pass."""

    at: float
    now: Callable[[], float] = time.time

    def left(self) -> float:
        return self.at - self.now()


_DEADLINE: list[Deadline | None] = [None]


@contextlib.contextmanager
def deadline(limit: Deadline | None):
    """Within this block every :func:`fit` of this process stops before an epoch that would pass ``limit``."""
    before, _DEADLINE[0] = _DEADLINE[0], limit
    try:
        yield limit
    finally:
        _DEADLINE[0] = before


def _next_epoch_seconds(walls: list[float], history: list[dict[str, Any]]) -> float | None:
    """The longest epoch measured so far in this process (step time, validation and checkpoint), else the
    longest step time ``last.pt``'s history recorded; None before any epoch."""
    if walls:
        return max(walls)
    recorded = [row["epoch_seconds"] for row in history if isinstance(row.get("epoch_seconds"), (int, float))]
    return max(recorded) if recorded else None


def _stop_if_out_of_time(limit: Deadline | None, epoch: int, epochs: int, walls: list[float],
                         history: list[dict[str, Any]], last_path: Path) -> None:
    if limit is None:
        return
    needed = _next_epoch_seconds(walls, history)
    left = limit.left()
    if left <= 0 or (needed is not None and needed > left):
        kept = f"{last_path} keeps epochs 1-{epoch - 1}" if epoch > 1 else "no epoch was trained"
        raise OutOfTime(f"stopped for time before epoch {epoch} of {epochs}"
                        + (f" (an epoch takes ~{needed:.0f} s, {max(left, 0):.0f} s left)" if needed else "")
                        + f"; {kept}", epoch - 1, epochs)


@dataclass
class StepResult:
    """One step's total loss plus its named (already weighted) terms for display.

    ``correct``: the number of correctly classified training images, best as a 0-d device tensor (the engine
    sums it on the device; an ``int`` works too but costs the method a host read); ``count``: the batch size.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    correct: torch.Tensor | int = 0
    count: int = 0


class TrainableMethod(Protocol):
    def __call__(self, batch: Any, generator: torch.Generator) -> StepResult: ...


@dataclass
class DataSource:
    """How the engine gets an epoch of batches: ``batches(generator)`` and how many there are."""

    batches: Callable[[torch.Generator], Iterable[Any]]
    batches_per_epoch: int
    batch_size: Callable[[Any], int]


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    train_seconds: float
    images_per_second: float


def epoch_generator(seed: int, epoch: int, rng: str = "batch") -> torch.Generator:
    """The epoch's generator; ``rng`` ``sample``: the same stream, also keyed for per-sample draws."""
    if rng == "sample":
        return SampleGenerator(key_of("train", seed, epoch), seed * 1_000_003 + epoch)
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def lr_factor(spec: TrainSpec, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-iteration multiplier: optional linear warm-up, then cosine, multistep or constant; or cyclic.

    ``cyclic`` is Wong et al.'s schedule (locuslab/fast_adversarial ``CIFAR10/train_fgsm.py``: torch's
    ``CyclicLR(base_lr=0, max_lr=lr, step_size_up=total / 2, step_size_down=total / 2)``, triangular, stepped
    after every optimizer step): the factor at step ``k`` of ``total`` is CyclicLR's scale, computed as it does,
    0 at the first step, 1 at the middle, back towards 0 at the last."""
    total = spec.epochs * steps_per_epoch
    warmup = round(spec.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if spec.schedule == "cyclic":
            return cyclic_scale(step, total)
        if step < warmup:
            return (step + 1) / warmup
        if spec.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if spec.schedule == "multistep":
            epoch = step // steps_per_epoch
            return spec.gamma ** sum(epoch >= milestone for milestone in spec.milestones)
        return 1.0

    return factor


def cyclic_scale(step: int, total: int) -> float:
    """CyclicLR's triangular scale at ``step`` for a cycle of ``total`` steps, half up and half down (its
    formula, with ``step_size_up = step_size_down = total / 2``)."""
    cycle = math.floor(1 + step / total)
    x = 1.0 + step / total - cycle
    return x / 0.5 if x <= 0.5 else (x - 1) / (0.5 - 1)


def momentum_at(spec: TrainSpec, steps_per_epoch: int) -> Callable[[int], float] | None:
    """``schedule: cyclic``: the momentum at each step, falling from ``train.momentum`` to
    ``train.cyclic_base_momentum`` as lr rises and back (CyclicLR's ``cycle_momentum``, on by default there and
    left on in train_fgsm.py); None for the other schedules, whose momentum stays ``train.momentum``."""
    if spec.schedule != "cyclic" or spec.cyclic_base_momentum is None:
        return None
    factor, high, low = lr_factor(spec, steps_per_epoch), spec.momentum, spec.cyclic_base_momentum
    return lambda step: high - (high - low) * factor(step)


def build_optimizer(method: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    """SGD over the trainable parameters.

    By default (``decay_scope: all``) weight decay applies to every parameter with plain momentum, as in the
    adversarial-training reference recipes (TRADES train_trades_cifar10.py, Rice et al. train_cifar.py,
    Wong et al. train_fgsm.py); ``decay_scope: weights`` exempts biases and normalisation parameters
    (tensors of one dimension), a common standard-training habit.
    """
    trainable = [parameter for parameter in method.parameters() if parameter.requires_grad]
    if spec.decay_scope == "all":
        groups = [{"params": trainable, "weight_decay": spec.weight_decay}]
    else:
        groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": spec.weight_decay},
                  {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum,
                           nesterov=spec.nesterov and spec.momentum > 0)


def max_grad_norm(spec: TrainSpec) -> float | None:
    """``train.grad_clip`` as the step uses it: a number, or None for no clipping. A recipe resolves
    ``reference`` when it is loaded (``kdlab.config.recipe``); a bare ``TrainSpec`` still holding it (built in
    code, outside a recipe) names no method, so it does not clip."""
    return None if spec.grad_clip in (None, "reference") else float(spec.grad_clip)


def parameter_device(method: nn.Module) -> torch.device:
    """Where the trained parameters live (the recipe's device, once the task has moved the models)."""
    parameter = next(method.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def log_interval(spec: TrainSpec, device: torch.device) -> int:
    """``train.log_every``; by default 1 on the CPU, where a read costs nothing, and 20 on an accelerator,
    where each read waits for every queued kernel."""
    if spec.log_every is not None:
        return spec.log_every
    return 1 if device.type == "cpu" else 20


def _checked_read(totals: EpochTotals, epoch: int, step: int, every: int, last_path: Path) -> Reading:
    """Read the epoch's totals (one host synchronisation); stop the run if a step's loss was not finite."""
    reading = totals.read()
    if reading.bad_step is not None:
        terms = dict(reading.bad_terms or {})
        loss = terms.pop("loss", math.nan)
        shown = "".join(f"{name}={value:.4g}, " for name, value in terms.items())
        raise Diverged(
            f"loss became {loss} at epoch {epoch}, step {reading.bad_step} ({shown}seen at the check after step "
            f"{step}, train.log_every {every}); lower train.lr or a loss weight; the last good checkpoint is kept "
            f"at {last_path}"
        )
    return reading


def fit(
    method: nn.Module,
    data: DataSource,
    spec: TrainSpec,
    *,
    seed: int,
    run_dir: Path,
    validate: Callable[[], dict[str, float]] | None,
    select: str = "",
    export_best: Callable[[Path], None],
    resume: bool = False,
    reporter: Reporter | None = None,
) -> FitResult:
    """Train ``method`` for ``spec.epochs`` epochs, checkpointing every epoch; see the module docstring."""
    reporter = reporter or Reporter()
    run_dir.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = min(data.batches_per_epoch, spec.max_batches_per_epoch or data.batches_per_epoch)
    if steps_per_epoch < 1:
        raise KdlabError("the training split is smaller than one batch, so an epoch would have no step: "
                         "lower data.batch_size or use more training images")
    optimizer = build_optimizer(method, spec)
    device = parameter_device(method)
    precision = StepPrecision(spec.precision, device, compiled=spec.compile)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(spec, steps_per_epoch))
    max_norm = max_grad_norm(spec)
    momentum = momentum_at(spec, steps_per_epoch)  # cyclic only; a resumed optimizer holds the saved value
    history: list[dict[str, Any]] = []
    best_score, best_epoch, start_epoch = -math.inf, 0, 1
    last_path = run_dir / "last.pt"

    if resume and last_path.exists():
        history, best_score, best_epoch, start_epoch = load_state(last_path, method, optimizer, scheduler,
                                                                  precision)

    trained = distributed.data_parallel(method, spec.sync_bn)  # the method itself in one process
    main = distributed.is_main()
    reporter.fit_started(spec.epochs, steps_per_epoch, start_epoch)
    every = log_interval(spec, device)
    limit, walls = _DEADLINE[0], []  # the deadline, if any; this process's epoch wall times, on its clock
    for epoch in range(start_epoch, spec.epochs + 1):
        _stop_if_out_of_time(limit, epoch, spec.epochs, walls, history, last_path)
        epoch_began = limit.now() if limit is not None else 0.0
        generator = epoch_generator(seed, epoch, spec.rng)
        torch.manual_seed(seed * 1_000_003 + epoch)
        trained.train()  # through a DDP wrapper too
        set_epoch = getattr(getattr(method, "module", method), "set_epoch", None)  # through a DDP wrapper too
        if callable(set_epoch):
            set_epoch(epoch)  # a step that depends on the epoch (IAD's warm-up); also on resume
        totals = EpochTotals()  # device-side sums: nothing in this loop waits for the device
        images = window_images = step = 0
        started = time.perf_counter()
        for step, batch in enumerate(data.batches(generator), start=1):
            if step > steps_per_epoch:
                break
            result = precision.forward(trained, batch, bind_batch(generator, batch))
            optimizer.zero_grad(set_to_none=True)
            precision.backward_step(result.loss, optimizer, max_norm)
            scheduler.step()
            if momentum is not None:
                for group in optimizer.param_groups:
                    group["momentum"] = momentum(scheduler.last_epoch)
            totals.add(step, result.loss, result.terms, result.correct, result.count)
            batch_images = data.batch_size(batch)
            images, window_images = images + batch_images, window_images + batch_images
            if step % every == 0 and step < steps_per_epoch:
                reading = _checked_read(totals, epoch, step, every, last_path)
                reporter.step_done(epoch, step, reading.window, window_images)
                window_images = 0
        steps_done = max(1, min(steps_per_epoch, step))
        reading = _checked_read(totals, epoch, steps_done, every, last_path)  # before anything is validated or saved
        if window_images:
            reporter.step_done(epoch, steps_done, reading.window, window_images)
        seconds = time.perf_counter() - started
        sums, correct, count, images = _add_over_ranks(reading.sums, reading.correct, reading.count, images)
        metrics: dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        metrics.update({name: total / steps_done for name, total in sums.items()})
        if count:
            metrics["train_acc"] = 100.0 * correct / count
        metrics["epoch_seconds"] = seconds
        metrics["images_per_s"] = images / seconds if seconds > 0 else 0.0
        if validate is not None:
            measured = validate()
            metrics.update({f"val_{name}": value for name, value in measured.items()})
            score = epoch_score(select, measured, epoch)
            metrics["val_score"] = score
        else:
            score = epoch_score(select, None, epoch)  # without a validation split (or select: last): the latest
        if improves(score, best_score):
            best_score, best_epoch = score, epoch
            if main:
                export_best(run_dir / "best.pt")
        history.append(metrics)
        if main:
            save_state(last_path, epoch=epoch, method=method, optimizer=optimizer, scheduler=scheduler,
                       precision=precision, history=history, best_score=best_score, best_epoch=best_epoch)
            _write_metrics(run_dir / "metrics.csv", history)
        if limit is not None:
            walls.append(limit.now() - epoch_began)
        reporter.epoch_done(epoch, metrics)
    reporter.fit_finished()
    distributed.barrier()  # best.pt and last.pt are written before any rank reads them
    train_seconds = sum(row["epoch_seconds"] for row in history)
    total_images = sum(row["images_per_s"] * row["epoch_seconds"] for row in history)
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_score=best_score,
        train_seconds=train_seconds,
        images_per_second=total_images / train_seconds if train_seconds > 0 else 0.0,
    )


def _add_over_ranks(sums: dict[str, float], correct: int, count: int,
                    images: int) -> tuple[dict[str, float], int, int, int]:
    """An epoch's totals over every rank: loss terms (sums of per-step means) averaged, counts added."""
    if distributed.world_size() == 1:
        return sums, correct, count, images
    names = list(sums)  # the method's own order, the same on every rank
    *totals, correct_all, count_all, images_all = distributed.all_sum([sums[n] for n in names] + [correct, count,
                                                                                                 images])
    world = distributed.world_size()
    return {n: t / world for n, t in zip(names, totals)}, int(correct_all), int(count_all), int(images_all)


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    import csv
    import io

    columns = list(dict.fromkeys(key for row in history for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())
