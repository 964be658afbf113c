"""``kdlab eval``: clean and adversarial accuracy (or COCO AP) of a run, a checkpoint or a zoo model, appended
to a CSV. The ``--attack`` and ``--data`` help lists the names of :mod:`kdlab.config.names`."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlab.cli.command import friendly
from kdlab.cli.options import THREADS, set_threads
from kdlab.config.names import ATTACKS, DATASETS


@friendly
def eval_(
    target: Path = typer.Argument(
        ..., help="A run directory (uses its best.pt and recipe), a model checkpoint, robustbench:NAME "
                  "(a RobustBench zoo model read from --model-dir; test set CIFAR-10 unless --data), or an ablation "
                  "table results/ablations/X.csv: every run of it (default --attack pgd, cw, autoattack), the "
                  "columns written into the table."),
    attack: list[str] | None = typer.Option(
        None, "--attack", show_default=False,
        help=f"Repeatable: {', '.join(ATTACKS)} "
             "(default clean and pgd; a detection run is scored by COCO AP, without attacks)."),
    eps: str | None = typer.Option(None, "--eps", help="Linf budget, e.g. 8/255 or 0.0314 (default 8/255)."),
    alpha: str | None = typer.Option(None, "--alpha", help="Step size for pgd/cw/fgsm (default eps/4; fgsm: eps)."),
    steps: int | None = typer.Option(None, "--steps", help="Iterations (pgd 20, cw 30, apgd 100; square: queries)."),
    restarts: int | None = typer.Option(None, "--restarts", help="Random restarts (default 1)."),
    n: int = typer.Option(1000, "--n", min=1, help="Test images, taken in a fixed, seeded order."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images per attack batch (memory stays flat)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the image order and the attacks' random starts (a "
                                               "table's runs: each run's eval.seed)."),
    data: str | None = typer.Option(
        None, "--data", help=f"Test set NAME[:ROOT] instead of the run's, NAME one of {', '.join(DATASETS)}, "
                             "e.g. imagefolder:../shared/data/cifar10-jpeg."),
    out: Path = typer.Option(Path("results/eval.csv"), "--out", help="CSV the rows are appended to."),
    sanity: bool = typer.Option(False, "--sanity", help="Also run the sanity checks (eps=0, bounds, monotone, ...)."),
    eps_sweep: str | None = typer.Option(
        None, "--eps-sweep", help="Comma-separated eps list, e.g. 0,2/255,4/255,8/255,16/255; also writes a PNG."),
    arch: str | None = typer.Option(
        None, "--arch", help="TARGET is a plain state dict of this architecture (a checkpoint kdlab did not "
                             "write): resnet_small, preact_resnet18, wrn-34-10, ... or torchvision:<name>, "
                             "e.g. torchvision:resnet18. Needs --data."),
    num_classes: int | None = typer.Option(
        None, "--num-classes", min=1,
        help="With --arch: output classes (default: read off the last linear layer)."),
    norm: str = typer.Option(
        "dataset", "--norm", help="With --arch: input normalisation wrapped around the model: dataset (its "
                                  "default mean/std), imagenet (torchvision pretrained weights) or none."),
    model_dir: Path = typer.Option(
        Path("models"), "--model-dir", help="robustbench:NAME: folder of <dataset>/<threat_model>/<NAME>.pt."),
    force: bool = typer.Option(
        False, "--force", help="Recompute attacks already recorded in --out (default: skip them and show their "
                               "recorded numbers)."),
    threads: int | None = THREADS,
) -> None:
    """Measure clean and adversarial accuracy (torchattacks; standard AutoAttack) and append rows to a CSV.

    TARGET is a run directory, a kdlab checkpoint, with --arch any plain state dict, or an ablation table (the
    final evaluation of every run in it; nothing is retrained)."""
    from rich.markup import escape

    from kdlab.config.units import parse_eps, parse_eps_list
    from kdlab.robustness.attacks import attack_def
    from kdlab.runs.console import AttackProgress, console, error_console, results_table
    from kdlab.runs.evaluate import evaluate_target
    from kdlab.tasks.base import EvalInterrupted

    # Every option is checked before any data or model is loaded.
    for name in attack or []:
        attack_def(name)
    eps_value = parse_eps(eps, "--eps") if eps is not None else None
    alpha_value = parse_eps(alpha, "--alpha") if alpha is not None else None
    sweep = parse_eps_list(eps_sweep, "--eps-sweep") if eps_sweep else None
    set_threads(threads)
    if target.suffix == ".csv":
        _evaluate_table(target, attack, n, out, sanity, threads, {
            "--eps": eps, "--alpha": alpha, "--steps": steps, "--restarts": restarts, "--data": data,
            "--eps-sweep": eps_sweep, "--arch": arch, "--num-classes": num_classes,
            "--norm": None if norm == "dataset" else norm, "--seed": seed or None,
            "--batch-size": None if batch_size == 256 else batch_size, "--force": force or None})
        return
    try:
        with AttackProgress() as progress:
            report = evaluate_target(
                target, attack, eps=eps_value, alpha=alpha_value, steps=steps, restarts=restarts, n=n,
                batch_size=batch_size, seed=seed, data=data, out=out, sanity=sanity, eps_sweep=sweep,
                progress=progress, arch=arch, num_classes=num_classes, norm=norm, model_dir=model_dir, force=force,
                notify=progress.note,
            )
    except EvalInterrupted as stop:  # what was kept, where, and how to go on
        error_console.print(stop.message, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    columns = [c for c in ("attack", "eps_255", "steps", "n", "clean_accuracy", "accuracy", "AP", "AP50",
                           "images_per_s", "components")
               if any(c in row for row in report.rows)]
    columns += ["flag"] if any(row.get("flag") for row in report.rows) else []
    console.print(results_table(f"{report.rows[0]['model']}: results (%)", report.rows, columns))
    for violation in report.violations:
        console.print(f"[bold yellow]sanity warning:[/] {escape(violation)}")  # "[check]" is not markup
    if report.plot:
        console.print(f"wrote {report.plot}")
    appended = len(report.rows) if report.appended is None else report.appended
    skipped = f" ({report.skipped} already recorded, skipped; --force recomputes)" if report.skipped else ""
    console.print(f"appended {appended} row{'s' if appended != 1 else ''} to {out}{skipped}", highlight=False)


def _evaluate_table(table, attack, n, out, sanity, threads, given) -> None:
    """``kdlab eval TABLE.csv``: :func:`kdlab.runs.final_eval.evaluate_table`, progress and its summary printed."""
    from kdlab.config.units import format_clock
    from kdlab.errors import KdlabError
    from kdlab.runs.console import AttackProgress, console, error_console
    from kdlab.runs.final_eval import evaluate_table
    from kdlab.tasks.base import EvalInterrupted

    extra = [option for option, value in given.items() if value is not None]
    if extra:
        raise KdlabError(f"{', '.join(extra)}: a table's runs are evaluated at their own recorded settings (eps, "
                         "seed, data, batch size) with the protocol's attacks: drop them, or evaluate one run with "
                         "kdlab eval RUN_DIR")
    try:
        with AttackProgress() as progress:
            summary = evaluate_table(table, attack or [], n, sanity, threads or 1, out=out, progress=progress,
                                     notify=progress.note)
    except EvalInterrupted as stop:
        error_console.print(stop.message, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    skipped = f", {summary['skipped']} diverged row(s) skipped" if summary["skipped"] else ""
    console.print(f"{table}: {summary['runs']} runs of {summary['rows']} rows -- {summary['evaluated']} evaluated now, "
                  f"{summary['cached']} already evaluated{skipped} ({format_clock(summary['seconds'])}); attack rows "
                  f"in {out}", highlight=False, soft_wrap=True)
    if summary["sanity_failed"]:
        console.print(f"[bold yellow]sanity failed on:[/] {'; '.join(summary['sanity_failed'])} (see the table's "
                      "sanity column)", soft_wrap=True)
    console.print(f"wrote {summary['markdown']} and {summary['plot']}", highlight=False, soft_wrap=True)
