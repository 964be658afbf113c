"""Declared studies: what an ablation runs and how its table is read, fixed in a file before any result exists.

A study file (``recipes/studies/<name>.yaml``, recognised by its top-level ``study:`` key) declares the cells
(exactly one of kdlab's ablation presets: ``components``, ``blocks``, ``methods`` or ``grid``), the seeds, the
metric that decides, the comparisons (each cell against a ``baseline``, or declared ``pairs``), the
multiple-comparison correction (Holm by default), the tuning (``tune:``, :mod:`kdlab.ablation.tuning`) and the
final evaluation of every finished checkpoint (``final:``, recorded here, run by ``kdlab eval``). ``kdlab ablate
STUDY.yaml`` runs exactly that into ``results/ablations/<study>.csv`` and every row records the study's name, the
sha256 of its canonical declaration and the declaration itself (``study``, ``study_sha256``,
``study_declaration``), so the table's Markdown opens with the declaration and reads the declared comparisons
(:func:`kdlab.report.tables.render`). Adding seeds later is a new study (a new name): a table written under
another declaration of the same study is refused (:func:`refuse_changed`).

:func:`load_study` refuses every mistake it can see (an unknown key, a missing recipe, an unknown metric, a
comparison naming no cell, empty or repeated seeds, ...) in one line before any work; the cells are expanded once,
by :func:`kdlab.ablation.grid.plan_ablation` (:meth:`Study.plan`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kdlab.ablation.grid import AblationPlan, plan_ablation
from kdlab.ablation.tuning import COLLAPSED_RULES, SCALES, Axis, TuneSpec
from kdlab.config.names import ATTACKS, CORRECTIONS, DETECTION_METRICS
from kdlab.errors import KdlabError, did_you_mean
from kdlab.report.tables import TEACHER_CELL

KEYS = ("study", "question", "recipe", "set", "cells", "seeds", "metric", "attacks", "comparisons", "correction",
        "tune", "final")
REQUIRED = ("study", "question", "recipe", "cells", "seeds", "metric", "comparisons")
PRESETS = ("components", "blocks", "methods", "grid")
PRESET_OPTIONS = {"components": (), "blocks": ("cumulative", "per_block_weight"),
                  "methods": ("method_set", "inner_steps", "inner_step"), "grid": ()}
TUNE_KEYS = ("key", "values", "cells", "seeds", "metric", "scale", "bounds", "max_rounds", "bisections", "val_size",
             "collapsed")
TUNE_CELL_KEYS = ("key", "values", "scale", "bounds")
FINAL_KEYS = ("attacks", "n", "sanity")
COMPARISON_KEYS = ("baseline", "pairs")


def is_study_file(path: str | Path) -> bool:
    """Whether ``path`` is a study file (a YAML mapping with a top-level ``study:`` key), not a recipe."""
    import yaml

    path = Path(path)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(raw, dict) and "study" in raw


@dataclass
class Study:
    """A loaded study: its canonical ``declaration`` (the normalised content the digest covers) and where it is."""

    path: Path
    declaration: dict[str, Any]
    _plan: AblationPlan | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.declaration["study"]

    @property
    def seeds(self) -> list[int]:
        return list(self.declaration["seeds"])

    @property
    def metric(self) -> str:
        return self.declaration["metric"]

    @property
    def tune(self) -> dict | None:
        return self.declaration["tune"]

    @property
    def canonical(self) -> str:
        """The declaration as canonical JSON (sorted keys, no spaces): what :attr:`digest` hashes."""
        return json.dumps(self.declaration, sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        """sha256 of the canonical declaration (first 12 hex digits): comments, layout and key order do not change
        it; a seed, a cell or a comparison does."""
        return hashlib.sha256(self.canonical.encode()).hexdigest()[:12]

    def command(self) -> str:
        """The exact command that regenerates the study's table, its path relative to the repository."""
        return f"kdlab ablate {_repository_path(self.path)}"

    def plan(self) -> AblationPlan:
        """The study's :class:`~kdlab.ablation.grid.AblationPlan` (every cell validated), named by the study and
        recording the declaration in every row."""
        if self._plan is None:
            self._plan = _expand(self)
        return self._plan

    def cells(self) -> set[tuple[str, int]]:
        """Every (cell, seed) the study's table holds when finished, named as its ``cell`` column names them: each
        declared cell with each seed, and the shared teacher's row (``teacher``, the first seed) where the preset
        records one (components, methods)."""
        plan = self.plan()
        cells = {(cell.label, seed) for cell in plan.cells for seed in plan.seeds}
        return cells | ({(TEACHER_CELL, plan.seeds[0])} if plan.include_teacher else set())

    def fingerprint(self, table: str = "") -> str | None:
        """The plan fingerprint the rows of the study's table (``table`` ``""``) or of its tuning grid (``"-val"``)
        record when ``kdlab ablate`` here would recognise them (:attr:`AblationPlan.fingerprint`); None for a tuned
        study's final table (its cells are known only from the tuning grid's choice) or a grid it has not."""
        if table == "-val":
            from kdlab.ablation.tuning import tuning_plan

            if self.tune is None:
                return None
            return tuning_plan(self.plan(), self.tune_spec(), None, self.tune_val_size).fingerprint
        return None if self.tune else self.plan().fingerprint

    def tables(self, out: Path) -> tuple[Path, Path]:
        """The study's table and its tuning table under ``out``: ``<study>.csv``, ``<study>-val.csv``."""
        return out / f"{self.name}.csv", out / f"{self.name}-val.csv"

    def labels(self) -> list[str]:
        return [cell.label for cell in self.plan().cells]

    def tune_spec(self) -> TuneSpec:
        """The declared tuning as :class:`~kdlab.ablation.tuning.TuneSpec`."""
        tune = self.tune
        if tune is None:
            raise KdlabError(f"{self.path}: declares no tune:")
        default = _axis(tune["key"], tune["values"], tune["scale"], tune["bounds"])
        per_group = {}
        for cell, own in tune["cells"].items():
            per_group[cell] = None if own is None else _axis(own.get("key", tune["key"]), own["values"],
                                                              own.get("scale", tune["scale"]),
                                                              own.get("bounds", tune["bounds"]))
        return TuneSpec(default, per_group, seeds=tuple(tune["seeds"]), max_rounds=tune["max_rounds"],
                        bisections=tune["bisections"], collapsed=tune.get("collapsed", "keep"))

    @property
    def tune_metric(self) -> str:
        return (self.tune or {}).get("metric") or self.metric

    @property
    def tune_val_size(self) -> int | None:
        return (self.tune or {}).get("val_size")

    def columns(self) -> dict[str, str]:
        """What every row of the study's tables records of the declaration."""
        return {"study": self.name, "study_sha256": self.digest, "study_declaration": self.canonical}

    def describe(self) -> list[str]:
        """The dry run's lines: the declaration and its expansion."""
        plan = self.plan()
        tune = self.tune
        lines = [f"study {self.name} (sha256 {self.digest}): {self.declaration['question']}",
                 f"  recipe {self.declaration['recipe']}, {len(plan.cells)} cells × {len(plan.seeds)} seeds = "
                 f"{len(plan.cells) * len(plan.seeds)} runs: {', '.join(self.labels())}"
                 + (" (+ the shared teacher)" if plan.include_teacher else ""),
                 (f"  seeds {', '.join(map(str, self.seeds))}; metric {self.metric}; comparisons "
                 f"{_comparisons_text(self.declaration['comparisons'])}; correction {self.declaration['correction']}")]
        if tune is not None:
            spec = self.tune_spec()
            grids = "; ".join(f"{cell.label}: {axis.key}={','.join(axis.values)} ({axis.scale}"
                              + (f", bounds {list(axis.bounds)}" if axis.bounds != (None, None) else "") + ")"
                              if (axis := spec.axis(cell.label)) else f"{cell.label}: not tuned"
                              for cell in plan.cells)
            lines.append(f"  tuning on validation {self.tune_metric}, mean of seeds {tune['seeds']}, up to "
                         f"{tune['max_rounds']} rounds" + ", values with a collapsed seed excluded"
                         * (spec.collapsed == "exclude") + f": {grids}")
        final = self.declaration["final"]
        if final is not None:
            lines.append(f"  final evaluation: {', '.join(final['attacks'])} on n={final['n']} test images"
                         + (", sanity checks" if final["sanity"] else ""))
        lines.append(f"  table {plan.title}.csv; regenerate: {self.command()}")
        return lines


def tuning_progress(study: Study, out: Path) -> tuple[AblationPlan, int, dict[str, str] | None]:
    """Where the study's declared tuning stands in the tuning table under ``out`` (``<study>-val.csv``), replayed
    as ``kdlab ablate`` takes its rounds (:func:`kdlab.ablation.tuning.search_rounds`): a round counts when every
    (cell, seed) of its grid has a complete row, committed or finished here. Returns the grid of the round
    ``kdlab ablate`` runs next (the last one when the tuning is over), its number, and once every search stopped
    the chosen value per tuned cell (else ``None``)."""
    from kdlab.ablation.table import committed, table_rows
    from kdlab.ablation.tuning import choose, search_rounds

    spec, plan = study.tune_spec(), study.plan()
    found: list[dict] = []

    def rows_of(grid: AblationPlan, rounds: int, searches) -> list[dict] | None:
        rows = table_rows(grid, grid.table_path(out))
        kept = committed(grid, rows, None)
        if any((cell.label, seed) not in rows or kept.get((cell.label, seed)) is not None
               for cell in grid.cells for seed in grid.seeds):
            return None
        found[:] = rows.values()
        return list(found)

    grid, searches, rounds, over = search_rounds(plan, spec, study.tune_val_size, study.tune_metric, rows_of)
    return grid, rounds, choose(plan, spec, found, study.tune_metric, searches) if over else None


def _checked(plan: AblationPlan, out: Path, final: dict | None, timing: bool, threads: int | None) -> Any:
    """The plan check of ``plan`` with each (cell, seed) whose complete row the committed table holds shown as
    *from the table* (``kdlab ablate`` does not retrain it, :func:`kdlab.ablation.table.committed`)."""
    from kdlab.ablation.table import committed, table_rows
    from kdlab.check.plan import check_ablation_plan

    checked = check_ablation_plan(plan, out, timing=timing, threads=threads)
    kept = committed(plan, table_rows(plan, plan.table_path(out)), final)
    for run in checked.runs:
        if run.status != "finished" and kept.get((run.role, run.seed), "") is None:
            run.status = "committed"
    return checked


def check_study_plan(study: Study, out: Path, timing: bool = True, threads: int | None = None) -> list[Any]:
    """``kdlab check STUDY.yaml``: the plan checks (:func:`kdlab.check.plan.check_ablation_plan`) of what
    ``kdlab ablate STUDY.yaml`` will do on this checkout, in order. A (cell, seed) whose complete row the committed
    table holds is *from the table* (not retrained). A tuned study first shows its tuning grid's current round
    (:func:`tuning_progress`) while its tuning is open -- later rounds depend on the scores, so its final cells are
    shown untuned -- and, once the tuning is over, the final plan with the chosen values. Under the final plan's
    estimate, the declared final evaluation's cost for the runs left, from the final evaluations the table records
    (the timed steps cover training only)."""
    import statistics

    from kdlab.ablation.table import table_rows
    from kdlab.ablation.tuning import seeds_plan
    from kdlab.runs.estimate import clock

    plan, checks = study.plan(), []
    final = study.declaration["final"]
    if study.tune is not None:
        grid, rounds, chosen = tuning_progress(study, out)
        if chosen is None:
            tuning = _checked(grid, out, None, timing, threads)
            tuning.after.append(f"tuning round {rounds} of at most {study.tune['max_rounds']}: later rounds depend "
                                "on its scores, so the final runs below are shown untuned")
            checks.append(tuning)
        else:
            spec = study.tune_spec()
            plan = seeds_plan(plan, spec, chosen, grid.table_path(out), suffix="")
    checked = _checked(plan, out, final, timing, threads)
    if plan.tuned:
        checked.after.append("tuning over: " + ", ".join(f"{cell}: {setting}" for cell, setting in plan.tuned.items())
                             + f" (chosen in {plan.tuned_on})")
    if final is not None:
        rows = table_rows(plan, plan.table_path(out))
        left = [run for run in checked.to_train if run.role != TEACHER_CELL]
        measured = [float(row["final_eval_seconds"]) for key, row in rows.items()
                    if key[0] != TEACHER_CELL and row.get("final_eval_seconds") not in (None, "")]
        what = f"declared final evaluation ({', '.join(final['attacks'])} on n={final['n']}" + \
            (", sanity" if final["sanity"] else "") + f") of the {len(left)} cell runs left"
        checked.after.append(f"{what}: about {clock(len(left) * statistics.median(measured))} more, one after "
                             f"another (the median of the {len(measured)} this table records)" if measured and left
                             else f"{what}: not estimated (the table records none yet)" if left
                             else "declared final evaluation: none left")
    return [*checks, checked]


def load_study(path: str | Path) -> Study:
    """Read and check a study file: one-line errors for every mistake visible without training."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise KdlabError(f"study file '{path}' not found: check the path (studies live in recipes/studies/)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise KdlabError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict) or "study" not in raw:
        raise KdlabError(f"{path}: a study file is a YAML mapping with a top-level study: key")
    study = Study(path, _normalise(raw, path))
    study.plan()  # the cells exist and validate; comparisons name them
    _check_comparisons(study)
    _check_metric(study)
    if study.tune is not None:  # every first-round tuning cell validates too (a mistyped key, no validation split)
        from kdlab.ablation.tuning import tuning_plan

        spec = study.tune_spec()
        spec.check_groups(study.labels(), where=f"{path}: tune.cells:")
        try:
            tuning_plan(study.plan(), spec, None, study.tune_val_size)
        except KdlabError as error:
            raise _fail(path, f"tune: {error}") from None
    return study


# ``kdlab ablate`` / ``kdlab check`` flags that would change what a study runs or how its table is read
PLAN_FLAGS = ("--components", "--blocks", "--cumulative", "--per-block-weight", "--grid", "--methods", "--method-set",
              "--inner-steps", "--inner-step", "--seeds", "--attack", "--set", "--name", "--tune", "--tune-val-size",
              "--tune-seed", "--tune-seeds", "--tune-rounds", "--tune-scale", "--tune-metric", "--tune-from")


def refuse_plan_flags(path: str | Path, given: dict[str, bool]) -> None:
    """Refuse, with a study file, any flag of :data:`PLAN_FLAGS` given (``given``: flag -> whether it was given);
    runtime flags (--jobs, --threads, --time-limit, --executor, --slurm, --out, --dry-run) stay allowed."""
    used = [flag for flag in PLAN_FLAGS if given.get(flag)]
    if used:
        raise KdlabError(f"{used[0]} would change what study {Path(path).name} declares (cells, seeds, metric, "
                         "comparisons, tuning): edit the study file or declare a new one")


def refuse_changed(study: Study, out: Path) -> None:
    """Refuse to run when ``out`` holds the study's table (or tuning table) written under another declaration."""
    from kdlab.results import read_table

    for table in study.tables(out):
        if not table.is_file() or table.stat().st_size == 0:
            continue
        frame = read_table(table)
        recorded = set(frame["study_sha256"].dropna().astype(str)) if "study_sha256" in frame.columns else {"none"}
        if recorded - {study.digest}:
            raise KdlabError(f"study {study.name} changed since its table {table} was written (sha256 "
                             f"{min(recorded - {study.digest})}, now {study.digest}): declare a new study "
                             "(new name) instead of editing it")


# --------------------------------------------------------------------------- checks and normalisation
def _fail(path: Path, message: str) -> KdlabError:
    return KdlabError(f"{path}: {message}")


def _unknown_keys(path: Path, where: str, mapping: dict, allowed: tuple[str, ...]) -> None:
    for key in mapping:
        if key not in allowed:
            raise _fail(path, f"unknown key {where}{key}{did_you_mean(str(key), allowed)}; keys: {', '.join(allowed)}")


def _text_list(path: Path, where: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(path, f"{where} must be a list of strings, e.g. {where}: ['train.epochs=10']")
    return list(value)


def _scalar(value: Any) -> str:
    """A grid or tuning value as its override writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _int_list(path: Path, where: str, value: Any, *, allow_empty: bool = False) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _fail(path, f"{where} must be a list of integers, e.g. {where}: [0, 1, 2]")
    if not value and not allow_empty:
        raise _fail(path, f"{where} is empty: declare at least one")
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise _fail(path, f"{where} lists {repeated[0]} twice")
    return list(value)


def _bounds(path: Path, where: str, value: Any) -> list[float | None]:
    if value is None:
        return [None, None]
    if (not isinstance(value, list) or len(value) != 2
            or not all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise _fail(path, f"{where} must be [LOW, HIGH] (numbers, or null for no bound), e.g. {where}: [0, 1]")
    low, high = (None if v is None else float(v) for v in value)
    if low is not None and high is not None and low >= high:
        raise _fail(path, f"{where} {value}: LOW must be below HIGH")
    return [low, high]


def _normalise(raw: dict, path: Path) -> dict[str, Any]:
    _unknown_keys(path, "", raw, KEYS)
    missing = [key for key in REQUIRED if raw.get(key) is None or raw.get(key) == ""]
    if missing:
        raise _fail(path, f"missing {missing[0]}: (a study declares {', '.join(REQUIRED)} up front)")
    name = raw["study"]
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise _fail(path, f"study: {name!r} must be a table name (letters, digits, _ - .)")
    if not isinstance(raw["question"], str):
        raise _fail(path, "question: one line saying what the study asks")
    recipe = raw["recipe"]
    if not isinstance(recipe, str) or not (path.parent / recipe).is_file():
        raise _fail(path, f"recipe {recipe!r} not found (relative to {path.parent}): name the base recipe, e.g. "
                          "recipe: ../mixacm_cifar10_cpu.yaml")
    declaration: dict[str, Any] = {
        "study": name, "question": " ".join(raw["question"].split()), "recipe": recipe,
        "set": _text_list(path, "set", raw.get("set")),
        "cells": _cells(path, raw["cells"]),
        "seeds": _int_list(path, "seeds", raw["seeds"]),
        "metric": str(raw["metric"]),
        "attacks": _attacks(path, "attacks", raw.get("attacks", ["pgd"])),
        "comparisons": _comparisons(path, raw["comparisons"]),
        "correction": raw.get("correction", "holm"),
        "tune": _tune(path, raw.get("tune")),
        "final": _final(path, raw.get("final")),
    }
    if declaration["correction"] not in CORRECTIONS:
        raise _fail(path, f"correction {declaration['correction']!r}: choose {' or '.join(CORRECTIONS)}"
                          f"{did_you_mean(str(declaration['correction']), CORRECTIONS)}")
    return declaration


def _attacks(path: Path, where: str, value: Any) -> list[str]:
    attacks = _text_list(path, where, value)
    for attack in attacks:
        if attack not in ATTACKS:
            raise _fail(path, f"{where}: unknown attack {attack!r}{did_you_mean(attack, ATTACKS)}; attacks: "
                              f"{', '.join(ATTACKS)}")
    return attacks


def _cells(path: Path, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "cells: a mapping with one preset, e.g. cells: {components: true}")
    allowed = tuple(dict.fromkeys([*PRESETS, *(o for options in PRESET_OPTIONS.values() for o in options)]))
    _unknown_keys(path, "cells.", value, allowed)
    presets = [key for key in PRESETS if key in value]
    if len(presets) != 1:
        raise _fail(path, f"cells: declare exactly one of {', '.join(PRESETS)} (found "
                          f"{', '.join(presets) or 'none'})")
    preset = presets[0]
    stray = [key for key in value if key not in (preset, *PRESET_OPTIONS[preset])]
    if stray:
        raise _fail(path, f"cells.{stray[0]} belongs to another preset than {preset}")
    cells: dict[str, Any] = {}
    if preset == "components":
        if value["components"] is not True:
            raise _fail(path, "cells.components: write components: true")
        cells["components"] = True
    elif preset == "blocks":
        cells["blocks"] = _int_list(path, "cells.blocks", value["blocks"])
        for flag in ("cumulative", "per_block_weight"):
            if not isinstance(value.get(flag, False), bool):
                raise _fail(path, f"cells.{flag}: true or false")
            cells[flag] = value.get(flag, False)
    elif preset == "methods":
        methods = value["methods"]
        if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
            raise _fail(path, "cells.methods: a list of method names, e.g. [mixacm, kd, ard]")
        cells["methods"] = list(methods)
        cells["method_set"] = _text_list(path, "cells.method_set", value.get("method_set"))
        steps = value.get("inner_steps")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            raise _fail(path, "cells.inner_steps: a positive integer")
        cells["inner_steps"] = steps
        cells["inner_step"] = None if value.get("inner_step") is None else _scalar(value["inner_step"])
    else:
        grid = value["grid"]
        if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
            raise _fail(path, "cells.grid: KEY: [V1, V2, ...] per key, e.g. grid: {method.feature.kind: [none, l2]}")
        cells["grid"] = [[str(key), [_scalar(v) for v in values]] for key, values in grid.items()]
    return cells


def _comparisons(path: Path, value: Any) -> dict[str, Any]:
    if value == "none":  # a study that measures without comparing (e.g. one cell beside the teacher's row)
        return {"pairs": []}
    if not isinstance(value, dict) or len(value) != 1:
        raise _fail(path, "comparisons: {baseline: CELL} (every other cell against it), {pairs: [[A, B], ...]} or "
                          "none (a study that only measures)")
    _unknown_keys(path, "comparisons.", value, COMPARISON_KEYS)
    if "baseline" in value:
        if not isinstance(value["baseline"], str):
            raise _fail(path, "comparisons.baseline: one cell's name, e.g. baseline: mixacm")
        return {"baseline": value["baseline"]}
    pairs = value["pairs"]
    if (not isinstance(pairs, list) or not pairs
            or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(c, str) for c in p) for p in pairs)):
        raise _fail(path, "comparisons.pairs: a list of [CELL, AGAINST] pairs, e.g. pairs: [[mixacm, acm]]")
    seen = set()
    for first, second in pairs:
        if first == second:
            raise _fail(path, f"comparisons.pairs: [{first}, {second}] compares a cell with itself")
        if frozenset((first, second)) in seen:
            raise _fail(path, f"comparisons.pairs: [{first}, {second}] is declared twice")
        seen.add(frozenset((first, second)))
    return {"pairs": [list(pair) for pair in pairs]}


def _comparisons_text(comparisons: dict) -> str:
    if "baseline" in comparisons:
        return f"every cell − {comparisons['baseline']}"
    return ", ".join(f"{a} − {b}" for a, b in comparisons["pairs"]) or "none declared"


def _tune(path: Path, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(path, "tune: a mapping (key, values, seeds, scale, bounds, max_rounds, ...) or null")
    _unknown_keys(path, "tune.", value, TUNE_KEYS)
    if not isinstance(value.get("key"), str) or not isinstance(value.get("values"), list) or not value["values"]:
        raise _fail(path, "tune: declare key: and values: (the first round's grid), e.g. key: method.weight, "
                          "values: [0.1, 1, 10]")
    seeds = _int_list(path, "tune.seeds", value.get("seeds", [0, 1]))
    if len(seeds) < 2:
        raise _fail(path, f"tune.seeds {seeds}: declare two seeds or more (the choice uses their mean)")
    tune = {"key": value["key"], "values": [_scalar(v) for v in value["values"]], "seeds": seeds,
            "metric": value.get("metric"), "scale": value.get("scale", "log"),
            "bounds": _bounds(path, "tune.bounds", value.get("bounds")),
            "max_rounds": value.get("max_rounds", 4), "bisections": value.get("bisections", 1),
            "val_size": value.get("val_size"), "cells": {}}
    for where, number, low in (("max_rounds", tune["max_rounds"], 1), ("bisections", tune["bisections"], 0)):
        if not isinstance(number, int) or isinstance(number, bool) or number < low:
            raise _fail(path, f"tune.{where}: an integer of at least {low}")
    if tune["val_size"] is not None and (not isinstance(tune["val_size"], int) or tune["val_size"] < 1):
        raise _fail(path, "tune.val_size: a positive number of training images held out for tuning")
    if tune["scale"] not in SCALES:
        raise _fail(path, f"tune.scale {tune['scale']!r}: choose {' or '.join(SCALES)}")
    collapsed = value.get("collapsed", "keep")
    if collapsed not in COLLAPSED_RULES:
        raise _fail(path, f"tune.collapsed {collapsed!r}: choose {' or '.join(COLLAPSED_RULES)} (exclude: a value "
                          "with a collapsed seed is never chosen)")
    if collapsed != "keep":  # recorded only when declared: the default leaves earlier declarations' sha256 alone
        tune["collapsed"] = collapsed
    cells = value.get("cells") or {}
    if not isinstance(cells, dict):
        raise _fail(path, "tune.cells: CELL: {values: [...]} (its own grid), or CELL: null (not tuned)")
    for cell, own in cells.items():
        if own is None:
            tune["cells"][str(cell)] = None
            continue
        if not isinstance(own, dict) or not isinstance(own.get("values"), list) or not own["values"]:
            raise _fail(path, f"tune.cells.{cell}: {{values: [...]}} (its own grid; key, scale and bounds optional) "
                              "or null (not tuned)")
        _unknown_keys(path, f"tune.cells.{cell}.", own, TUNE_CELL_KEYS)
        entry = {"values": [_scalar(v) for v in own["values"]]}
        if "key" in own:
            entry["key"] = str(own["key"])
        if "scale" in own:
            if own["scale"] not in SCALES:
                raise _fail(path, f"tune.cells.{cell}.scale {own['scale']!r}: choose {' or '.join(SCALES)}")
            entry["scale"] = own["scale"]
        if "bounds" in own:
            entry["bounds"] = _bounds(path, f"tune.cells.{cell}.bounds", own["bounds"])
        tune["cells"][str(cell)] = entry
    return tune


def _axis(key: str, values: list[str], scale: str, bounds: list) -> Axis:
    return Axis(key, tuple(values), scale, (bounds[0], bounds[1]))


def _final(path: Path, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(path, "final: {attacks: [pgd, cw, autoattack], n: 1000, sanity: true} or null")
    _unknown_keys(path, "final.", value, FINAL_KEYS)
    n = value.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _fail(path, "final.n: the number of test images every attack evaluates, e.g. n: 1000")
    if not isinstance(value.get("sanity", False), bool):
        raise _fail(path, "final.sanity: true or false")
    attacks = _attacks(path, "final.attacks", value.get("attacks"))
    if not attacks:
        raise _fail(path, "final.attacks: the attacks of the final evaluation, e.g. [pgd, cw, autoattack]")
    return {"attacks": attacks, "n": n, "sanity": value.get("sanity", False)}


def _expand(study: Study) -> AblationPlan:
    declaration, path = study.declaration, study.path
    cells = declaration["cells"]
    try:
        plan = plan_ablation(
            str(path.parent / declaration["recipe"]), components=bool(cells.get("components")),
            blocks=",".join(map(str, cells["blocks"])) if "blocks" in cells else None,
            cumulative=cells.get("cumulative", False), per_block_weight=cells.get("per_block_weight", False),
            grid=[f"{key}={','.join(values)}" for key, values in cells.get("grid", [])],
            methods=",".join(cells["methods"]) if "methods" in cells else None,
            method_overrides=cells.get("method_set", []), inner_steps=cells.get("inner_steps"),
            inner_step=cells.get("inner_step"), seeds=declaration["seeds"], attacks=declaration["attacks"],
            overrides=declaration["set"], name=declaration["study"])
    except KdlabError as error:
        raise _fail(path, str(error)) from None
    # a declared run whose loss diverges is a result (the same seed diverges again), recorded as a flagged row:
    # the study keeps its declared seeds and goes on with its other runs instead of stopping at the first
    return replace(plan, table_name=declaration["study"], study=study.columns(), command=study.command(),
                   divergence_is_a_result=True)


def _check_comparisons(study: Study) -> None:
    labels = study.labels()
    comparisons = study.declaration["comparisons"]
    named = [comparisons["baseline"]] if "baseline" in comparisons else [c for pair in comparisons["pairs"]
                                                                          for c in pair]
    for cell in named:
        if cell not in labels:
            raise _fail(study.path, f"comparisons name cell {cell!r}, which the study does not run"
                                    f"{did_you_mean(cell, labels)}; cells: {', '.join(labels)}")


def _check_metric(study: Study) -> None:
    plan = study.plan()
    task = plan.recipe_for(plan.cells[0], plan.seeds[0]).task
    measured = list(DETECTION_METRICS) if task == "detection" else \
        ["clean_acc", *(f"{attack}_acc" for attack in study.declaration["attacks"] if attack != "clean")]
    for where, metric in (("metric", study.metric), ("tune.metric", (study.tune or {}).get("metric"))):
        if metric is not None and metric not in measured:
            raise _fail(study.path, f"{where}: unknown metric {metric!r}{did_you_mean(metric, measured)}; this "
                                    f"study's runs measure {', '.join(measured)}")


def _repository_path(path: Path) -> str:
    """``path`` relative to the repository holding it (the nearest folder above with ``.git``), else as given."""
    resolved = path.resolve()
    for parent in resolved.parents:
        if (parent / ".git").exists():
            return resolved.relative_to(parent).as_posix()
    return str(path)
