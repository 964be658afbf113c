"""Robust accuracy with the images shared out over the processes of a multi-process run (torchrun).

Each rank evaluates a contiguous share of the images (:func:`kdlab.runtime.distributed.shard_range`) with
:func:`kdlab.robustness.accuracy.evaluate_robustness` at its global positions (``index_offset``), and the per-image
results are gathered in order, so every number is computed on all n images:

* ``clean``, ``fgsm``, ``pgd`` and ``cw`` equal the single-process numbers: their random starts are drawn per
  sample from (seed, restart, global index) (:mod:`kdlab.robustness.seeded_pgd`) and the model is in eval mode, so no
  image's result depends on the others in its batch;
* ``autoattack`` and the APGD/FAB/Square family seed each batch, as the reference does: on a share the
  batches hold other images, so the per-image results may differ slightly from one process's (the count is
  still over all n images; its components' counts are added over ranks).

The collapse check runs on the gathered clean predictions of all images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.robustness.accuracy import AttackResult, Progress, collapse_reason, evaluate_robustness
from kdlab.robustness.attacks import AttackSpec
from kdlab.runtime import distributed

__all__ = ["evaluate_sharded"]


def _portable(result: AttackResult) -> dict[str, Any]:
    n = result.n
    return {
        "robust": result.robust.cpu(),
        "predictions": result.predictions.cpu() if result.predictions is not None else None,
        "components": {name: round(percent * n / 100) for name, percent in result.components.items()},
        "stats": (result.max_perturbation, result.min_value, result.max_value),
        "wall_s": result.wall_s,
        "adv": result.adv_images,
    }


def _merge(first: AttackResult, parts: list[dict[str, Any]], labels: Tensor) -> AttackResult:
    robust = torch.cat([part["robust"] for part in parts])
    predictions = torch.cat([part["predictions"] for part in parts])
    n = robust.numel()
    share, collapsed = collapse_reason(predictions, labels, first.num_classes)
    wall = max(part["wall_s"] for part in parts)
    components = {name: 100.0 * sum(part["components"][name] for part in parts) / n for name in first.components}
    advs = [part["adv"] for part in parts]
    return replace(
        first, n=n, robust=robust, accuracy=100.0 * float(robust.sum()) / n,
        clean_accuracy=100.0 * float((predictions == labels.cpu()).sum()) / n, components=components,
        max_perturbation=max(part["stats"][0] for part in parts), min_value=min(part["stats"][1] for part in parts),
        max_value=max(part["stats"][2] for part in parts), wall_s=wall,
        images_per_s=n / wall if wall > 0 else float("inf"), top_class_share=share, collapsed=collapsed,
        predictions=predictions, adv_images=torch.cat(advs) if all(a is not None for a in advs) else None,
    )


def evaluate_sharded(model: nn.Module, images: Tensor, labels: Tensor, attacks: Sequence[AttackSpec | str],
                     batch_size: int = 256, progress: Progress | None = None, **kwargs) -> list[AttackResult]:
    """:func:`kdlab.robustness.accuracy.evaluate_robustness` over this rank's share, merged over ranks (see the module
    docstring); in one process (or with fewer images than processes) exactly that function."""
    n = int(labels.shape[0])
    if distributed.world_size() == 1 or n < distributed.world_size():
        return evaluate_robustness(model, images, labels, attacks, batch_size, progress, **kwargs)
    lo, hi = distributed.shard_range(n)
    local = distributed.agree(lambda: evaluate_robustness(model, images[lo:hi], labels[lo:hi], attacks, batch_size,
                                                          progress, index_offset=lo, **kwargs))
    gathered = distributed.all_gather([_portable(result) for result in local])
    labels = labels.long().cpu()
    return [_merge(result, [shard[i] for shard in gathered], labels) for i, result in enumerate(local)]
