"""The model side of the plan check: build the networks a recipe names, tap their blocks, take one step.

Nothing here loads data or trains: the student (or model) is built with random weights for the class count and
image size :mod:`kdlab.check.data` found, a teacher checkpoint is loaded weights-only and matched to the data's
class count and the recipe's task, the method is built around both (which resolves every block key, sizes the
connectors and, for detectors, compares the FPNs), and one forward/backward pass on two random images catches
shape errors. :func:`time_steps` repeats that step on a handful of random images to estimate the run's time.
Every failure becomes one line naming the recipe key and the fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdlab.config.schema import used_taps
from kdlab.errors import KdlabError

# How a model error's text tells which key of a model spec it is about.
_KEY_HINTS = (("architecture", "arch"), ("detector arch", "arch"), ("backbone", "backbone"),
              ("min_size", "min_size"), ("option", "options"))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:400] or type(error).__name__


def spec_problem(role: str, error: BaseException) -> str:
    """``student.arch: unknown architecture 'resnett' ...`` for an error building ``role``'s model."""
    text = _one_line(error)
    key = next((key for hint, key in _KEY_HINTS if hint in text), None)
    return f"{role}.{key}: {text}" if key else f"{role}: {text}"


def build_trained(recipe: Any, classes: int, role: str) -> nn.Module:
    """The network ``recipe`` trains (random weights, CPU), as the task builds it; raises KdlabError."""
    spec = recipe.trained_model
    if recipe.task == "detection":
        from kdlab.tasks.detection import build_detection_model

        return build_detection_model(spec, classes, role)
    from kdlab.models.factory import build_model

    return build_model("classification", spec.arch, classes, spec.build_options())


def load_teacher_checkpoint(recipe: Any, classes: int) -> nn.Module:
    """``teacher.checkpoint`` loaded weights-only; it must fit its architecture, the task and the class count."""
    from kdlab.models.files import load_model

    path = recipe.teacher.checkpoint
    try:
        teacher, payload = load_model(path, expected_classes=classes)
    except KdlabError as error:
        raise KdlabError(f"teacher.checkpoint: {error}") from None
    if payload.get("task", "classification") != recipe.task:
        raise KdlabError(f"teacher.checkpoint: '{path}' is a {payload.get('task')} model but the recipe's task is "
                         f"{recipe.task}: name a {recipe.task} teacher")
    return teacher


# --------------------------------------------------------------------------- block keys


def _block_fields(settings: Any):
    """(key, teacher key, student keys, teacher keys) of every tap field the method's settings declare
    (:class:`kdlab.config.schema.Taps`) that is used (a section whose ``weight`` is 0 taps nothing); the teacher
    keys are the student's list itself when the teacher field is null (the same keys)."""
    for tap, keys, teacher_keys in used_taps(settings):
        yield tap.key(tap.student), tap.key(tap.teacher), keys, keys if teacher_keys is None else teacher_keys


def block_key_problems(recipe: Any, student: nn.Module, teacher: nn.Module | None) -> list[str]:
    """Every method block key that names no block (or module) of the student or of the teacher."""
    from kdlab.models.taps import resolve_tap

    if recipe.task != "classification":
        return []
    problems = []
    for field, teacher_field, keys, teacher_keys in _block_fields(recipe.method):
        for model, label, key_name, values in ((student, "student", field, keys),
                                               (teacher, "teacher", teacher_field, teacher_keys)):
            if model is None:
                continue
            paired_by_default = label == "teacher" and teacher_keys is keys
            shown = f"{field} (for the teacher)" if paired_by_default else key_name
            fix = (f"pair it with a teacher block in {teacher_field}" if paired_by_default
                   else "use one of these blocks")
            for key in values:
                try:
                    resolve_tap(model, key)
                except KdlabError as error:
                    problems.append(f"{shown}: {key!r} is not a block of the {label} ({_one_line(error)}): {fix} "
                                    "(kdlab inspect RECIPE shows both models)")
    return problems


# --------------------------------------------------------------------------- detectors
def fpn_strides(detector: nn.Module) -> dict[str, int]:
    """FPN level name -> stride in input pixels, from a dry run of the backbone on one 256 x 256 image."""
    from kdlab.models.detection import fpn_module_path

    module = detector.get_submodule(fpn_module_path(detector))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            levels = module(torch.zeros(1, 3, 256, 256))
    finally:
        module.train(was_training)
    return {name: max(1, round(256 / level.shape[-1])) for name, level in levels.items()}


def detector_size_problems(recipe: Any, detector: nn.Module, role: str) -> list[str]:
    """The detector's resize (``min_size``) must give every FPN level at least one pixel of image: a side
    shorter than the coarsest level's stride leaves that level holding only padding."""
    spec = recipe.trained_model
    strides = fpn_strides(detector)
    name, stride = max(strides.items(), key=lambda item: item[1])
    problems = []
    if spec.min_size is not None and spec.min_size < stride:
        problems.append(f"{role}.min_size ({spec.min_size}) is smaller than {stride} px, the stride of the coarsest "
                        f"FPN level ('{name}') of {spec.arch}-{spec.backbone}: that level would see only padding; "
                        f"set {role}.min_size (and max_size) to at least {stride}")
    size = recipe.data.image_size
    if size is not None and size < stride:
        problems.append(f"data.image_size ({size}) is smaller than {stride} px, the stride of the coarsest FPN "
                        f"level ('{name}') of {spec.arch}: set data.image_size to at least {stride}")
    return problems


# --------------------------------------------------------------------------- one step
def build_step(recipe: Any, model: nn.Module, teacher: nn.Module | None, image_shape: tuple[int, ...],
               adversarial: bool = True) -> nn.Module:
    """What the engine would train: the recipe's method around ``model`` (and the frozen ``teacher``). Without
    ``adversarial`` a training recipe's step is the plain one: the same shapes, without the inner attack steps
    (the check's dry step stays cheap for a paper-scale model on a CPU)."""
    if recipe.task == "classification" and not recipe.is_distillation:
        from kdlab.config.sections import AdversarialSpec
        from kdlab.methods.supervised import SupervisedTraining

        return SupervisedTraining(model, recipe.train.adversarial if adversarial else AdversarialSpec())
    from kdlab.methods.registry import build_method

    return build_method(recipe.method, model, teacher, image_shape=image_shape)


def random_batch(task: str, n: int, image_shape: tuple[int, ...], classes: int, generator: torch.Generator):
    """``n`` random images shaped like the data (with random labels, or one box each for detection)."""
    if task == "classification":
        return torch.rand(n, *image_shape, generator=generator), torch.randint(classes, (n,), generator=generator)
    _, height, width = image_shape
    images = [torch.rand(*image_shape, generator=generator) for _ in range(n)]
    box = torch.tensor([[width / 4, height / 4, 3 * width / 4, 3 * height / 4]])
    targets = [{"boxes": box.clone(), "labels": torch.tensor([1 + k % max(1, classes - 1)])} for k in range(n)]
    return images, targets


def step(method: nn.Module, batch: Any, generator: torch.Generator, precision: Any = None) -> None:
    """One training step's forward and backward (no optimizer: the weights stay as they are); ``precision`` (a
    context, the engine's autocast) wraps the forward as the engine does."""
    method.train()
    with precision if precision is not None else nullcontext():
        result = method(batch, generator)
    if not torch.isfinite(result.loss.detach()).all():
        raise KdlabError("the loss of a step on random images is not finite")
    result.loss.backward()
    method.zero_grad(set_to_none=True)


def dry_step(recipe: Any, method: nn.Module, image_shape: tuple[int, ...], classes: int) -> str | None:
    """The problem a forward/backward step on two random images meets, or None."""
    generator = torch.Generator().manual_seed(0)
    try:
        step(method, random_batch(recipe.task, 2, image_shape, classes, generator), generator)
    except (KdlabError, RuntimeError, ValueError, IndexError, KeyError, AssertionError) as error:
        shape = "x".join(str(s) for s in image_shape[1:])
        return (f"method: a training step on two random {shape} images fails ({_one_line(error)}): check that "
                f"the method's blocks and connectors fit both models (kdlab inspect RECIPE)")
    return None


@dataclass(frozen=True)
class StepCost:
    """Seconds per image of a training step and of evaluating the trained model, measured on ``images`` images
    per step with ``threads`` torch threads on ``device``."""

    train: float
    forward_backward: float
    forward: float
    images: int
    threads: int = 1
    device: str = "cpu"


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` torch threads (None: as they are), restoring the count after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run, repeats: int, device: torch.device = torch.device("cpu")) -> float:
    """The median of ``repeats`` timed calls; the median resists a step slowed by another process on a shared
    machine. On a GPU the device's queue is drained at both ends."""
    seconds = []
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        run()
        _synchronize(device)
        seconds.append(time.perf_counter() - started)
    return sorted(seconds)[len(seconds) // 2]


# A timed step takes about this long at most: the run's own batch when a step of it fits, fewer images for a
# paper-scale model on a CPU (timed once when even two images take longer).
STEP_BUDGET_S = 5.0


def _on(batch: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return batch
    images, labels = batch
    if isinstance(images, torch.Tensor):
        return images.to(device), labels.to(device)
    return [image.to(device) for image in images], [{k: v.to(device) for k, v in t.items()} for t in labels]


def time_steps(recipe: Any, method: nn.Module, model: nn.Module, image_shape: tuple[int, ...],
               classes: int, threads: int | None = None) -> StepCost:
    """Time training steps as the run will take them -- with ``threads`` torch threads (the run's count), on
    ``model``'s device, under the recipe's ``train.precision`` (and ``eval.precision`` for the evaluation
    passes) -- plus a forward+backward and a forward of the trained network alone (for the evaluation
    estimate). Two warm-up steps on two images size the rest: as many images as fit :data:`STEP_BUDGET_S`,
    up to the recipe's batch (detection: 2), timed three times (the median counts), or once when even two
    images take longer than the budget."""
    from kdlab.runtime.acceleration import autocast

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    with torch_threads(threads) as used:
        generator = torch.Generator().manual_seed(0)

        def train_step(batch):
            return lambda: step(method, batch, generator, autocast(device, recipe.train.precision))

        n = min(recipe.data.batch_size, 2)
        two = _on(random_batch(recipe.task, n, image_shape, classes, generator), device)
        _timed(train_step(two), 1, device)  # warm-up: first-call allocations and kernel choices
        per_image = _timed(train_step(two), 1, device) / n
        repeats = 3 if per_image * n <= STEP_BUDGET_S else 1
        if recipe.task == "classification":
            n = max(n, min(recipe.data.batch_size, int(STEP_BUDGET_S / max(per_image, 1e-9))))
        batch = _on(random_batch(recipe.task, n, image_shape, classes, generator), device)
        train = _timed(train_step(batch), repeats, device) / n
        model.eval()
        try:
            with torch.no_grad(), autocast(device, recipe.eval.precision):
                forward = _timed(lambda: model(batch[0]), repeats, device) / n
            if recipe.task == "classification":
                def forward_backward():
                    images = batch[0].clone().requires_grad_(True)
                    with autocast(device, recipe.eval.precision):
                        loss = nn.functional.cross_entropy(model(images), batch[1])
                    loss.backward()
                    model.zero_grad(set_to_none=True)

                forward_backward_s = _timed(forward_backward, repeats, device) / n
            else:
                forward_backward_s = forward
        finally:
            model.train()
    return StepCost(train=train, forward_backward=forward_backward_s, forward=forward, images=n, threads=used,
                    device=device.type)
