"""The plan check: everything a run, its teacher and every ablation cell need, checked before any work.

``kdlab train``, ``kdlab distill`` and ``kdlab ablate`` call :func:`check_recipe_plan` or
:func:`check_ablation_plan` before loading data or training, and ``kdlab check`` prints what they find. For the
recipe, the teacher it names (a training recipe, resolved and checked like the recipe itself, or a checkpoint)
and every (cell, seed) of an ablation, it checks without training and without decoding images:

* the recipe schema (every problem, not only the first) and the teacher paths;
* the data: dataset name and root, class count, image size, split sizes (:mod:`kdlab.check.data`);
* the models: architecture names and options, a teacher checkpoint's task and class count, a teacher recipe's
  class count against the student's data, detector sizes against the FPN strides, every method block key in
  both models, the connectors, and one forward/backward step on two random images (:mod:`kdlab.check.models`);
* evaluation attacks against the class count, the device, and that output folders can be written;
* under torchrun, what the number of processes needs (``train.rng: sample``, a divisible batch size, CUDA for
  ``train.sync_bn``; :func:`kdlab.runtime.distributed.training_problems`), for every run that will train;
* which runs are already finished (reused from their run directory, :func:`kdlab.runs.run.run_directory`) and
  which will train, with, for ``kdlab check``, a time estimate from a few timed steps (:mod:`kdlab.runs.estimate`),
  taken as the runs will take them: with the runs' torch thread count (``threads``), on the recipe's device when
  it is here, in its training precision.

Every problem is one line naming the key and the fix; all of them are raised together as a :class:`PlanError`.
Nothing is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.check.data import DataFacts, data_facts
from kdlab.errors import KdlabError
from kdlab.results import existing_ancestor, write_problem


class PlanError(KdlabError):
    """Every problem the plan check found, one per line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass
class PlannedRun:
    role: str  # teacher | model | student | cell label
    recipe: Any
    seed: int
    run_dir: Path | None = None
    status: str = "to train"  # finished | unfinished | to train | committed (a study's complete committed row)
    reuse_from: Path | None = None
    facts: DataFacts | None = None
    cost: Any = None  # kdlab.check.models.StepCost when timed
    seconds: float | None = None
    model: Any = field(default=None, repr=False)  # the network built for the check (random weights)

    @property
    def trains(self) -> bool:
        """Whether the run will train (or resume): neither finished here nor a study's complete committed row."""
        return self.status not in ("finished", "committed")


@dataclass
class Plan:
    title: str
    runs: list[PlannedRun] = field(default_factory=list)
    cells: int = 0
    seeds: int = 0
    problems: list[str] = field(default_factory=list)
    recipe: Any = None  # the checked recipe (train/distill); an ablation's first cell
    notes: list[str] = field(default_factory=list)  # what --set changed beyond its keys (a dropped method setting)
    threads: int | None = None  # the torch threads the steps were timed with (the runs' count)
    after: list[str] = field(default_factory=list)  # lines under the estimate (a study's final evaluation)

    @property
    def to_train(self) -> list[PlannedRun]:
        return [run for run in self.runs if run.trains]


# --------------------------------------------------------------------------- recipes
def validate_all(raw: Any, source: str) -> tuple[Any, list[str]]:
    """The recipe, or None and one line per schema problem (the validator's own messages)."""
    from pydantic import ValidationError

    from kdlab.config.recipe import Recipe, _describe, _method_name

    if not isinstance(raw, dict):
        return None, [f"{source}: a recipe must be a YAML mapping of sections (data:, train:, ...)"]
    try:
        return Recipe.model_validate(raw), []
    except ValidationError as error:
        return None, [f"{source}: {_describe(item, _method_name(raw))}" for item in error.errors()]


def read_recipe(path: str | Path, overrides: list[str], notes: list[str] | None = None) -> tuple[Any, list[str]]:
    """:func:`kdlab.config.recipe.load_recipe`, reporting every problem instead of the first; ``notes`` receives
    what the overrides changed beyond their keys (:func:`kdlab.config.recipe.apply_overrides`)."""
    from kdlab.config.paths import check_paths, resolve_paths
    from kdlab.config.recipe import apply_overrides, read_recipe_file

    try:
        raw = read_recipe_file(path)
        if isinstance(raw, dict):
            raw = resolve_paths(apply_overrides(raw, overrides, notes), Path.cwd())
    except KdlabError as error:
        return None, [str(error)]
    recipe, problems = validate_all(raw, str(path))
    if recipe is not None:
        try:
            check_paths(recipe, str(path))
        except KdlabError as error:
            problems.append(str(error))
    return (recipe if not problems else None), problems


def writable_problems(path: str, key: str, folder: bool) -> list[str]:
    """Whether ``path`` (a folder, or a file when not ``folder``) can really be created and written: the folders
    that are missing are created and a temporary file is written where kdlab will write, then everything this
    check created is removed again (permission bits alone say nothing for root, or on /proc, or a read-only mount).
    One line per problem: a folder/file mix-up says so; anything else says the path cannot be written, why,
    and what to do."""
    target = Path(path).absolute()
    what = "a folder" if folder else "a file"
    if target.exists() and target.is_dir() != folder:
        kind = "a file" if folder else "a folder"
        return [f"{key}: '{path}' is {kind}, not {what}: set {key} to {what} path"]
    home = target if folder else target.parent  # the folder kdlab creates and writes files in
    ancestor = existing_ancestor(home)
    if not ancestor.is_dir():
        return [(f"{key}: '{path}' cannot be created because '{ancestor}' is a file, not a folder: set {key} "
                 "to a path under a folder")]
    existing = target if not folder and target.exists() else None
    error = write_problem(home, existing)
    if error is None:
        return []
    return [(f"{key}: '{path}' is not writable ({error}): set {key} to {what} path you can write, or make "
             f"'{existing or ancestor}' writable")]


# --------------------------------------------------------------------------- the checker
class _Checker:
    """Walks recipes (each teacher once), collecting problems in order without duplicates."""

    def __init__(self, timing: bool, resume: bool, force: bool, device_here: bool = True, threads: int | None = None):
        self.timing, self.resume, self.force, self.device_here = timing, resume, force, device_here
        self.threads = threads  # the runs' torch threads, for the timed steps (None: as they are)
        self.problems: list[str] = []
        self.runs: dict[str, PlannedRun] = {}
        self._teachers: dict[str, tuple[Any, str | None, DataFacts | None, Any]] = {}
        self._steps: dict[str, tuple[list[str], Any]] = {}
        self._facts: dict[str, tuple[DataFacts | None, list[str]]] = {}

    def add(self, where: str, problems: list[str]) -> bool:
        for problem in problems:
            line = f"{where}: {problem}" if where and not problem.startswith(where) else problem
            if line not in self.problems:
                self.problems.append(line)
        return bool(problems)

    # ------------------------------------------------------------------ teacher
    def teacher(self, recipe: Any, where: str, facts: DataFacts | None) -> tuple[Any, str | None]:
        """The teacher model (random weights, or the cached/checkpoint weights) and its identity."""
        from kdlab.check.models import load_teacher_checkpoint
        from kdlab.models.files import file_digest

        spec = recipe.teacher
        if spec.checkpoint is not None:
            try:
                model = load_teacher_checkpoint(recipe, facts.classes if facts else None)
            except KdlabError as error:
                self.add(where, [str(error)])
                return None, None
            return model, file_digest(Path(spec.checkpoint))
        if spec.robustbench is not None:  # a RobustBench zoo file (kdlab.models.zoo)
            from kdlab.models.zoo import load_zoo_model

            try:
                model, path = load_zoo_model(spec.robustbench, spec.dataset, spec.threat_model, spec.model_dir)
            except KdlabError as error:
                self.add(where, [f"teacher.robustbench: {error}"])
                return None, None
            return model, f"robustbench:{spec.robustbench}@{file_digest(path)}"
        if spec.recipe not in self._teachers:
            self._teachers[spec.recipe] = self._teacher_recipe(recipe, spec.recipe)
        teacher_recipe, identity, teacher_facts, model = self._teachers[spec.recipe]
        if teacher_recipe is None or model is None:
            return None, None
        if teacher_recipe.task != recipe.task:
            self.add(where, [(f"teacher.recipe: '{spec.recipe}' is a {teacher_recipe.task} recipe but this recipe's "
                             f"task is {recipe.task}: name a {recipe.task} teacher")])
            return None, None
        if facts is not None and teacher_facts is not None and teacher_facts.classes != facts.classes:
            self.add(where, [(f"teacher.recipe: '{spec.recipe}' trains on {teacher_recipe.data.dataset} with "
                             f"{teacher_facts.classes} outputs but the student's data "
                             f"({recipe.data.dataset}) needs {facts.classes}: use a teacher trained on the "
                             "same dataset")])
            return None, None
        return model, identity

    def _teacher_recipe(self, recipe: Any, path: str):
        where = f"teacher.recipe {path}"
        teacher_recipe, problems = read_recipe(path, [])
        if self.add("", [f"{where}: {p.removeprefix(path + ': ')}" for p in problems]):
            return None, None, None, None
        if teacher_recipe.is_distillation:
            self.add("", [f"{where}: is a distillation recipe; name a training recipe (model:) as teacher.recipe"])
            return None, None, None, None
        run = self.check(teacher_recipe, where, "teacher", final=False)
        if run is None:
            return teacher_recipe, None, None, None
        model = run.model
        if run.status == "finished":  # the weights the student will distil from
            from kdlab.models.files import load_model

            try:
                model, _ = load_model(run.reuse_from / "best.pt", expected_classes=run.facts.classes)
            except KdlabError as error:
                self.add(where, [f"cached teacher {run.reuse_from}: {error}"])
                return teacher_recipe, None, None, None
        return teacher_recipe, (run.reuse_from or run.run_dir).name, run.facts, model

    # ------------------------------------------------------------------ one recipe
    def check(self, recipe: Any, where: str, role: str, final: bool = True) -> PlannedRun | None:
        """Check one resolved recipe (and its teacher); the planned run, or None when it cannot be planned."""
        from kdlab.check.models import build_trained, detector_size_problems, spec_problem

        facts, problems = self._data_facts(recipe)
        failed = self.add(where, problems)
        failed |= self.add(where, self._settings_problems(recipe, facts))
        spec_role = "student" if recipe.is_distillation else "model"
        classes = facts.classes if facts else (10 if recipe.task == "classification" else 2)
        try:
            model = build_trained(recipe, classes, spec_role)
        except KdlabError as error:
            model = None
            failed = self.add(where, [spec_problem(spec_role, error)]) or failed
        if model is not None and recipe.task == "detection":
            failed |= self.add(where, detector_size_problems(recipe, model, spec_role))
        teacher, identity = None, ""
        if recipe.is_distillation:
            teacher, identity = self.teacher(recipe, where, facts)
            failed |= teacher is None
        if model is None or facts is None or (recipe.is_distillation and teacher is None):
            return None
        problems, cost = self._step(recipe, model, teacher, facts, identity)
        if self.add(where, problems) or failed:
            return None
        run = self._planned(recipe, role, model, teacher, facts, identity or "", cost, final)
        if run.status != "finished":  # what this number of processes (torchrun) cannot train
            from kdlab.runtime.distributed import training_problems

            train = recipe.train
            self.add(where, training_problems(train.rng, train.sync_bn, recipe.data.batch_size, recipe.device,
                                              recipe.task, teacher=role == "teacher"))
        return run

    def _data_facts(self, recipe: Any) -> tuple[DataFacts | None, list[str]]:
        """:func:`kdlab.check.data.data_facts`, once per distinct task, data and eval section: the cells and seeds
        of an ablation share their data, so its folders and annotation files are read once."""
        memo = json.dumps([recipe.task, recipe.data.model_dump(mode="json"), recipe.eval.model_dump(mode="json")],
                          sort_keys=True)
        if memo not in self._facts:
            self._facts[memo] = data_facts(recipe)
        return self._facts[memo]

    def _settings_problems(self, recipe: Any, facts: DataFacts | None) -> list[str]:
        from kdlab.robustness.attacks import attack_def
        from kdlab.runs.trackers import tracker_problems

        problems = []
        try:
            if self.device_here:  # not when the runs go to other machines (kdlab.ablation.cluster's jobs)
                recipe.torch_device()
        except KdlabError as error:
            problems.append(str(error))
        if facts is not None and recipe.task == "classification":
            for name in recipe.eval.attacks:
                needed = attack_def(name).min_classes
                if facts.classes < needed:
                    problems.append(f"eval.attacks: {name} needs at least {needed} classes but {recipe.data.dataset}"
                                    f" has {facts.classes}: drop {name} (pgd, cw, apgd-ce and square work)")
        problems += writable_problems(recipe.output.dir, "output.dir", folder=True)
        problems += writable_problems(recipe.output.table, "output.table", folder=False)
        if "mlflow" in recipe.output.trackers and not os.environ.get("MLFLOW_TRACKING_URI"):
            # kdlab.runs.trackers: mlflow.db and mlartifacts/ in the folder above output.dir
            results = Path(recipe.output.dir).parent
            problems += [f"output.trackers (mlflow): {problem.split(': ', 1)[1]}" for problem in
                         writable_problems(str(results / "mlartifacts"), "results", folder=True)]
        problems += tracker_problems(recipe.output.trackers)  # a tracker that is not installed, before any work
        return problems

    def _step(self, recipe: Any, model: Any, teacher: Any, facts: DataFacts, identity: str) -> tuple[list[str], Any]:
        """Block keys, the method around both models, and a forward/backward step (once per distinct setting)."""
        from kdlab.check.models import block_key_problems, build_step, dry_step, time_steps

        setting = recipe.to_dict()
        for key in ("name", "seed", "output"):
            setting.pop(key, None)
        memo = json.dumps([setting, identity], sort_keys=True, default=str)
        if memo not in self._steps:
            problems = block_key_problems(recipe, model, teacher)
            cost = None
            if not problems:
                try:
                    method = build_step(recipe, model, teacher, facts.image_shape, adversarial=False)
                except (KdlabError, ValueError, RuntimeError) as error:
                    problems = [f"method: {' '.join(str(error).split())}"]
                else:
                    problem = dry_step(recipe, method, facts.image_shape, facts.classes)
                    problems = [problem] if problem else []
                    if not problems and self.timing:
                        timed, timed_teacher = _on_run_device(recipe, model, teacher, self.device_here)
                        method = build_step(recipe, timed, timed_teacher, facts.image_shape)
                        cost = time_steps(recipe, method, timed, facts.image_shape, facts.classes,
                                          threads=self.threads)
            self._steps[memo] = (problems, cost)
        return self._steps[memo]

    def _planned(self, recipe: Any, role: str, model: Any, teacher: Any, facts: DataFacts, identity: str,
                 cost: Any, final: bool) -> PlannedRun:
        from kdlab.runs.run import _finished_twin, canonical_blocks, run_directory

        try:
            recipe = canonical_blocks(recipe, facts.classes, teacher)
        except KdlabError as error:
            self.add("", [str(error)])
        run_dir = run_directory(recipe, identity)
        run = PlannedRun(role=role, recipe=recipe, seed=recipe.seed, run_dir=run_dir, facts=facts, cost=cost,
                         model=model)
        twin = None if self.force and final else _finished_twin(run_dir)
        if (run_dir / "summary.json").is_file() and not (self.force and final):
            run.status, run.reuse_from = "finished", run_dir
        elif twin is not None:
            run.status, run.reuse_from = "finished", twin
        elif (run_dir / "last.pt").is_file():
            run.status = "unfinished"
            if final and not self.resume and not self.force:
                self.add("", [(f"an unfinished run exists at {run_dir}: pass --resume to continue it or --force to "
                              "start over")])
        if run.status != "finished" and run.cost is not None:
            from kdlab.runs.estimate import run_seconds

            run.seconds = run_seconds(recipe, facts, run.cost)
        self.runs.setdefault(str(run_dir), run)
        return run


def _on_run_device(recipe: Any, model: Any, teacher: Any, device_here: bool) -> tuple[Any, Any]:
    """The networks to time: ``model`` and ``teacher`` themselves on a CPU run, copies on the recipe's device
    when it is a GPU present here (the checked networks stay on the CPU for the other checks)."""
    import copy

    try:
        device = recipe.torch_device() if device_here else None
    except KdlabError:
        device = None
    if device is None or device.type == "cpu":
        return model, teacher
    return (copy.deepcopy(model).to(device),
            copy.deepcopy(teacher).to(device) if teacher is not None else None)


# --------------------------------------------------------------------------- entry points
def check_recipe_plan(path: str | Path, overrides: list[str], *, expect_distill: bool | None = None,
                      resume: bool = False, force: bool = False, timing: bool = False,
                      threads: int | None = None) -> Plan:
    """Check a train/distill recipe and its teacher; raise :class:`PlanError` listing every problem. With
    ``timing``, steps are timed with ``threads`` torch threads, the count the run will use (None: as set)."""
    checker = _Checker(timing=timing, resume=resume, force=force, threads=threads)
    notes: list[str] = []
    recipe, problems = read_recipe(path, overrides, notes)
    checker.add("", problems)
    if recipe is not None:
        if expect_distill is not None and recipe.is_distillation != expect_distill:
            other = "distill" if recipe.is_distillation else "train"
            raise KdlabError(f"{path} is a {other} recipe: run it with `kdlab {other} {path}`")
        checker.check(recipe, str(path), "student" if recipe.is_distillation else "model")
    if checker.problems:
        raise PlanError(checker.problems)
    plan = Plan(title=recipe.name, runs=list(checker.runs.values()), cells=1, seeds=1, recipe=recipe, notes=notes,
                threads=_timed_threads(checker))
    return plan


def _timed_threads(checker: _Checker) -> int | None:
    threads = {run.cost.threads for run in checker.runs.values() if run.cost is not None}
    return threads.pop() if len(threads) == 1 else checker.threads


def check_ablation_plan(ablation: Any, out: Path | None = None, timing: bool = False,
                        device_here: bool = True, threads: int | None = None) -> Plan:
    """Check every (cell, seed) of an :class:`~kdlab.ablation.grid.AblationPlan` and its shared teacher; with
    ``device_here`` False (cells that run as cluster jobs) a recipe's ``device: cuda`` needs no GPU here. With
    ``timing``, steps are timed with ``threads`` torch threads, the count each cell will use."""
    checker = _Checker(timing=timing, resume=True, force=False, device_here=device_here, threads=threads)
    if out is not None:
        checker.add("", writable_problems(str(out), "--out", folder=True))
    first = None
    for seed in ablation.seeds:
        for cell in ablation.cells:
            try:
                recipe = ablation.recipe_for(cell, seed)
            except KdlabError as error:
                checker.add("", [str(error)])
                continue
            first = first or recipe
            checker.check(recipe, f"{ablation.recipe_path} [cell {cell.label}, seed {seed}]", cell.label)
    if checker.problems:
        raise PlanError(checker.problems)
    return Plan(title=ablation.title, runs=list(checker.runs.values()), cells=len(ablation.cells),
                seeds=len(ablation.seeds), recipe=first, threads=_timed_threads(checker))
