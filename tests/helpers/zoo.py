"""Checkpoints in RobustBench's file layout, with weights that a seed alone regenerates.

``tests/fixtures/robustbench_reference.pt`` (written by ``scripts/make_robustbench_fixture.py`` with the
``robustbench`` 1.1.1 architecture code: ``model_zoo/architectures/wide_resnet.py`` and ``resnet.py``) holds,
per architecture, the state-dict keys and shapes and the logits RobustBench's own forward gives for
:func:`seeded_weights` on :func:`seeded_images`; tests compare kdlab's loading of the same weights with them.
"""

import torch


def seeded_weights(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for every key, BN statistics included (variances positive), from ``seed`` alone."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if key.endswith("num_batches_tracked"):
            weights[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            weights[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith(("bn1.weight", "bn2.weight", "bn.weight", "running_mean")):
            weights[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod().item())) if len(shape) > 1 else 1
            weights[key] = torch.randn(shape, generator=generator) / fan_in ** 0.5
    return weights


def seeded_images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def save_zoo_checkpoint(model_dir, name: str, weights: dict, dataset: str = "cifar10", threat: str = "Linf",
                        wrap: str = "state_dict"):
    """``model_dir/dataset/threat/name.pt`` as the zoo stores it: {'state_dict': {'module.' + key: ...}}
    (``wrap='last'``: {'last': {...}}, Andriushchenko2020Understanding; ``'plain'``: the bare state dict)."""
    from pathlib import Path

    path = Path(model_dir) / dataset / threat / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if wrap == "state_dict":
        payload = {"state_dict": {f"module.{k}": v for k, v in weights.items()}}
    elif wrap == "last":
        payload = {"last": dict(weights)}
    else:
        payload = dict(weights)
    torch.save(payload, path)
    return path
