"""``kdlab eval`` of a classifier: clean and attack accuracy of a checkpoint on a fixed, seeded test selection.

Every row names the model (path and SHA-256 prefix of the checkpoint), the attack and its full
configuration (eps, alpha, steps, restarts, n, seed), the test set (dataset, root and a digest of the
evaluated images), the accuracy, wall time, images/s, the sanity-check result and the code version.
Each row is appended as soon as its attack finishes, so Ctrl-C or a crash keeps every finished attack. A
configuration already recorded (:data:`IDENTITY`) is skipped on a rerun; ``--force`` recomputes it and appends a
new row, and readers take the latest (:func:`kdlab.report.tables.latest_eval_rows`).
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
from kdlab.results import append_rows, provenance, results_folder
from kdlab.tasks.base import EvalInterrupted, EvalOptions, EvalReport, EvalTarget, refuse_unwritable


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


IDENTITY = ("checkpoint_sha256", "arch", "normalisation", "dataset", "data_root", "test_sha256",
            "attack", "eps", "alpha", "steps", "restarts", "n", "seed")
"""The columns that make two rows one measurement: the checkpoint (file digest; architecture and normalisation
for an external one), the test images (dataset, root and the digest of the selected images and labels, which
covers n, the seed's order, subset and data) and the attack's full configuration (eps, step size, steps,
restarts, seed). A rerun skips a configuration whose identity is on record (``--force`` recomputes)."""

NUMERIC = ("eps", "eps_255", "alpha", "steps", "restarts", "seed", "n", "clean_accuracy", "accuracy",
           "robust_count", "max_linf", "adv_min", "adv_max", "wall_s", "images_per_s", "top_class_share")


def _text(value) -> str:
    return "" if value is None else str(value)  # as the CSV writer writes it (floats: repr, exact)


def row_identity(row: dict) -> tuple[str, ...]:
    return tuple(_text(row.get(column)) for column in IDENTITY)


def _typed(row: dict[str, str]) -> dict:
    """A recorded row with its numeric cells as numbers (for the result table and the plot)."""
    typed: dict = dict(row)
    for column in NUMERIC:
        text = row.get(column)
        if text not in (None, ""):
            try:
                typed[column] = int(text) if text.lstrip("-").isdigit() else float(text)
            except ValueError:
                pass
    return typed


def _describe(spec) -> str:
    from kdlab.config.units import format_eps

    steps = f" ({spec.steps} step{'s' if spec.steps != 1 else ''})" if spec.steps else ""
    return f"{spec.name} eps {format_eps(spec.eps)}{steps}" if spec.name != "clean" else "clean"


def evaluate_classifier_checkpoint(target: EvalTarget, options: EvalOptions) -> EvalReport:
    """Evaluate a classifier checkpoint (a kdlab one, or with ``options.arch`` any plain state dict of that
    architecture -- a kdlab name or ``torchvision:<name>`` -- wrapped with the test set's normalisation
    ``options.norm``) and append its rows to ``options.out``, each as soon as its attack finishes.

    A configuration already recorded in ``options.out`` (same :data:`IDENTITY`) is skipped, said in one line
    through ``options.notify``, and its recorded row is reported (``options.force`` recomputes). Each AutoAttack
    component's expected time is told after its first batch, the sanity checks' after their first images.
    Ctrl-C raises :class:`~kdlab.tasks.base.EvalInterrupted`, which says how many rows were kept."""
    from kdlab.config.units import format_clock, format_eps
    from kdlab.data.loaders import load_data_spec
    from kdlab.data.splits import test_selection
    from kdlab.models.files import file_digest, load_model
    from kdlab.results import now, read_rows
    from kdlab.robustness.accuracy import evaluate_specs, recorded_result, setting_columns, sweep_specs
    from kdlab.robustness.attacks import AttackSpec
    from kdlab.robustness.sanity import sanity_check

    o, resolved = options, target
    attacks, eps, alpha, steps, restarts = o.attacks, o.eps, o.alpha, o.steps, o.restarts
    n, batch_size, seed, data, out, progress = o.n, o.batch_size, o.seed, o.data, o.out, o.progress
    arch, num_classes, norm, sanity, eps_sweep = o.arch, o.num_classes, o.norm, o.sanity, o.eps_sweep
    notify = o.notify or (lambda text: None)
    data_spec = _data_spec(resolved, data)
    base = resolved.recipe or validate_recipe({"model": {"arch": "resnet_small"}})
    dataset = load_data_spec(data_spec)
    images, labels = test_selection(dataset.test, min(n, len(dataset.test)), seed)

    def spec_for(name: str) -> AttackSpec:
        spec = AttackSpec(name, seed=seed)
        overrides = {"eps": eps, "alpha": alpha, "steps": steps, "restarts": restarts}
        return replace(spec, **{k: v for k, v in overrides.items() if v is not None})

    specs = [spec_for(name) for name in dict.fromkeys(attacks or DEFAULT_ATTACKS)]
    plot = None
    if eps_sweep:
        plot = out.parent / sweep_plot_name(resolved.label, specs, eps_sweep, len(labels), seed, data_spec)
        refuse_unwritable(plot, "the robustness-curve plot")  # its folder was checked with --out's
        planned = sweep_specs([s for s in specs if s.name != "clean"] or specs, eps_sweep)
    else:
        planned = specs
    for spec in planned:
        spec.resolved()  # a bad setting (e.g. --steps with autoattack): one line, before the model is loaded
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
    }
    info = provenance(diffs=results_folder(out))  # a dirty tree's patch: <results>/diffs/<git_diff_sha256>.patch
    count = len(labels)

    # What is on record already: the latest row of each identity, with its row number (data rows from 1).
    recorded: dict[tuple[str, ...], tuple[int, dict[str, str]]] = {}
    if not o.force:
        for number, row in enumerate(read_rows(out), start=1):
            recorded[row_identity(row)] = (number, row)

    appended: dict[tuple[str, ...], dict] = {}  # the rows this call appended, by identity

    def identity_of(spec) -> tuple[str, ...]:
        r = spec.resolved()
        return row_identity({**context, **setting_columns(r.name, r.eps, r.alpha, r.steps, r.restarts, r.seed,
                                                          count)})

    def skipped(spec, number: int, what: str = "") -> None:
        notify(f"{what}{_describe(spec.resolved())}: already in {out} (row {number}), skipped")

    kept: list[str] = []
    attacks_run = 0

    def append(row: dict, label: str, attack: bool = True) -> None:
        nonlocal attacks_run
        append_rows(out, [row])
        appended[row_identity(row)] = row
        kept.append(label)
        attacks_run += attack

    def record(sanity_text: str):
        def done(result) -> None:
            append({**context, "sanity": sanity_text, **result.row(), "git_commit": info["git_commit"],
                    "git_diff_sha256": info["git_diff_sha256"],
                    "torch": info["versions"]["torch"], "evaluated_at": now()}, result.label)
        return done

    def estimate(what: str, probe: int, seconds: float, total: int) -> None:
        rate = probe / seconds if seconds > 0 else float("inf")
        shown = f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"
        notify(f"{what}: ~{shown} img/s measured on the first {probe} images, expected "
               f"{format_clock(seconds * total / probe)} for {total} images")

    main_sanity = "see the row with attack=sanity" if sanity else "not run"
    known: list[dict | None] = []
    for spec in planned:
        found = recorded.get(identity_of(spec))
        if found is not None:
            skipped(spec, found[0])
        known.append(_typed(found[1]) if found is not None else None)
    todo = [spec for spec, row in zip(planned, known) if row is None]
    violations: list[str] = []
    verdict_text = None
    try:
        torch.manual_seed(seed)
        if todo:
            evaluate_specs(model, images, labels, todo, batch_size, progress, zero_from_clean=bool(eps_sweep),
                           on_result=record(main_sanity), on_estimate=estimate)
        rows = [row if row is not None else appended[identity_of(spec)] for spec, row in zip(planned, known)]
        if sanity:
            check_eps = eps if eps is not None else 8 / 255

            def sanity_recorded(spec):
                if identity_of(spec) in appended:  # measured a moment ago by the attacks asked for
                    notify(f"sanity check {_describe(spec.resolved())}: measured above, reused")
                    return recorded_result(appended[identity_of(spec)])
                found = recorded.get(identity_of(spec))
                result = recorded_result(found[1]) if found is not None else None
                if result is not None:
                    skipped(spec, found[0], "sanity check ")
                return result

            # this evaluation's own attacks at the checks' eps: the black-box check compares with the strongest
            same = [recorded_result({k: str(v) for k, v in row.items()}) for row in rows
                    if abs(float(row["eps"]) - check_eps) < 1e-12 and int(row["n"]) == count]
            checked = sanity_check(model, images, labels, eps=check_eps, batch_size=batch_size, seed=seed,
                                   progress=progress, on_result=record("a sanity-check attack"),
                                   recorded=sanity_recorded, on_estimate=estimate,
                                   whitebox=[result for result in same if result is not None])
            violations = [str(v) for v in checked]
            verdict_text = checked.summary()
            verdict = {**context, "sanity": checked.summary(),
                       **setting_columns("sanity", check_eps, None, 0, 0, seed, count),
                       "eps_255": round(check_eps * 255, 4), "git_commit": info["git_commit"],
                       "git_diff_sha256": info["git_diff_sha256"],
                       "torch": info["versions"]["torch"], "evaluated_at": now()}
            found = recorded.get(row_identity(verdict))
            if found is not None and found[1].get("sanity") == verdict["sanity"]:
                notify(f"sanity verdict eps {format_eps(check_eps)}: already in {out} (row {found[0]}), skipped")
            else:
                append(verdict, "the sanity verdict", attack=False)
    except KeyboardInterrupt:
        if kept:
            raise EvalInterrupted(
                f"interrupted: {len(kept)} row{'s' if len(kept) != 1 else ''} of finished attacks kept in {out} "
                f"({', '.join(kept)}); rerun the same command to go on: recorded attacks are skipped") from None
        raise EvalInterrupted(f"interrupted: no attack had finished, nothing was appended to {out}; rerun the "
                              "same command to evaluate") from None
    if eps_sweep:
        import pandas as pd

        from kdlab.report.plots import plot_robustness_curve

        title = sweep_title(resolved.label, specs, count, seed, data_spec)
        plot_robustness_curve(pd.DataFrame(rows), plot, title=title)
    return EvalReport(rows, violations, plot, appended=len(kept), skipped=len(planned) - len(todo),
                      sanity=verdict_text, attacks_run=attacks_run)


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


