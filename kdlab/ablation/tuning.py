"""``kdlab ablate --tune`` and a study's ``tune:``: choose one setting per ablation cell on a validation split,
then run the seeds.

A fair comparison of losses whose scales differ (Structural KD's per-level SSIM term against l1, l2, PKD, CWD,
MGD) gives each its own weight, chosen the same way for all and never on the test images:

1. **Tuning grid** (table ``<title>-val``, a study's ``<study>-val``): every cell of the ablation (a *group*,
   e.g. ``kind=pkd``) crossed with its values (``--tune method.feature.weight=0.2,2,20``; a group may have its
   own list, ``--tune 'method.feature.weight[kind=mgd]=2e-6,2e-5,2e-4'``, and in a study its own key, scale and
   bounds), on the tuning seeds (a study's ``tune.seeds``, default 0 and 1; ``--tune-seeds``), trained on the
   training images minus a held-out validation split and scored on it (``eval.split=val``).
   **Selection is the final runs' rule**: a recipe with a validation split selects ``best.pt`` on it in the
   tuning runs exactly as in the final runs (``train.select`` is left alone); a recipe without one gets
   ``data.val_size=--tune-val-size`` images held out for tuning and ``train.select=last``, because its final runs
   (no validation split) keep their last epoch too. The test split is not evaluated.
2. **Choice**: per group, the value with the highest mean over the tuning seeds of the validation metric (default:
   AP for detection, else PGD, else clean accuracy; ties go to the value tried first). A value whose run diverged
   on any seed (non-finite loss: a flagged row with no metrics, :mod:`kdlab.ablation.execute`) is *diverged*.
   A value with a *collapsed* seed (a model predicting one or two classes, whose robust accuracy means nothing:
   the row's ``flag``, :mod:`kdlab.robustness.accuracy`) still counts by default, as every tuning rule in the
   field's code does (none detects collapse); a study declaring ``tune.collapsed: exclude`` treats it as diverged
   (never chosen; the search bisects towards it), so a value on the edge of collapse is not chosen for its
   meaningless robust accuracy.
3. **Rounds** (:func:`next_values`, a pure function of the scores): while the best value of a group sits at an
   open edge of what was tried, the next round tries one more value past it (the grid's own step: ×ratio on a
   ``log`` scale, +difference on a ``linear`` one, clipped to the declared ``bounds``); when the best value's
   neighbour diverged, it tries the midpoint between them (geometric on ``log``, arithmetic on ``linear``; at
   most ``bisections`` times). A group stops when its best value is *interior*, sits on a declared *bound*,
   *brackets a divergence*, or after ``max_rounds`` rounds. The tuning table records every value tried, the round
   that added it and why (``tune_round``, ``tune_added``), why the group stopped (``tune_stop``), and the seeds
   the choice averaged (``tune_seeds``).
4. **Seeds** (table ``<title>-tuned``; a study's ``<study>``): every group with its chosen value, on the recipe's
   own data and test split, for every seed. Its CSV and Markdown carry the choice per cell (``tuned``) and the
   tuning table it came from (``tuned_on``).

Every phase is an ordinary cached ablation: rerunning the command reuses finished runs, resumes interrupted ones and
recomputes the same rounds and the same choice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kdlab.ablation.grid import AblationPlan, Cell, split_values
from kdlab.errors import KdlabError
from kdlab.report.tables import TEACHER_CELL, best_tuned_value, is_collapsed, tuning_cell, tuning_score

_ENTRY = re.compile(r"^(?P<key>[^=\[\]]+?)(?:\[(?P<group>[^\]]+)\])?=(?P<values>.+)$")

SCALES = ("log", "linear")
# what a tuning value with a collapsed seed scores (a study's ``tune.collapsed``): its mean, or nothing (diverged)
COLLAPSED_RULES = ("keep", "exclude")
# why a group's search stopped (the tuning table's ``tune_stop``)
INTERIOR, BOUND, BRACKETED, MAX_ROUNDS = "interior", "bound", "bracketed divergence", "max rounds"
ALL_DIVERGED, ONE_VALUE, NOT_NUMERIC = "every value diverged", "one value", "values not numeric"


@dataclass(frozen=True)
class Axis:
    """What one group tunes: a key, its first round's values, their spacing and the bounds no value may pass."""

    key: str
    values: tuple[str, ...]
    scale: str = "log"
    bounds: tuple[float | None, float | None] = (None, None)

    @property
    def short(self) -> str:
        return self.key.split(".")[-1]

    def setting(self, value: str) -> str:
        """``weight=2``: the seeds' ``tuned`` column."""
        return f"{self.short}={value}"

    def label(self, cell: str, value: str) -> str:
        """``kind=ssim,weight=2``: the tuning grid's cell (:func:`kdlab.report.tables.tuning_cell`)."""
        return tuning_cell(cell, self.setting(value))


@dataclass(frozen=True)
class TuneSpec:
    """The tuning protocol: every group's axis (``per_group`` replaces the default for a group; ``None`` leaves it
    untuned), the seeds whose mean decides, how many rounds and bisections the search may take, and whether a value
    with a collapsed seed may be chosen (``collapsed``: one of :data:`COLLAPSED_RULES`)."""

    default: Axis
    per_group: dict[str, Axis | None] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1)
    max_rounds: int = 4
    bisections: int = 1
    collapsed: str = "keep"

    @property
    def key(self) -> str:
        return self.default.key

    def axis(self, group: str) -> Axis | None:
        return self.per_group.get(group, self.default)

    def check_groups(self, labels: list[str], where: str = "--tune") -> None:
        unknown = sorted(set(self.per_group) - set(labels))
        if unknown:
            raise KdlabError(f"{where} {self.key}[{unknown[0]}]: no such cell; cells: {', '.join(labels)}")


def parse_tune(entries: list[str], seeds: tuple[int, ...] = (0,), max_rounds: int = 1, scale: str = "log",
               bounds: tuple[float | None, float | None] = (None, None)) -> TuneSpec:
    """``KEY=V1,V2,...`` once, plus any ``KEY[GROUP]=V1,...``; one key only (one-line errors otherwise). The flag's
    defaults keep its grid as given (one round); ``--tune-rounds`` lets it grow (:func:`next_values`)."""
    key, values, per_group = None, None, {}
    for entry in entries:
        match = _ENTRY.match(entry.strip())
        if not match:
            raise KdlabError(f"--tune '{entry}': expected KEY=V1,V2,V3 or KEY[CELL]=V1,V2, e.g. --tune "
                             "method.feature.weight=0.2,2,20")
        if key is not None and match["key"].strip() != key:
            raise KdlabError(f"--tune '{entry}': one key is tuned at a time and it is {key}")
        key = match["key"].strip()
        parsed = tuple(v.strip() for v in split_values(match["values"]))
        if match["group"] is None:
            if values is not None:
                raise KdlabError(f"--tune '{entry}': {key} has two default value lists; give one, and "
                                 f"{key}[CELL]=... for a cell's own")
            values = parsed
        else:
            per_group[match["group"].strip()] = parsed
    if key is None or values is None:
        raise KdlabError("--tune needs KEY=V1,V2,... (the values every cell tries), e.g. --tune "
                         "method.feature.weight=0.2,2,20")
    if scale not in SCALES:
        raise KdlabError(f"--tune-scale {scale}: choose {' or '.join(SCALES)}")
    return TuneSpec(Axis(key, values, scale, bounds),
                    {group: Axis(key, vals, scale, bounds) for group, vals in per_group.items()},
                    seeds=tuple(seeds), max_rounds=max_rounds)


# --------------------------------------------------------------------------- the search (pure)
def format_value(value: float) -> str:
    """A value a round adds, as its cell label and override write it: ``6.32e-06``, ``3.16``, ``200``."""
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


def as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def next_values(scores: dict[float, float | None], *, scale: str = "log",
                bounds: tuple[float | None, float | None] = (None, None), rounds_done: int = 1, max_rounds: int = 4,
                bisections_done: int = 0, max_bisections: int = 1) -> tuple[list[tuple[float, str]], str | None]:
    """The values the next round of one group tries, each with why (``extend up``, ``extend down``, ``bisect``),
    or none and why the search stops (``interior``, ``bound``, ``bracketed divergence``, ``max rounds``, ...).

    ``scores``: every value tried so far -> its validation score (mean over the tuning seeds), ``None`` when it
    diverged; in the order tried (ties go to the value tried first). The best value's two neighbours (in value
    order) decide: a side with no neighbour is an open edge, extended by the grid's own step (the ratio, or the
    difference, to the neighbour on the other side) but never past ``bounds``; a side whose neighbour diverged is
    bisected (at most ``max_bisections`` times in the search: ``bisections_done`` so far); a side whose
    neighbour scored is closed. ``rounds_done`` rounds have run; none is added past ``max_rounds``."""
    best = best_tuned_value(scores)  # the first of equal scores, in the order tried
    if best is None:
        return [], ALL_DIVERGED
    if len(scores) == 1:
        return [], ONE_VALUE
    ordered = sorted(scores)
    index = ordered.index(best)
    below = ordered[index - 1] if index > 0 else None
    above = ordered[index + 1] if index + 1 < len(ordered) else None
    low, high = bounds
    new: list[tuple[float, str]] = []
    reasons: set[str] = set()
    for side, neighbour, other, bound in (("down", below, above, low), ("up", above, below, high)):
        if neighbour is None:
            if bound is not None and math.isclose(best, bound):
                reasons.add(BOUND)
                continue
            value = best * best / other if scale == "log" else 2 * best - other
            if bound is not None and (value < bound if side == "down" else value > bound):
                value = bound
            new.append((value, f"extend {side}"))
        elif scores[neighbour] is None or math.isnan(scores[neighbour]):
            if bisections_done >= max_bisections:
                reasons.add(BRACKETED)
                continue
            value = math.sqrt(best * neighbour) if scale == "log" else (best + neighbour) / 2
            new.append((value, "bisect"))
        else:
            reasons.add(INTERIOR)
    if new:
        return (new, None) if rounds_done < max_rounds else ([], MAX_ROUNDS)
    return [], next(reason for reason in (BRACKETED, BOUND, INTERIOR) if reason in reasons)


@dataclass
class Trial:
    """One value of a group's grid: its text (cell label and override), the round that added it, and why."""

    text: str
    round: int = 1
    added: str = "grid"


@dataclass
class Search:
    """One group's search: the values tried so far and, once it stopped, why."""

    axis: Axis
    trials: list[Trial]
    stop: str | None = None

    @property
    def bisections(self) -> int:
        return sum(trial.added == "bisect" for trial in self.trials)


def start_searches(plan: AblationPlan, spec: TuneSpec) -> dict[str, Search]:
    """Every tuned group's first round (its declared values); untuned groups are absent."""
    spec.check_groups([cell.label for cell in plan.cells])
    return {cell.label: Search(axis, [Trial(value) for value in axis.values])
            for cell in plan.cells if (axis := spec.axis(cell.label)) is not None}


def advance(searches: dict[str, Search], scores: dict[str, dict[str, float | None]], spec: TuneSpec,
            rounds_done: int) -> bool:
    """Add each open group's next values (or its stop reason); whether any group has a value left to try."""
    more = False
    for group, search in searches.items():
        if search.stop is not None:
            continue
        numbers = {text: as_number(text) for text in scores[group]}
        if any(number is None for number in numbers.values()):
            search.stop = NOT_NUMERIC
            continue
        if search.axis.scale == "log" and any(number <= 0 for number in numbers.values()):
            search.stop = NOT_NUMERIC + " (log scale needs positive values)"
            continue
        values, reason = next_values({numbers[text]: score for text, score in scores[group].items()},
                                     scale=search.axis.scale, bounds=search.axis.bounds, rounds_done=rounds_done,
                                     max_rounds=spec.max_rounds, bisections_done=search.bisections,
                                     max_bisections=spec.bisections)
        if reason is not None:
            search.stop = reason
            continue
        tried = set(numbers.values())
        fresh = [(value, why) for value, why in values if not any(math.isclose(value, old) for old in tried)]
        if not fresh:  # the step past the edge, clipped to a bound, was tried already
            search.stop = BOUND
        for value, why in fresh:
            search.trials.append(Trial(format_value(value), rounds_done + 1, why))
            more = True
    return more


RoundRows = Callable[[AblationPlan, int, dict[str, Search]], "list[dict] | None"]
"""``rows_of(grid, round, searches)`` for :func:`search_rounds`."""


def search_rounds(plan: AblationPlan, spec: TuneSpec, val_size: int | None, metric: str,
                  rows_of: RoundRows) -> tuple[AblationPlan, dict[str, Search], int, bool]:
    """The tuning's rounds in order, as ``kdlab ablate`` takes them: each round's grid (:func:`tuning_plan`) is
    handed to ``rows_of(grid, round, searches)`` (:data:`RoundRows`), which returns that round's rows -- by running
    it, or read from a committed table -- or ``None`` when the round is not complete (the replay stops there); its
    scores decide the next round (:func:`advance`). Returns the last grid, the searches, the round number and
    whether every search stopped."""
    searches = start_searches(plan, spec)
    rounds = 1
    while True:
        grid = tuning_plan(plan, spec, None, val_size, searches)
        rows = rows_of(grid, rounds, searches)
        if rows is None:
            return grid, searches, rounds, False
        if not advance(searches, group_scores(plan, spec, rows, metric, searches), spec, rounds):
            return grid, searches, rounds, True
        rounds += 1


# --------------------------------------------------------------------------- plans
def tuning_plan(plan: AblationPlan, tune: TuneSpec, seeds: int | list[int] | tuple[int, ...] | None,
                val_size: int | None, searches: dict[str, Search] | None = None) -> AblationPlan:
    """The tuning grid: every tuned cell of ``plan`` times the values its search has tried (first round: the
    declared ones), on a validation split, on the tuning seeds; one table however many rounds it grows by."""
    from kdlab.config.recipe import apply_overrides, validate_recipe

    seeds = list(tune.seeds) if seeds is None else [seeds] if isinstance(seeds, int) else list(seeds)
    searches = searches if searches is not None else start_searches(plan, tune)
    for group, search in searches.items():
        cell = next(cell for cell in plan.cells if cell.label == group)
        if any(o.startswith(search.axis.key + "=") for o in cell.overrides):
            raise KdlabError(f"--tune {search.axis.key}: the ablation's cells already set it; tune another key")
    base = validate_recipe(apply_overrides(plan.base_raw, plan.common_overrides), source=plan.recipe_path)
    split = ["eval.split=val"]
    if base.data.val_size == 0:
        if not val_size:
            raise KdlabError(f"{plan.recipe_path} has no validation split (data.val_size 0): pass --tune-val-size "
                             "N (a study: tune.val_size) to hold out N training images for tuning")
        split += [f"data.val_size={val_size}", "train.select=last"]  # its final runs keep their last epoch too
    elif val_size and val_size != base.data.val_size:
        raise KdlabError(f"--tune-val-size {val_size}: the recipe already holds out data.val_size="
                         f"{base.data.val_size} images; drop --tune-val-size or change the recipe")

    def cells(first_round_only: bool) -> list[Cell]:
        return [Cell(search.axis.label(cell.label, trial.text),
                     (*cell.overrides, f"{search.axis.key}={trial.text}"))
                for cell in plan.cells if (search := searches.get(cell.label)) is not None
                for trial in search.trials if trial.round == 1 or not first_round_only]

    keys = tuple(dict.fromkeys(search.axis.key for search in searches.values()))
    tuned = replace(plan, cells=cells(True), seeds=seeds, include_teacher=False,
                    common_overrides=[*plan.common_overrides, *split], title_suffix="-val",
                    grid_keys=(*plan.grid_keys, *keys), tuned={}, tuned_on=None, divergence_is_a_result=True,
                    fixed_fingerprint=None, cell_notes={})
    notes = {search.axis.label(group, trial.text): {"tune_round": trial.round, "tune_added": trial.added,
                                                     "tune_seeds": len(seeds)}
             for group, search in searches.items() for trial in search.trials}
    tuned = replace(tuned, cells=cells(False), fixed_fingerprint=tuned.fingerprint, cell_notes=notes)
    for cell in tuned.cells:  # every tuning cell validates before any training
        tuned.recipe_for(cell, seeds[0])
    return tuned


def default_metric(task: str, attacks: list[str]) -> str:
    if task == "detection":
        return "AP"
    return "pgd_acc" if "pgd" in attacks else "clean_acc"


def group_scores(plan: AblationPlan, spec: TuneSpec, rows: list[dict], metric: str,
                 searches: dict[str, Search] | None = None) -> dict[str, dict[str, float | None]]:
    """Per tuned group, every value tried -> the mean over its seeds of ``metric`` (``None``: diverged on a seed,
    collapsed on a seed under ``collapsed: exclude``, or no value). ``searches``: the values the tuning ran (each
    must have its rows); without them (a finished table from elsewhere, ``--tune-from``) the declared values must
    have rows and any other value found counts."""
    by_label: dict[str, list] = {}
    for row in rows:
        if row.get("cell") != TEACHER_CELL:
            by_label.setdefault(str(row["cell"]), []).append(row)
    result = {}
    for cell in plan.cells:
        axis = spec.axis(cell.label)
        if axis is None:
            continue
        if searches is not None:
            texts = [trial.text for trial in searches[cell.label].trials]
        else:
            prefix = tuning_cell(cell.label, axis.short + "=")
            texts = list(dict.fromkeys([*axis.values, *(label[len(prefix):] for label in by_label
                                                         if label.startswith(prefix))]))
        missing = [axis.label(cell.label, text) for text in texts if axis.label(cell.label, text) not in by_label]
        if missing:
            raise KdlabError(f"the tuning table has no row for {missing[0]}: pass the --tune values it was made "
                             f"with (its cells: {', '.join(sorted(by_label)) or 'none'})")
        runs = {text: by_label[axis.label(cell.label, text)] for text in texts}
        result[cell.label] = {
            text: tuning_score([row.get(metric) for row in trial_rows],
                               any(is_collapsed(row.get("flag")) for row in trial_rows), spec.collapsed)
            for text, trial_rows in runs.items()}
    return result


def choose(plan: AblationPlan, spec: TuneSpec, rows: list[dict], metric: str,
           searches: dict[str, Search] | None = None) -> dict[str, str]:
    """Per tuned cell of ``plan``, the value with the highest mean ``metric`` over its seeds in the tuning rows
    (first tried on ties)."""
    chosen = {}
    for group, scores in group_scores(plan, spec, rows, metric, searches).items():
        best = best_tuned_value(scores)
        if best is None:
            raise KdlabError(f"no {metric} for cell {group} in the tuning table (every value diverged, or "
                             f"choose --tune-metric from its columns, e.g. AP, AP50, clean_acc)")
        chosen[group] = best
    return chosen


def seeds_plan(plan: AblationPlan, spec: TuneSpec, chosen: dict[str, str], tuning_table: Path,
               suffix: str = "-tuned") -> AblationPlan:
    """The ablation's cells, each tuned one with its chosen value, on the recipe's own data and test split."""
    cells = [Cell(cell.label, (*cell.overrides, f"{spec.axis(cell.label).key}={chosen[cell.label]}"))
             if cell.label in chosen else cell for cell in plan.cells]
    return replace(plan, cells=cells, title_suffix=suffix, tuned_on=tuning_table.name,
                   tuned={label: spec.axis(label).setting(value) for label, value in chosen.items()})


def tuned_rows(table: Path) -> list[dict]:
    from kdlab.results import read_table

    frame = read_table(table)
    return frame.where(frame.notna(), None).to_dict("records")


def record_stops(table: Path, searches: dict[str, Search]) -> None:
    """Write each group's stop reason (``tune_stop``) into every row of the finished tuning table, and render it."""
    from kdlab.report.tables import write_ablation_outputs

    stops = {search.axis.label(group, trial.text): search.stop or ""
             for group, search in searches.items() for trial in search.trials}
    rows = tuned_rows(table)
    for row in rows:
        row["tune_stop"] = stops.get(str(row.get("cell")), "")
    write_ablation_outputs(rows, table)
