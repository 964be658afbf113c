"""The kdlab command line: parse, call one function, print. No experiment logic lives here."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from typer.core import TyperCommand

from kdlab.errors import KdlabError, ReportedElsewhere

app = typer.Typer(
    help="kdlab: knowledge-distillation experiments from YAML recipes — MixACM robustness transfer, "
    "structural KD for detection, and trustworthy robustness evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

class KdlabCommand(TyperCommand):
    """Help that reads like the README: ``Usage: kdlab train [OPTIONS] RECIPE`` (not ``{recipe}``), and on/off
    options such as ``--resume`` and ``--force`` shown as bare flags (no ``<bool>`` value)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if param.param_type_name == "option" and getattr(param, "is_flag", False):
                param.metavar = ""
            elif param.param_type_name == "argument" and param.metavar is None:
                param.metavar = param.name.upper()
        return params

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [piece.replace("{", "").replace("}", "") for piece in super().collect_usage_pieces(ctx)]


SET_HELP = "Override a recipe key, e.g. --set train.epochs=5 (repeatable; type-checked like the file)."
THREADS_HELP = "Torch CPU threads (default: one per core). On a machine shared with other jobs use 1 per process."


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# What Ctrl-C leaves behind, per command, and how to go on.
INTERRUPTED = {
    "train": "interrupted: the last finished epoch is kept; rerun with --resume to continue",
    "distill": "interrupted: the last finished epoch is kept; rerun with --resume to continue",
    "ablate": "interrupted: finished cells and the last finished epoch of the others are kept; "
              "rerun the same command to continue",
    "eval_": "interrupted: no rows were appended; rerun the command to evaluate again",
}


def friendly(command: Callable) -> Callable:
    """Turn user mistakes (KdlabError) into one line on stderr and exit code 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KdlabError as error:
            from rich.markup import escape

            from kdlab.runs.console import error_console

            if isinstance(error, ReportedElsewhere):  # another process of a torchrun group printed it
                raise typer.Exit(2) from None
            for line in str(error).splitlines() or [""]:  # several problems (the plan check): one line each
                error_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            from kdlab.runs.console import error_console

            if os.environ.get("RANK", "0") == "0":  # under torchrun every process is interrupted: rank 0 says so
                error_console.print(INTERRUPTED.get(command.__name__, "interrupted"))
            raise typer.Exit(130) from None

    return wrapper


def _print_run(outcome, role: str) -> None:
    from kdlab.config.names import HEADLINE_METRICS
    from kdlab.config.units import format_eps
    from kdlab.runs.console import console, results_table

    summary = outcome.summary
    metrics = [m for m in HEADLINE_METRICS if summary.get(m) is not None]
    rows = []
    if summary.get("teacher"):
        rows.append({"role": "teacher", "run": summary["teacher"],
                     **{m: summary.get(f"teacher_{m}") for m in metrics}})
    rows.append({"role": role, "run": summary["run_dir"], **{m: summary.get(m) for m in metrics}})
    note = " (finished earlier: reused; --force retrains)" if outcome.reused else ""
    if summary.get("task") == "detection":
        title = f"{summary['name']}: COCO box AP (%) on {summary.get('eval_n')} {summary.get('eval_split')} images{note}"
    else:
        title = (f"{summary['name']}: accuracy (%) on {summary.get('eval_n')} {summary.get('eval_split')} images, "
                 f"PGD-{summary.get('eval_steps')} eps {format_eps(summary.get('eval_eps', 0))}{note}")
    console.print(results_table(title, rows, ["role", "run", *metrics]))
    if summary.get("flag"):
        console.print(f"[bold red]{role} {summary['flag']}[/]", highlight=False)


def _run(recipe_path: Path, overrides: list[str], resume: bool, force: bool, expect_distill: bool,
         threads: int | None) -> None:
    from kdlab.runs.console import RichReporter
    from kdlab.check.launch import run_command

    _set_threads(threads)
    outcome = run_command(recipe_path, overrides, resume=resume, force=force, expect_distill=expect_distill,
                          reporter_factory=RichReporter, command=" ".join(sys.argv))
    if outcome is not None:  # None on the other processes of a torchrun group: rank 0 prints
        _print_run(outcome, "student" if expect_distill else "model")


@app.command(cls=KdlabCommand)
@friendly
def distill(
    recipe: Path = typer.Argument(
        ..., help="Distillation recipe (YAML with student: and teacher:) or a shipped recipe's name, e.g. quickstart."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Discard an existing run with the same recipe and retrain."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Distil a student from a teacher (trained first from its recipe if needed), evaluate it, append a row.

    Writes results/runs/<name>-<key>/ (recipe.yaml, run.json, metrics.csv, best.pt, last.pt,
    summary.json) and one row in results/runs.csv; prints clean and PGD-20 accuracy of teacher and student.
    """
    _run(recipe, set_, resume, force, expect_distill=True, threads=threads)


@app.command(cls=KdlabCommand)
@friendly
def train(
    recipe: Path = typer.Argument(
        ..., help="Training recipe (YAML with model:) or a shipped recipe's name, e.g. quickstart_teacher."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Discard an existing run with the same recipe and retrain."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Train one model (standard, PGD-AT, FGSM-RS or TRADES adversarial training), evaluate it, append a row."""
    _run(recipe, set_, resume, force, expect_distill=False, threads=threads)


@app.command(cls=KdlabCommand)
@friendly
def inspect(
    target: str = typer.Argument(
        ..., help="An architecture (resnet_small, preact_resnet18, wrn-16-4, wrn-34-10, ...) or a recipe "
                  ".yaml: a distillation recipe shows student and teacher blocks side by side with the ACM pairs."),
    width: int | None = typer.Option(None, help="Base width (resnet_small; architecture names only)."),
    blocks_per_stage: int | None = typer.Option(None, help="Residual blocks per stage (resnet_small; names)."),
    num_classes: int = typer.Option(10, help="Output classes (a teacher checkpoint keeps its own)."),
    image_size: int = typer.Option(32, help="Input height and width."),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP + " Recipes only."),
) -> None:
    """List a model's blocks (index, module path, output shape, channels): the indices recipes tap."""
    from kdlab.check.inspect import architecture_view, is_recipe_path, recipe_view
    from kdlab.runs.console import console, results_table

    if is_recipe_path(target):
        view = recipe_view(target, set_ or [], num_classes, image_size)
    else:
        options = {"width": width, "blocks_per_stage": blocks_per_stage}
        options = {k: v for k, v in options.items() if v is not None}
        view = architecture_view(target, num_classes, image_size, **options)
    console.print(results_table(view.title, view.rows, view.columns))


@app.command("eval", cls=KdlabCommand)
@friendly
def eval_(
    target: Path = typer.Argument(
        ..., help="A run directory (uses its best.pt and recipe), a model checkpoint, or robustbench:NAME "
                  "(a RobustBench zoo model read from --model-dir; test set CIFAR-10 unless --data)."),
    attack: list[str] | None = typer.Option(
        None, "--attack", show_default=False,
        help="Repeatable: clean, fgsm, pgd, cw, apgd-ce, apgd-dlr, apgd-t, fab-t, square, autoattack, aa-fast "
             "(default clean and pgd; a detection run is scored by COCO AP, without attacks)."),
    eps: str | None = typer.Option(None, "--eps", help="Linf budget, e.g. 8/255 or 0.0314 (default 8/255)."),
    alpha: str | None = typer.Option(None, "--alpha", help="Step size for pgd/cw/fgsm (default eps/4; fgsm: eps)."),
    steps: int | None = typer.Option(None, "--steps", help="Iterations (pgd 20, cw 30, apgd 100; square: queries)."),
    restarts: int | None = typer.Option(None, "--restarts", help="Random restarts (default 1)."),
    n: int = typer.Option(1000, "--n", min=1, help="Test images, taken in a fixed, seeded order."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images per attack batch (memory stays flat)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the image order and the attacks' random starts."),
    data: str | None = typer.Option(
        None, "--data", help="Test set NAME[:ROOT] instead of the run's, e.g. imagefolder:../shared/data/cifar10-jpeg."),
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
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Measure clean and adversarial accuracy (torchattacks; standard AutoAttack) and append rows to a CSV.

    TARGET is a run directory, a kdlab checkpoint, or with --arch any plain state dict."""
    from kdlab.config.units import parse_eps, parse_eps_list
    from kdlab.robustness.attacks import attack_def
    from kdlab.runs.console import AttackProgress, console, results_table
    from kdlab.runs.evaluate import evaluate_target

    # Every option is checked before any data or model is loaded.
    for name in attack or []:
        attack_def(name)
    eps_value = parse_eps(eps, "--eps") if eps is not None else None
    alpha_value = parse_eps(alpha, "--alpha") if alpha is not None else None
    sweep = parse_eps_list(eps_sweep, "--eps-sweep") if eps_sweep else None
    _set_threads(threads)
    with AttackProgress() as progress:
        report = evaluate_target(
            target, attack, eps=eps_value, alpha=alpha_value, steps=steps, restarts=restarts, n=n,
            batch_size=batch_size, seed=seed, data=data, out=out, sanity=sanity, eps_sweep=sweep, progress=progress,
            arch=arch, num_classes=num_classes, norm=norm, model_dir=model_dir,
        )
    columns = [c for c in ("attack", "eps_255", "steps", "n", "clean_accuracy", "accuracy", "AP", "AP50",
                           "images_per_s", "components")
               if any(c in row for row in report.rows)]
    columns += ["flag"] if any(row.get("flag") for row in report.rows) else []
    console.print(results_table(f"{report.rows[0]['model']}: results (%)", report.rows, columns))
    for violation in report.violations:
        console.print(f"[bold yellow]sanity warning:[/] {violation}")
    if report.plot:
        console.print(f"wrote {report.plot}")
    console.print(f"appended {len(report.rows)} rows to {out}")


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KdlabError(f"{option} '{text}': expected comma-separated integers, e.g. {option} 0,1,2") from None


@app.command(cls=KdlabCommand)
@friendly
def ablate(
    recipe: Path = typer.Argument(
        ..., help="Base recipe (a file or a shipped recipe's name); every cell is this recipe plus the cell's "
                  "overrides."),
    components: bool = typer.Option(
        False, "--components",
        help="MixACM component ablation: teacher, student-ce, kd-only, acm, acm+kd, acm+mixup, mixacm."),
    blocks: str | None = typer.Option(
        None, "--blocks", help="Block ablation, e.g. 2,3,4: one student per block plus one with all listed blocks."),
    cumulative: bool = typer.Option(False, "--cumulative", help="With --blocks: growing prefixes (2; 2,3; 2,3,4)."),
    per_block_weight: bool = typer.Option(
        False, "--per-block-weight",
        help="With --blocks: every block keeps weight acm.weight, so a cell's total ACM weight grows with its "
             "block count (default: every cell gets the recipe's total ACM weight, divided over its blocks)."),
    grid: list[str] = typer.Option([], "--grid", help="KEY=V1,V2,... over any recipe key (repeatable: product)."),
    methods: str | None = typer.Option(
        None, "--methods",
        help="Method comparison, e.g. mixacm,rrm,kd,fitnet,at,ard,rslad,iad,adaad,pgd-at: one cell per "
             "method over the recipe's teacher and student, each with its own defaults (table <name>-methods)."),
    method_set: list[str] = typer.Option(
        [], "--method-set", help="With --methods: METHOD.KEY=VALUE for that method's cell only (repeatable), "
                                 "e.g. ard.alpha=0.9."),
    inner_steps: int | None = typer.Option(
        None, "--inner-steps", min=1,
        help="With --methods: inner PGD steps k of every adversarially trained student (the same for all)."),
    inner_step: str | None = typer.Option(
        None, "--inner-step",
        help="With --methods: their inner PGD step size, e.g. 6.67/255 (the same for all)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds; every cell runs once per seed."),
    tune: list[str] = typer.Option(
        [], "--tune",
        help="KEY=V1,V2,V3: first choose KEY per cell on a validation split (one seed), then run --seeds with "
             "the chosen value (tables <title>-val and <title>-tuned; kdlab.ablation.tuning). Repeat as "
             "'KEY[CELL]=V1,V2' for a cell's own values, e.g. 'method.feature.weight[kind=mgd]=2e-6,2e-5'."),
    tune_val_size: int | None = typer.Option(
        None, "--tune-val-size", min=1,
        help="With --tune, for a recipe without data.val_size: training images held out to tune on."),
    tune_seed: int | None = typer.Option(None, "--tune-seed", help="With --tune: its seed (default: the first "
                                                                    "of --seeds)."),
    tune_metric: str | None = typer.Option(
        None, "--tune-metric", help="With --tune: the validation metric maximised (default AP for detection, "
                                    "else pgd_acc with --attack pgd, else clean_acc)."),
    tune_from: Path | None = typer.Option(
        None, "--tune-from", help="With --tune: choose from this finished <title>-val.csv (e.g. another "
                                  "detector's) instead of running a tuning grid."),
    attack: list[str] = typer.Option(["pgd"], "--attack", help="Evaluation columns besides clean (repeatable)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Cells run in parallel processes."),
    executor: str = typer.Option("local", "--executor", help="local (--jobs processes), slurm (one job per cell: "
                                 "kdlab.ablation.cluster) or submitit-local (those jobs as local processes; tests)."),
    slurm: list[str] = typer.Option([], "--slurm", help="With --executor slurm, KEY=VALUE (repeatable): time=4:00:00,"
                                    " partition, gpus, cpus, mem, parallel, account, qos, requeues, sbatch.OPTION."),
    threads: int | None = typer.Option(None, "--threads", help="Torch threads per cell (default cores/jobs)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP + " Applies to every cell."),
    name: str | None = typer.Option(None, "--name", help="Table name (default: the recipe's name)."),
    out: Path = typer.Option(Path("results/ablations"), "--out", help="Folder for the CSV, Markdown and PNG."),
) -> None:
    """Run an ablation grid; finished cells are reused, interrupted ones resume; writes CSV + Markdown + PNG."""
    from kdlab.ablation.cluster import cluster_settings
    from kdlab.ablation.command import run_ablation_command
    from kdlab.check.plan import check_ablation_plan
    from kdlab.config.paths import check_paths

    cluster = cluster_settings(executor, slurm, jobs)  # None: the local pool
    recipe, plan = _ablation_plan(recipe, components=components, blocks=blocks, cumulative=cumulative, grid=grid,
                                  seeds=seeds, attacks=attack, overrides=set_, name=name,
                                  per_block_weight=per_block_weight, methods=methods, method_overrides=method_set,
                                  inner_steps=inner_steps, inner_step=inner_step)
    check_paths(plan.recipe_for(plan.cells[0], plan.seeds[0]), str(recipe))  # a missing teacher, before any work
    check_ablation_plan(plan, out, device_here=cluster is None)  # every cell's models, data, paths; before training
    run_ablation_command(plan, out, jobs=jobs, threads=threads, tune=tune, tune_seed=tune_seed,
                         tune_val_size=tune_val_size, tune_metric=tune_metric, tune_from=tune_from, attacks=attack,
                         cluster=cluster)


def _ablation_plan(recipe: Path, *, seeds: str, **flags):
    """The recipe argument as a file (a bare name is a shipped recipe) and the ablation plan the flags describe:
    what ``kdlab ablate`` runs and ``kdlab check`` checks."""
    from kdlab.ablation.grid import plan_ablation
    from kdlab.config.shipped import resolve_recipe

    recipe = resolve_recipe(recipe)
    return recipe, plan_ablation(str(recipe), seeds=_int_list(seeds, "--seeds"), **flags)


@app.command(cls=KdlabCommand)
@friendly
def check(
    recipe: Path = typer.Argument(..., help="A training, distillation or (with the ablation flags) ablation recipe."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    components: bool = typer.Option(False, "--components", help="Check the MixACM component ablation's cells."),
    blocks: str | None = typer.Option(None, "--blocks", help="Check a block ablation, e.g. 2,3,4."),
    cumulative: bool = typer.Option(False, "--cumulative", help="With --blocks: growing prefixes."),
    per_block_weight: bool = typer.Option(False, "--per-block-weight", help="With --blocks: as kdlab ablate."),
    grid: list[str] = typer.Option([], "--grid", help="Check a grid, KEY=V1,V2,... (repeatable)."),
    methods: str | None = typer.Option(None, "--methods", help="Check a method comparison, e.g. mixacm,rrm,kd."),
    method_set: list[str] = typer.Option([], "--method-set", help="With --methods: METHOD.KEY=VALUE, as ablate."),
    inner_steps: int | None = typer.Option(None, "--inner-steps", min=1, help="With --methods: as ablate."),
    inner_step: str | None = typer.Option(None, "--inner-step", help="With --methods: as ablate."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds of the ablation."),
    attack: list[str] = typer.Option(["pgd"], "--attack", help="The ablation's evaluation columns besides clean."),
    name: str | None = typer.Option(None, "--name", help="The ablation's table name."),
    out: Path = typer.Option(Path("results/ablations"), "--out", help="The ablation's output folder."),
    timing: bool = typer.Option(True, "--timing/--no-timing", help="Time a few steps to estimate the run time."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Check a plan without running it: recipe, teacher recipe or checkpoint, every ablation cell, data, models,
    block keys, one step on random images, output paths. Prints which runs will train, which are finished
    (and where), and an estimated time from a few timed steps. Writes nothing; exit code 2 lists every problem."""
    import torch
    from rich.markup import escape

    from kdlab.check.plan import check_ablation_plan, check_recipe_plan
    from kdlab.runs.console import console
    from kdlab.runs.estimate import plan_lines, plan_summary

    _set_threads(threads)
    if components or blocks is not None or grid or methods is not None:
        _, ablation = _ablation_plan(recipe, components=components, blocks=blocks, cumulative=cumulative,
                                     grid=grid, seeds=seeds, attacks=attack, overrides=set_, name=name,
                                     per_block_weight=per_block_weight, methods=methods,
                                     method_overrides=method_set, inner_steps=inner_steps, inner_step=inner_step)
        plan = check_ablation_plan(ablation, out, timing=timing)
    else:
        from kdlab.config.shipped import resolve_recipe

        plan = check_recipe_plan(resolve_recipe(recipe), set_, resume=True, timing=timing)
    console.print(f"[bold]plan {plan.title}[/]: checked, no problems found", highlight=False)
    for line in [*plan_lines(plan), *plan_summary(plan, torch.get_num_threads())]:
        console.print(escape(line), highlight=False, soft_wrap=True)


@app.command(cls=KdlabCommand)
@friendly
def table(
    csv: Path = typer.Argument(..., help="A CSV kdlab wrote: an ablation table (results/ablations/*.csv), "
                                         "evaluation rows (results/eval.csv) or the runs table "
                                         "(results/runs.csv)."),
    paper: str | None = typer.Option(
        None, "--paper", help="Reference numbers to place beside kdlab's (kdlab.report.paper): mixacm-components."),
    baseline: list[str] = typer.Option(
        [], "--baseline", help="Cell to compare with, seed by seed (repeatable: one column each; default "
                               "student-ce or kind=none when present), e.g. kind=l2."),
    with_eval: Path | None = typer.Option(
        None, "--with-eval", help="Ablation tables: first add the AutoAttack accuracy of each run that kdlab eval "
                                  "RUN_DIR --attack autoattack measured (e.g. results/eval.csv)."),
) -> None:
    """Regenerate an ablation's Markdown table (mean ± std over seeds) and PNG plot from its CSV alone; show
    the latest evaluation rows or the runs table as Markdown."""
    from kdlab.report.paper import PAPER_NUMBERS
    from kdlab.report.tables import csv_kind, merge_eval_column, render, rows_markdown
    from kdlab.runs.console import console

    kind = csv_kind(csv)
    if kind != "ablation":
        if paper is not None or baseline or with_eval is not None:
            raise KdlabError(f"--paper, --baseline and --with-eval apply to ablation tables; {csv} is a {kind} "
                             "table: drop them")
        console.print(rows_markdown(csv, kind), highlight=False, soft_wrap=True)
        return
    if paper is not None and paper not in PAPER_NUMBERS:
        raise KdlabError(f"--paper '{paper}' unknown: choose one of {', '.join(PAPER_NUMBERS)}")
    if with_eval is not None:
        merge_eval_column(csv, with_eval)
    markdown, plot = render(csv, paper=paper, baseline=baseline)
    console.print(markdown.read_text())
    console.print(f"wrote {markdown} and {plot}")


@app.command(cls=KdlabCommand)
@friendly
def report(
    path: Path = typer.Argument(..., help="An ablation CSV (results/ablations/<table>.csv) or a results folder "
                                          "(results/: every ablations/*.csv)."),
    out: Path | None = typer.Option(None, "--out", help="The HTML file (default: the CSV's name with .html, or "
                                                         "<folder>/report.html)."),
) -> None:
    """One self-contained HTML page: tables with mean ± std and paired 95 % CIs, plots, the commands that
    regenerate them, recipes and every run's provenance; opens from disk with no server or network."""
    from kdlab.report.html import build_report

    typer.echo(f"wrote {build_report(path, out)}")


recipes_app = typer.Typer(help="The recipes shipped with kdlab: list them, or copy one out to edit it.",
                          no_args_is_help=False, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(recipes_app, name="recipes")


@recipes_app.callback(invoke_without_command=True)
@friendly
def recipes(ctx: typer.Context) -> None:
    """List the shipped recipes (run one by name: kdlab distill quickstart); `kdlab recipes copy` edits one."""
    if ctx.invoked_subcommand is not None:
        return
    from kdlab.config.shipped import shipped_dir, shipped_recipes

    found = shipped_recipes()
    width = max(len(r.name) for r in found)
    typer.echo(f"shipped recipes in {shipped_dir()} (run one by name: kdlab distill quickstart):")
    for r in found:
        typer.echo(f"  {r.name:<{width}}  {r.kind:<7}  {r.summary}")


@recipes_app.command("copy", cls=KdlabCommand)
@friendly
def recipes_copy(
    name: str = typer.Argument(..., help="A shipped recipe's name (kdlab recipes lists them)."),
    dest: Path = typer.Argument(Path("."), help="A folder (default: here) or a .yaml file name for the copy."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Write an editable copy of a shipped recipe, with its teacher's training recipe beside it."""
    from kdlab.config.shipped import copy_recipe
    from kdlab.runs.console import console

    written, notes = copy_recipe(name, dest, force=force)
    for note in notes:
        console.print(f"[bold yellow]note:[/] {note}", highlight=False)
    kind = "distill" if len(written) > 1 else "train"
    console.print(f"wrote {', '.join(str(p) for p in written)}; run it with `kdlab {kind} {written[0]}`",
                  highlight=False)


@app.command()
@friendly
def schema(
    section: str | None = typer.Argument(
        None, help="A section, e.g. data, train, train.adversarial, eval (default: every key)."),
) -> None:
    """Every recipe key: type, default, allowed values and description (from the schema the validator uses)."""
    from kdlab.config.schema_doc import render

    typer.echo(render(section))


def main() -> None:  # pragma: no cover - console-script convenience
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
