"""``kdlab eval`` of a classifier: clean and attack accuracy of a checkpoint on a fixed, seeded test selection.

Every row names the model (path and SHA-256 prefix of the checkpoint), the attack and its full
configuration (eps, alpha, steps, restarts, n, seed), the test set (dataset, root and a digest of the
evaluated images), the accuracy, wall time, images/s, the sanity-check result and the code version.
Re-evaluating an identical configuration appends a new row; readers take the latest
(:func:`kdlab.report.tables.latest_eval_rows`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import torch
from pydantic import ValidationError

from kdlab.config.names import DATASETS
from kdlab.config.recipe import validate_recipe
from kdlab.config.sections import DataSpec
from kdlab.errors import KdlabError
from kdlab.results import append_rows, provenance
from kdlab.tasks.base import EvalOptions, EvalReport, EvalTarget


def parse_data_option(text: str) -> DataSpec:
    """``--data NAME[:ROOT]``, e.g. ``embedded``, ``cifar10:~/data``, ``imagefolder:../shared/data/cifar10-jpeg``."""
    name, _, root = text.partition(":")
    try:
        return DataSpec(dataset=name, root=root or None)
    except ValidationError:
        raise KdlabError(
            f"--data '{text}': use NAME[:ROOT] with NAME one of {', '.join(DATASETS)}"
        ) from None


def _data_spec(target: EvalTarget, data: str | None) -> DataSpec:
    if data is not None:
        return parse_data_option(data)
    if target.recipe is None:
        raise KdlabError(
            f"{target.checkpoint} has no recipe.yaml beside it: say which test set to use with --data, "
            "e.g. --data embedded or --data imagefolder:../shared/data/cifar10-jpeg"
        )
    return target.recipe.data


DEFAULT_ATTACKS = ["clean", "pgd"]


NORMALISATIONS = ("dataset", "imagenet", "none")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalisation(choice: str, dataset: str) -> tuple[tuple, tuple, str]:
    """``(mean, std, label)`` for an external checkpoint: the dataset's published statistics
    (:data:`kdlab.models.normalization.PUBLISHED`; CIFAR-10's for a dataset without them), ImageNet's (torchvision
    pretrained weights), or none."""
    from kdlab.models.normalization import PUBLISHED

    if choice == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD, "imagenet"
    if choice == "none":
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "none"
    if choice != "dataset":
        raise KdlabError(f"--norm '{choice}': choose one of {', '.join(NORMALISATIONS)}")
    label = "cifar100" if dataset == "cifar100" else "cifar10"
    return (*PUBLISHED[label], label)


def evaluate_classifier_checkpoint(target: EvalTarget, options: EvalOptions) -> EvalReport:
    """Evaluate a classifier checkpoint (a kdlab one, or with ``options.arch`` any plain state dict of that
    architecture -- a kdlab name or ``torchvision:<name>`` -- wrapped with the test set's normalisation
    ``options.norm``) and append its rows to ``options.out``."""
    from kdlab.data.loaders import load_data_spec
    from kdlab.data.splits import test_selection
    from kdlab.models.files import file_digest, load_model
    from kdlab.robustness.accuracy import eps_sweep as sweep
    from kdlab.robustness.accuracy import evaluate_robustness
    from kdlab.robustness.attacks import AttackSpec
    from kdlab.robustness.sanity import sanity_check

    o, resolved = options, target
    attacks, eps, alpha, steps, restarts = o.attacks, o.eps, o.alpha, o.steps, o.restarts
    n, batch_size, seed, data, out, progress = o.n, o.batch_size, o.seed, o.data, o.out, o.progress
    arch, num_classes, norm, sanity, eps_sweep = o.arch, o.num_classes, o.norm, o.sanity, o.eps_sweep
    data_spec = _data_spec(resolved, data)
    base = resolved.recipe or validate_recipe({"model": {"arch": "resnet_small"}})
    dataset = load_data_spec(data_spec)
    norm_label = None
    if arch is not None and arch.startswith("robustbench:"):  # the zoo's file format; normalisation inside
        from kdlab.models.zoo import load_zoo_file

        model = load_zoo_file(arch.split(":", 1)[1], resolved.checkpoint)
        norm_label, payload = "zoo", {"arch": arch}
    elif arch is not None:
        from kdlab.models.files import load_external_model

        mean, std, norm_label = normalisation(norm, data_spec.dataset)
        model = load_external_model(resolved.checkpoint, arch, num_classes=num_classes, mean=mean, std=std)
        with torch.no_grad():
            classes = model(dataset.test.images[:1].float().div(255)).shape[1]
        if classes != dataset.num_classes:
            raise KdlabError(f"{resolved.checkpoint} as {arch} predicts {classes} classes but "
                             f"{data_spec.dataset} has {dataset.num_classes}: pass --num-classes "
                             f"{dataset.num_classes} or another --data")
        payload = {"arch": arch}
    else:
        model, payload = load_model(resolved.checkpoint, expected_classes=dataset.num_classes)
    model = model.to(base.torch_device())
    images, labels = test_selection(dataset.test, min(n, len(dataset.test)), seed)

    def spec_for(name: str) -> AttackSpec:
        spec = AttackSpec(name, seed=seed)
        overrides = {"eps": eps, "alpha": alpha, "steps": steps, "restarts": restarts}
        return replace(spec, **{k: v for k, v in overrides.items() if v is not None})

    specs = [spec_for(name) for name in dict.fromkeys(attacks or DEFAULT_ATTACKS)]
    torch.manual_seed(seed)
    if eps_sweep:
        results = sweep(model, images, labels, [s for s in specs if s.name != "clean"] or specs, eps_sweep,
                        batch_size=batch_size, progress=progress)
    else:
        results = evaluate_robustness(model, images, labels, specs, batch_size=batch_size, progress=progress)

    violations: list[str] = []
    sanity_text = "not run"
    if sanity:
        check_eps = eps if eps is not None else 8 / 255
        checked = sanity_check(model, images, labels, eps=check_eps, batch_size=batch_size, seed=seed,
                               progress=progress)
        violations, sanity_text = [str(v) for v in checked], checked.summary()  # summary names the budgets
    context = {
        "model": resolved.label,
        "checkpoint": str(resolved.checkpoint),
        "checkpoint_sha256": file_digest(resolved.checkpoint),
        "arch": payload.get("arch"),
        "checkpoint_kind": "external" if arch is not None else "kdlab",
        "normalisation": norm_label or "in checkpoint",
        "dataset": data_spec.dataset,
        "data_root": data_spec.root or "",
        "test_sha256": test_set_digest(images, labels),
        "sanity": sanity_text,
    }
    info = provenance()
    rows = [{**context, **result.row(), "git_commit": info["git_commit"], "torch": info["versions"]["torch"],
             "evaluated_at": info["finished_at"]} for result in results]
    append_rows(out, rows)
    plot = None
    if eps_sweep:
        import pandas as pd

        from kdlab.report.plots import plot_robustness_curve

        plot = out.parent / sweep_plot_name(resolved.label, specs, eps_sweep, len(labels), seed, data_spec)
        title = sweep_title(resolved.label, specs, len(labels), seed, data_spec)
        plot_robustness_curve(pd.DataFrame(rows), plot, title=title)
    return EvalReport(rows, violations, plot)


def test_set_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 prefix of the evaluated images (as 8-bit values) and labels: rows on different test sets --
    another root, subset or seed -- never share it, whatever the dataset is called."""
    digest = hashlib.sha256(images.mul(255).round().to(torch.uint8).cpu().numpy().tobytes())
    digest.update(labels.to(torch.int64).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text).strip("_") or "x"


def sweep_plot_name(label: str, specs, eps_list: list[float], n: int, seed: int, data: DataSpec) -> str:
    """``robustness-<model>-<attacks>-eps<lo>-<hi>-<data>-n<n>-<hash>.png``: the attacks, eps range, test set
    and n in words, and a hash of every setting (attack steps, alpha, restarts, each eps, seed, data root), so
    two sweeps with different settings never write one file and the same sweep always writes the same one."""
    attacks = "-".join(dict.fromkeys(spec.name for spec in specs if spec.name != "clean")) or "clean"
    scaled = [eps * 255 for eps in eps_list]
    data_name = data.dataset + (f"-{Path(data.root).name}" if data.root else "")
    settings = [[spec.name, spec.alpha, spec.steps, spec.restarts] for spec in specs]
    payload = json.dumps([settings, [float(e) for e in eps_list], n, seed, data.dataset, data.root],
                         default=str)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:6]
    return _slug(f"robustness-{label.replace('/', '_')}-{attacks}-eps{min(scaled):g}-{max(scaled):g}-"
                 f"{data_name}-n{n}-{digest}") + ".png"


def sweep_title(label: str, specs, n: int, seed: int, data: DataSpec) -> str:
    """The model, the test set and n, and each attack's settings (steps, step size, restarts) and seed."""
    from kdlab.config.units import format_eps

    def setting(spec) -> str:
        resolved = spec.resolved()
        alpha = f"α {format_eps(spec.alpha)}" if spec.alpha is not None else "α default"
        restarts = f"{resolved.restarts} restart{'s' if resolved.restarts != 1 else ''}"
        return f"{spec.name} {resolved.steps} steps, {alpha}, {restarts}"

    root = f" ({data.root})" if data.root else ""
    attacks = "; ".join(setting(spec) for spec in specs if spec.name != "clean")
    return f"{label}: accuracy vs ε, {n} {data.dataset}{root} test images, seed {seed}\n{attacks}"


