"""Which images a run uses: the stratified, seeded subset / validation / test selection, and the evaluation sample.

``val_size`` images are held out of TRAIN (stratified, seeded; never from test), ``subset`` training images are
then chosen from the rest (stratified, seeded). Both are drawn from one seeded per-class permutation — val from
its end, the subset from its start — so the validation images do not depend on ``subset`` and the subset does
not depend on ``val_size`` (unless together they need almost every image). ``test_subset`` is a stratified,
seeded subset of the test split. Every classification loader chooses its images with :func:`plan_splits`
before decoding any, so only the chosen images are decoded where the dataset allows it.
"""

from __future__ import annotations

import hashlib

import torch

from kdlab.errors import KdlabError

__all__ = ["plan_splits", "stratified_split", "test_selection"]


def _derive_seed(seed: int, stream: str) -> int:
    digest = hashlib.sha256(f"kdlab:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _allocate(sizes: list[int], n: int, caps: list[int]) -> list[int]:
    """Split ``n`` over classes proportionally to ``sizes`` (largest remainder, ties -> lower class index),
    never giving a class more than its cap. Requires n <= sum(caps)."""
    total = sum(sizes)
    if n <= 0 or total == 0:
        return [0] * len(sizes)
    quotas = [n * s / total for s in sizes]
    counts = [min(int(q), c) for q, c in zip(quotas, caps)]
    order = sorted(range(len(sizes)), key=lambda k: (-(quotas[k] - int(quotas[k])), k))
    remaining = n - sum(counts)
    while remaining > 0:
        progressed = False
        for k in order:
            if remaining == 0:
                break
            if counts[k] < caps[k]:
                counts[k] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise AssertionError("allocation exceeds capacity")  # callers check n <= sum(caps)
    return counts


def stratified_split(labels: torch.Tensor, num_classes: int, subset: int | None, val_size: int,
                     seed: int, stream: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (sorted) of the chosen subset and of the held-out validation split, stratified by class.

    Per class, one seeded permutation: validation takes its last ``v_k`` entries, the subset its first ``s_k``.
    ``subset=None`` means every image not held out.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(_derive_seed(seed, stream))
    perms = []
    for k in range(num_classes):
        idx = torch.nonzero(labels == k).flatten()
        perms.append(idx[torch.randperm(len(idx), generator=generator)])
    sizes = [len(p) for p in perms]
    val_counts = _allocate(sizes, val_size, sizes)
    room = [s - v for s, v in zip(sizes, val_counts)]
    sub_counts = room if subset is None else _allocate(sizes, subset, room)
    empty = torch.zeros(0, dtype=torch.int64)
    chosen = torch.cat([p[:c] for p, c in zip(perms, sub_counts)] or [empty])
    held = torch.cat([p[len(p) - v:] for p, v in zip(perms, val_counts)] or [empty])
    return torch.sort(chosen).values, torch.sort(held).values


def plan_splits(dataset: str, train_labels: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                subset: int | None, val_size: int, test_subset: int | None, seed: int):
    """Indices of the training, validation and test images a loader keeps (sizes refused with the key to fix)."""
    n_train, n_test = len(train_labels), len(test_labels)
    if val_size >= n_train:
        raise KdlabError(f"data.val_size ({val_size}) leaves none of the {n_train} training images of {dataset} "
                         "for training: lower data.val_size")
    if subset is not None and subset + val_size > n_train:
        raise KdlabError(
            f"data.subset ({subset}) + data.val_size ({val_size}) is more than the {n_train} training images of "
            f"{dataset}: lower data.subset or data.val_size"
        )
    if test_subset is not None and test_subset > n_test:
        raise KdlabError(f"data.test_subset ({test_subset}) is more than the {n_test} test images of {dataset}: "
                         "lower it or leave it unset for the full test split")
    train_idx, val_idx = stratified_split(train_labels, num_classes, subset, val_size, seed, "train")
    if test_subset is None:
        test_idx = torch.arange(n_test)
    else:
        test_idx, _ = stratified_split(test_labels, num_classes, test_subset, 0, seed, "test")
    return train_idx, val_idx, test_idx


def test_selection(test_set, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of a fixed, seeded permutation (the same for every model)."""
    order = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(seed))[:n]
    return test_set.images[order].float().div(255), test_set.labels[order]

