"""Image classification: in-memory CIFAR-style data, supervised/adversarial training or a registered distillation
method (``method.name``), robust accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from kdlab.config.recipe import Recipe
from kdlab.data.loaders import load_data_spec
from kdlab.data.splits import test_selection
from kdlab.errors import KdlabError
from kdlab.runtime import distributed
from kdlab.runtime.sample_random import IndexedBatch, SampleGenerator, key_of
from kdlab.tasks.base import EvalOptions, EvalReport, EvalTarget, TrainingSetup, training_cost
from kdlab.train.engine import DataSource
from kdlab.train.selection import selection_metric, selects_on_validation


def accuracy(model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
             attack: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> float:
    """Accuracy (%) in eval mode, batch by batch; with ``attack(images, labels, indices)`` (``indices``: the
    images' positions), on the images it returns. In a multi-process run each rank counts its contiguous share
    and the counts are added over ranks, so every rank gets the number of all the images."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    lo, hi = distributed.shard_range(len(labels))
    for start in range(lo, hi, batch_size):
        end = min(start + batch_size, hi)
        batch = images_uint8[start:end].to(device).float().div(255)
        if attack is not None:
            batch = attack(batch, labels[start:end].to(device), torch.arange(start, end))
        with torch.no_grad():
            predictions = model(batch).argmax(1).cpu()
        correct += int((predictions == labels[start:end]).sum())
    model.train(was_training)
    return 100.0 * distributed.all_sum([correct])[0] / max(1, len(labels))


def pgd_accuracy(model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor, *, eps: float, alpha: float,
                 steps: int, seed: int, batch_size: int = 500, per_sample: bool = False) -> float:
    """Accuracy (%) under PGD-``steps`` (random start, CE), the model in eval mode: the validation attack
    that selects robust checkpoints (Rice et al., robust_overfitting/train_cifar.py: PGD-10 at 8/255, 2/255).
    The random starts come from a generator seeded by ``seed``, so every epoch faces the same attack; with
    ``per_sample`` (``train.rng: sample``) each image's start is drawn from (seed, its position), so the number
    does not depend on the batches or on how the images are shared over processes."""
    from kdlab.robustness.training_attacks import pgd_examples

    if per_sample:
        keyed = SampleGenerator(key_of("validation", seed), seed)

        def attack(batch, targets, indices):
            return pgd_examples(model, batch, targets, eps=eps, alpha=alpha, steps=steps,
                                generator=keyed.bind(indices))
    else:
        generator = torch.Generator().manual_seed(seed)

        def attack(batch, targets, indices):
            return pgd_examples(model, batch, targets, eps=eps, alpha=alpha, steps=steps, generator=generator)

    return accuracy(model, images_uint8, labels, batch_size, attack=attack)


def validation(model: nn.Module, data, recipe: Recipe):
    """The per-epoch validation the engine selects on: clean accuracy, plus PGD accuracy for robust selection."""
    if not selects_on_validation(recipe, data.val is not None):
        return None
    val, spec = data.val, recipe.eval

    def validate() -> dict[str, float]:
        measured = {"clean": accuracy(model, val.images, val.labels)}
        if selection_metric(recipe) == "pgd":
            measured["pgd"] = pgd_accuracy(model, val.images, val.labels, eps=spec.eps, alpha=spec.alpha,
                                           steps=recipe.train.select_steps, seed=spec.seed,
                                           batch_size=spec.batch_size, per_sample=recipe.train.rng == "sample")
        return measured

    return validate


def training_batches(train, recipe: Recipe, device: torch.device) -> DataSource:
    """The engine's batches of the training split. On an accelerator the uint8 images and labels are copied to
    it once (:func:`kdlab.data.classification.on_device`) and every batch is cut, augmented (and mixed, by
    the method) there; on the CPU nothing moves. ``train.channels_last``: batches in channels-last memory."""
    from kdlab.data.classification import iterate_batches, num_batches, on_device

    if device.type != "cpu":
        train = on_device(train, device)
    batch_size, augment, nhwc = recipe.data.batch_size, recipe.data.augment, recipe.train.channels_last

    def batches(generator: torch.Generator):
        # shard: this process's part of each global batch under torchrun (the whole batch in one process)
        for batch in iterate_batches(train, batch_size, generator, shuffle=True, augment=augment, drop_last=True,
                                     shard=distributed.shard()):
            if nhwc:  # keeps the batch's sample indices (train.rng: sample)
                batch = IndexedBatch(batch[0].contiguous(memory_format=torch.channels_last), batch[1], batch.indices)
            yield batch

    return DataSource(batches=batches, batches_per_epoch=num_batches(len(train), batch_size, drop_last=True),
                      batch_size=lambda batch: len(batch[1]))


def load_data(recipe: Recipe):
    """The recipe's classification data (split selection fixed by data.split_seed, not the run seed)."""
    return load_data_spec(recipe.data)


def evaluate_classifier(model: nn.Module, data, recipe: Recipe, progress=None) -> dict[str, float]:
    """Clean and attack accuracies (percent) on the recipe's fixed selection of its eval split.

    ``progress(name, done, total)`` is called after every batch (see :data:`kdlab.robustness.accuracy.Progress`)."""
    from kdlab.robustness.attacks import AttackSpec
    from kdlab.robustness.sharded import evaluate_sharded

    spec = recipe.eval
    if spec.split == "val" and data.val is None:
        raise KdlabError("eval.split is val but the recipe has no validation split: set data.val_size")
    images, labels = test_selection(data.val if spec.split == "val" else data.test, spec.n, spec.seed)
    # eval.alpha and eval.steps configure PGD (the number every run reports); other attacks keep their
    # documented defaults (CW-inf 30 steps, AutoAttack's reference settings).
    attacks = [
        AttackSpec(name, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, seed=spec.seed) if name == "pgd"
        else AttackSpec(name, eps=spec.eps, seed=spec.seed)
        for name in spec.attacks
    ]
    results = evaluate_sharded(model, images, labels, attacks, batch_size=spec.batch_size, progress=progress,
                               precision=spec.precision)
    evaluation: dict[str, Any] = {f"{result.attack}_acc": result.accuracy for result in results}
    evaluation["eval_n"] = len(labels)
    evaluation["top_class_share"] = round(results[0].top_class_share, 2)
    evaluation["flag"] = results[0].flag  # "collapsed: robust accuracy meaningless (...)" when degenerate
    return evaluation


class ClassificationTask:
    name = "classification"

    def load_data(self, recipe: Recipe):
        return load_data(recipe)

    def num_classes(self, data) -> int:
        return data.num_classes

    def setup(self, recipe: Recipe, data, teacher: nn.Module | None) -> TrainingSetup:
        from kdlab.models.factory import build_model
        from kdlab.runtime.acceleration import prepare_models

        spec = recipe.trained_model
        device = recipe.torch_device()
        from kdlab.models.normalization import model_options

        options = model_options(spec, recipe.data.dataset, data.train.images)  # mean/std follow the data
        model = build_model("classification", spec.arch, data.num_classes, options).to(device)
        if teacher is not None:
            from kdlab.methods.registry import build_method

            teacher = teacher.to(device)
            method: nn.Module = build_method(recipe.method, model, teacher,
                                             image_shape=tuple(data.train.images.shape[1:]))
        else:
            from kdlab.methods.supervised import SupervisedTraining

            method = SupervisedTraining(model, recipe.train.adversarial)
        # channels-last: everything trained (student, connectors) and the teacher; compile: the two networks
        prepare_models(method, [model, teacher], recipe.train)
        return TrainingSetup(model=model, method=method, source=training_batches(data.train, recipe, device),
                             validate=validation(model, data, recipe),
                             num_classes=data.num_classes, classes=list(data.classes),
                             summary={"train_images": len(data.train), **training_cost(method)})

    def evaluate(self, model: nn.Module, data, recipe: Recipe, progress=None) -> dict[str, float]:
        return evaluate_classifier(model, data, recipe, progress=progress)

    def evaluate_checkpoint(self, target: EvalTarget, options: EvalOptions) -> EvalReport:
        from kdlab.tasks.classification_eval import evaluate_classifier_checkpoint

        return evaluate_classifier_checkpoint(target, options)
