"""One run, end to end: recipe -> data -> models -> method -> engine -> evaluation -> results.

A run lives in ``<output.dir>/<name>-<key>`` where ``key`` hashes the resolved recipe (and the
teacher's identity), so the directory *is* the cache entry: a finished run is reused, an
interrupted one resumes, and a teacher named by recipe is trained once and shared by every
student and ablation cell that names the same teacher recipe. The name is a label, not part of
the identity: a finished run of the same key under another name (the same cell in two
ablations, say) is reused too.

Under torchrun (:mod:`kdlab.runtime.distributed`) every rank runs this function: rank 0 alone takes the directory's
lock, decides reuse/resume/refusal (handed to the others), and writes recipe.yaml, run.json, summary.json,
the table row and the trackers; every rank trains its shard and evaluates its share of the test images.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from kdlab.config.names import HEADLINE_METRICS
from kdlab.config.recipe import Recipe, load_recipe
from kdlab.config.schema import TapField, section_at, tap_fields
from kdlab.config.units import eps_255
from kdlab.data.sizes import check_data_sizes
from kdlab.errors import Diverged, KdlabError
from kdlab.models.files import file_digest, load_model, save_model
from kdlab.results import now, provenance, read_json, replace_rows, results_folder, write_json
from kdlab.runs.estimate import with_expected_time
from kdlab.runs.trackers import Trackers
from kdlab.runtime import distributed
from kdlab.tasks import get_task
from kdlab.train.engine import fit
from kdlab.train.reporter import Reporter
from kdlab.train.selection import recorded_select, selection_metric

ReporterFactory = Callable[[str], Reporter]


@dataclass
class RunOutcome:
    run_dir: Path
    summary: dict[str, Any]
    reused: bool


# --------------------------------------------------------------------------- teachers
def prepare_teacher(recipe: Recipe, num_classes: int, reporter_factory: ReporterFactory | None,
                    command: str = "") -> tuple[nn.Module, dict]:
    """Load the teacher named by checkpoint, or train/reuse it from its recipe (the teacher cache); a teacher
    trained here records ``command`` (the student's command, which made it) in its run.json and row. The info
    names the teacher (``teacher``), its identity in run keys (``teacher_identity``) and its weights' content
    (``teacher_sha256``: :func:`kdlab.models.files.file_digest` of its best.pt or checkpoint file)."""
    spec = recipe.teacher
    assert spec is not None
    if spec.checkpoint is not None:
        teacher, _ = load_model(spec.checkpoint, expected_classes=num_classes)
        digest = file_digest(Path(spec.checkpoint))
        return teacher, {"teacher": spec.checkpoint, "teacher_identity": digest, "teacher_sha256": digest}
    if spec.robustbench is not None:
        from kdlab.models.zoo import load_zoo_model

        teacher, path = load_zoo_model(spec.robustbench, spec.dataset, spec.threat_model, spec.model_dir)
        if teacher.num_classes not in (None, num_classes):
            raise KdlabError(f"robustbench teacher {spec.robustbench} predicts {teacher.num_classes} classes, "
                             f"the data has {num_classes}: choose a {spec.dataset} recipe")
        digest = file_digest(path)  # read once: a zoo checkpoint can be hundreds of MB
        identity = f"robustbench:{spec.robustbench}@{digest}"  # zoo name + checkpoint hash
        return teacher, {"teacher": f"robustbench:{spec.robustbench}", "teacher_identity": identity,
                         "teacher_sha256": digest}
    teacher_recipe = load_recipe(spec.recipe)
    if teacher_recipe.is_distillation:
        raise KdlabError(f"teacher.recipe '{spec.recipe}' is a distillation recipe; name a training recipe (model:)")
    outcome = run_recipe(teacher_recipe, resume=True, reporter_factory=reporter_factory, command=command)
    if outcome.summary.get("flag") and distributed.is_main():  # collapsed or weak: say so before any student trains
        from kdlab.runs.console import console

        console.print(f"[bold red]teacher {outcome.run_dir} is {outcome.summary['flag']}; the students' numbers "
                      f"will say little about the method: fix {spec.recipe} first[/]", highlight=False)
    teacher, _ = load_model(outcome.run_dir / "best.pt", expected_classes=num_classes)
    info = {
        "teacher": str(outcome.run_dir),
        "teacher_identity": outcome.summary["key"],
        # the teacher's weights by content (file_digest of best.pt): a retrained teacher of the same key that
        # differs is told apart (kdlab.ablation.execute refuses to extend a table distilled from another one)
        "teacher_sha256": file_digest(outcome.run_dir / "best.pt"),
        **{f"teacher_{key}": value for key, value in outcome.summary.items() if key in HEADLINE_METRICS},
    }
    return teacher, info


# --------------------------------------------------------------------------- identical experiments, one key


def _block_index(model: nn.Module) -> dict[str, int]:
    """Module path -> block index for a model that numbers its blocks (``blocks()``); empty otherwise."""
    try:
        return {block.path: block.index for block in model.blocks()}
    except (AttributeError, KdlabError):
        return {}


def _canonical(keys, index: dict[str, int]):
    """A block key (or list) with every module path that names a block replaced by that block's index."""
    if isinstance(keys, list):
        return [_canonical(key, index) for key in keys]
    if isinstance(keys, str):
        return int(keys.strip()) if keys.strip().isdigit() else index.get(keys.strip(), keys)
    return keys


def _has_path(method: dict, taps: list[TapField]) -> bool:
    """Whether a method section gives any tap key as a string (a module path or a digit string)."""
    for tap in taps:
        section = section_at(method, tap.path) or {}
        for field in (tap.student, tap.teacher):
            value = section.get(field)
            if any(isinstance(item, str) for item in (value if isinstance(value, list) else [value])):
                return True
    return False


def _canonical_section(method: dict, taps: list[TapField], student: dict[str, int], teacher: dict[str, int]) -> None:
    for tap in taps:
        section = section_at(method, tap.path)
        if section is None or tap.student not in section:
            continue
        given = section[tap.student]
        teacher_keys = section.get(tap.teacher)
        section[tap.student] = _canonical(given, student)
        paired = _canonical(given if teacher_keys is None else teacher_keys, teacher)
        # "the same keys" is written as null: an explicit pairing equal to the student's keys is the same run
        section[tap.teacher] = None if paired == section[tap.student] else paired


def canonical_blocks(recipe: Recipe, num_classes: int, teacher: nn.Module | None) -> Recipe:
    """The recipe with method block keys given by module path (``net.stage2``) replaced by the block index
    they name (``3``), for the student and the teacher alike, so ``[3, 4]`` and ``[net.stage2, net.stage3]``
    are one run with one key. The keys are those of the fields the method's settings declare as taps
    (:class:`kdlab.config.schema.Taps`), whatever their names. Paths that name no numbered block stay paths.
    Needs the models, so it lives here and not in :meth:`Recipe.key` (which stays torch-free)."""
    from kdlab.config.recipe import validate_recipe
    from kdlab.models.factory import build_model

    raw = recipe.to_dict()
    taps = tap_fields(type(recipe.method))
    if not _has_path(raw.get("method") or {}, taps):
        return recipe
    spec = recipe.trained_model
    student = _block_index(build_model(recipe.task, spec.arch, num_classes, spec.build_options()))
    _canonical_section(raw["method"], taps, student, _block_index(teacher) if teacher is not None else student)
    return validate_recipe(raw, source=f"{recipe.name} (block keys as indices)")


# --------------------------------------------------------------------------- the run
def run_directory(recipe: Recipe, teacher_identity: str = "") -> Path:
    return Path(recipe.output.dir) / f"{recipe.name}-{recipe.key(teacher_identity)}"


def _finished_twin(run_dir: Path) -> Path | None:
    """A finished run with this run's key under another name, if any (the key is the last ``-`` part)."""
    if (run_dir / "summary.json").exists():
        return None
    twins = sorted(path for path in run_dir.parent.glob(f"*-{_key_of(run_dir)}") if (path / "summary.json").is_file())
    return twins[0] if twins else None


def _key_of(run_dir: Path) -> str:
    return run_dir.name.rsplit("-", 1)[-1]


DIVERGED = "diverged.json"  # a run whose loss became non-finite: its error, so a rerun reports it without training


def _claim_directory(run_dir: Path, resume: bool, force: bool) -> dict | None:
    """Return the finished summary to reuse, or prepare the directory for (re)training; a run recorded as
    diverged raises its divergence again (same key, same run: it would diverge again) unless forced."""
    summary_path = run_dir / "summary.json"
    if force and run_dir.exists():
        for child in run_dir.iterdir():
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    elif summary_path.exists():
        return read_json(summary_path)
    elif (run_dir / DIVERGED).exists():
        record = read_json(run_dir / DIVERGED)
        error = Diverged(f"{record['error']} (recorded in {run_dir / DIVERGED} at {record['at']}; --force trains "
                         "it again)")
        error.run_dir = run_dir
        raise error
    elif (run_dir / "last.pt").exists() and not resume:
        raise KdlabError(
            f"an unfinished run exists at {run_dir}: pass --resume to continue it or --force to start over"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


@contextlib.contextmanager
def _discard_unless_trained(run_dir: Path, owner: bool = True):
    """A run that fails before its first epoch is saved leaves no directory behind (nothing to resume), unless
    it diverged (its record is kept: :data:`DIVERGED`); only the directory's ``owner`` (rank 0) removes it."""
    try:
        yield
    except BaseException:
        kept = ("last.pt", "summary.json", DIVERGED)
        if owner and run_dir.is_dir() and not any((run_dir / name).exists() for name in kept):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def run_recipe(recipe: Recipe, *, resume: bool = False, force: bool = False,
               reporter_factory: ReporterFactory | None = None, command: str = "",
               overrides: list[str] | tuple[str, ...] = (), group: str = "", cell: str = "") -> RunOutcome:
    """Train (or reuse, or resume) the run this recipe describes; evaluate it; record it.

    ``overrides`` are the ``--set`` values the recipe was resolved with; the summary and the table row record
    them beside the run key, so two rows of one recipe name are told apart. ``command`` is the command line that
    started the run, as typed (:func:`kdlab.cli.command.typed_command`; an ablation cell's: the ``kdlab ablate``
    command); run.json, the summary and the table row record it. The table keeps one row per run
    directory: a forced or resumed run that finishes replaces its directory's earlier row. ``group`` and
    ``cell`` (an ablation's table and cell label) group the run in the recipe's ``output.trackers``.
    """
    task = get_task(recipe.task)
    data = task.load_data(recipe)
    check_data_sizes(recipe, data)  # before a teacher is trained or a run directory is made
    teacher, teacher_info = None, {}
    if recipe.is_distillation:
        teacher, teacher_info = prepare_teacher(recipe, task.num_classes(data), reporter_factory, command)
    recipe = canonical_blocks(recipe, task.num_classes(data), teacher)

    run_dir = run_directory(recipe, teacher_info.get("teacher_identity", ""))
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()  # the one process that locks and writes (every process in a single run)
    trackers = Trackers(recipe.output.trackers if main else [])  # started once the directory is claimed
    # Locked on the key, not the directory: the same run under two names (one cell in two tables started at
    # once) trains once, and the second process reuses it when the lock is released.
    lock = FileLock(str(run_dir.parent / f".{_key_of(run_dir)}.lock")) if main else contextlib.nullcontext()
    with lock, _discard_unless_trained(run_dir, owner=main), trackers:
        twin = None if force else distributed.from_main(lambda: _finished_twin(run_dir))
        if twin is not None:
            return RunOutcome(twin, read_json(twin / "summary.json"), reused=True)
        finished = distributed.from_main(lambda: _claim_directory(run_dir, resume, force))
        if finished is not None:
            return RunOutcome(run_dir, finished, reused=True)
        distributed.agree(lambda: _trainable_here(recipe))
        started = time.perf_counter()
        world = distributed.world_size()
        code = distributed.from_main(lambda: _record_start(recipe, run_dir, command, overrides, teacher_info,
                                                           world))
        if main:
            trackers.start(recipe, run_dir, overrides=overrides, group=group, cell=cell, command=command)

        torch.manual_seed(recipe.seed)
        setup = task.setup(recipe, data, teacher)
        spec = recipe.trained_model
        options = spec.build_options()

        def export_best(path: Path) -> None:
            save_model(path, setup.model, task=recipe.task, arch=spec.arch, options=options,
                       num_classes=setup.num_classes, classes=setup.classes, extra={"recipe_key": run_dir.name})

        shown = reporter_factory(recipe.name) if reporter_factory else None
        reporter = trackers.reporter(with_expected_time(shown, recipe, data, setup, teacher))
        try:
            result = fit(setup.method, setup.source, recipe.train, seed=recipe.seed, run_dir=run_dir,
                         validate=setup.validate, select=selection_metric(recipe), export_best=export_best,
                         resume=resume, reporter=reporter)
        except Diverged as error:
            if main:
                write_json(run_dir / DIVERGED, {"error": str(error), "at": now()})
            error.run_dir = run_dir
            raise

        best, _ = load_model(run_dir / "best.pt", expected_classes=setup.num_classes)
        with _evaluation_progress(reporter, recipe, data) as progress:
            evaluation = task.evaluate(best.to(recipe.torch_device()), data, recipe, progress=progress)
        summary = {
            "name": recipe.name,
            "task": recipe.task,
            "kind": "distill" if recipe.is_distillation else "train",
            "key": run_dir.name,
            "run_key": run_dir.name.rsplit("-", 1)[-1],
            "overrides": " ".join(overrides),
            "command": command,
            "run_dir": str(run_dir),
            "arch": spec.arch,
            "options": options,
            "dataset": recipe.data.dataset,
            **setup.summary,
            "seed": recipe.seed,
            "epochs": recipe.train.epochs,
            "select": recorded_select(recipe, setup.validate is not None),
            "best_epoch": result.best_epoch,
            "val_score": result.best_score if setup.validate is not None else None,
            **evaluation,
            "eval_split": recipe.eval.split,
            "eval_eps": recipe.eval.eps,
            "eval_eps_255": eps_255(recipe.eval.eps),
            "eval_steps": recipe.eval.steps,
            "train_seconds": round(result.train_seconds, 2),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "images_per_s": round(result.images_per_second, 1),
            **({"processes": world} if world > 1 else {}),  # absent in one process: tables keep their columns
            "adversarial_training": recipe.train.adversarial.method,
            **({k: v for k, v in teacher_info.items() if k != "teacher_identity"}),
            **code,  # the code this run was started with (a resume re-records it)
            "finished_at": now(),
        }
        if main:
            write_json(run_dir / "summary.json", summary)
            trackers.finish(summary, run_dir)
            # one row per run and device: CPU training is reproducible on one processor type only, so the same
            # run retrained on another one (a fresh checkout elsewhere) is another result and keeps its own row
            replace_rows(recipe.output.table, [_table_row(summary)], key=("run_dir", "device_name"))
        distributed.barrier()  # the summary exists before any rank goes on (a student reads its teacher's)
    return RunOutcome(run_dir, summary, reused=False)


def _trainable_here(recipe: Recipe) -> None:
    """Refuse, before training, what this number of processes cannot train (see :mod:`kdlab.runtime.distributed`)."""
    problems = distributed.training_problems(recipe.train.rng, recipe.train.sync_bn, recipe.data.batch_size,
                                             recipe.device, recipe.task)
    if problems:
        raise KdlabError(problems[0])


# what run.json records of the code and the machine that trained a run (_record_start: kdlab.results.provenance's
# keys and the torch thread count)
CODE_KEYS = ("git_commit", "git_diff_sha256", "versions", "machine", "device_name", "cpu_name", "cuda",
             "torch_threads")


def trained_code(run_dir: Path) -> dict[str, Any] | None:
    """The code and machine a run recorded when it started (its run.json: :data:`CODE_KEYS`), or None without
    one. A divergence read back from ``diverged.json`` was found by the code that trained the run, not by the one
    that reads it (a dirty tree's patch went to the results folder's diffs/ when the run started)."""
    path = run_dir / "run.json"
    record = read_json(path) if path.is_file() else {}
    code = {key: record[key] for key in CODE_KEYS if key in record}
    return code if code.get("git_commit") else None


def _record_start(recipe: Recipe, run_dir: Path, command: str, overrides, teacher_info: dict,
                  world: int) -> dict[str, Any]:
    """Write recipe.yaml, code.diff and run.json; return the code provenance (rank 0's, for every rank)."""
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
    # the uncommitted code behind this run, if any: in the run directory and, content-addressed, in the results
    # folder of its runs table (results/diffs/<git_diff_sha256>.patch, committed with the rows)
    code = provenance(diff_to=run_dir / "code.diff", diffs=results_folder(recipe.output.table))
    # CPU float reductions depend on the thread count, so one key trained with 1 and with 2 threads differs in
    # its last bits (and, after 9 epochs, in its AP): the count is part of what reproduces a run
    code = {**code, "torch_threads": torch.get_num_threads()}
    write_json(run_dir / "run.json", {"command": command, "overrides": list(overrides), "seed": recipe.seed,
                                      **({"processes": world} if world > 1 else {}), **teacher_info, **code})
    return code


def _evaluation_progress(reporter: Reporter | None, recipe: Recipe, data: Any = None):
    """The reporter's progress display for the evaluation after training (images/s, ETA), if it has one; its
    title names what is measured (the task's metric) on how many images (eval.n capped by the split's size)."""
    show = getattr(reporter, "evaluation_progress", None)
    if show is None:
        return contextlib.nullcontext(None)
    spec = recipe.eval
    split = getattr(data, spec.split, None)
    n = min(spec.n, len(split)) if split is not None else spec.n
    if recipe.task == "detection":
        return show(f"best.pt on {n} {spec.split} images (COCO box AP)")
    attacks = ", ".join(f"{name}-{spec.steps}" if name == "pgd" else name for name in spec.attacks)
    return show(f"best.pt on {n} {spec.split} images (accuracy: {attacks})")


def _table_row(summary: dict[str, Any]) -> dict[str, Any]:
    row = {key: value for key, value in summary.items() if key not in {"versions", "options"}}
    row["torch"] = summary.get("versions", {}).get("torch")
    return row
