"""Degenerate split sizes, refused before any run directory is created or any teacher is trained.

Checked once the recipe's data is loaded (``kdlab.runs.run.run_recipe`` calls :func:`check_data_sizes` right after
``task.load_data``): a training split smaller than one batch (classification drops the last incomplete batch,
so such a run would train on nothing; detection keeps it), a class without training images, a ``subset`` or
``test_subset`` larger than the data, and an explicit ``eval.n`` larger than the evaluation split. The
default ``eval.n`` (1000) is a cap: on a smaller split every image is evaluated and ``eval_n`` records how
many. What the recipe alone decides (``data.subset`` below one batch) is refused at load time instead
(:class:`kdlab.config.recipe.Recipe`).
"""

from __future__ import annotations

from typing import Any

from kdlab.errors import KdlabError


def _train_labels(data: Any, task: str) -> list[int] | None:
    if task == "classification":
        return [int(label) for label in data.train.labels.tolist()]
    return None


def check_data_sizes(recipe: Any, data: Any) -> None:
    """Raise :class:`KdlabError` (naming the key and the fix) when a split is too small for the recipe."""
    from kdlab.config.sections import EvalSpec

    spec = recipe.data
    name = spec.dataset if spec.root is None else f"{spec.dataset} {spec.root}"
    n_train = len(data.train)
    if spec.subset is not None and n_train < spec.subset:
        left = " left after data.val_size" if spec.val_size else ""
        raise KdlabError(f"data.subset ({spec.subset}) is more than the {n_train} training images of "
                         f"{name}{left}: lower data.subset or unset it")
    if n_train == 0:
        raise KdlabError(f"the training split of {name} is empty: check data.root, data.train_split and "
                         "data.subset")
    if recipe.task == "classification" and n_train < spec.batch_size:
        held = f" after data.val_size ({spec.val_size})" if spec.val_size else ""
        raise KdlabError(f"the training split of {name} has {n_train} images{held}, fewer than one batch "
                         f"(data.batch_size {spec.batch_size}), so no step would run: set data.batch_size "
                         f"to at most {n_train}")
    labels = _train_labels(data, recipe.task)
    if labels is not None:
        classes = list(data.classes)
        counts = [0] * len(classes)
        for label in labels:
            counts[label] += 1
        empty = [classes[k] for k, count in enumerate(counts) if count == 0]
        if empty:
            fix = (f"raise data.subset to at least {len(classes)}" if spec.subset is not None
                   else "add images to that class or remove its folder")
            raise KdlabError(f"class{'es' if len(empty) > 1 else ''} {', '.join(map(repr, empty[:5]))} "
                             f"{'have' if len(empty) > 1 else 'has'} no training images in {name}: {fix}")
    test = getattr(data, "test", None)
    if spec.test_subset is not None and test is not None and len(test) < spec.test_subset:
        raise KdlabError(f"data.test_subset ({spec.test_subset}) is more than the {len(test)} test images of "
                         f"{name}: lower it or unset it for the whole test split")
    evaluated = data.val if recipe.eval.split == "val" else test
    default_n = EvalSpec.model_fields["n"].default
    if evaluated is not None and recipe.eval.n != default_n and recipe.eval.n > len(evaluated):
        raise KdlabError(f"eval.n ({recipe.eval.n}) is more than the {len(evaluated)} images of the "
                         f"{recipe.eval.split} split of {name}: set eval.n to at most {len(evaluated)}")
