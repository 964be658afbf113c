"""``kdlab ablate --tune``: choose one setting per ablation cell on a validation split, then run the seeds.

A fair comparison of losses whose scales differ (Structural KD's per-level SSIM term against l1, l2, PKD, CWD,
MGD) gives each its own weight, chosen the same way for all and never on the test images:

1. **Tuning grid** (table ``<title>-val``): every cell of the ablation (a *group*, e.g. ``kind=pkd``) crossed
   with the tuned values (``--tune method.feature.weight=0.2,2,20``; a group may have its own list:
   ``--tune 'method.feature.weight[kind=mgd]=2e-6,2e-5,2e-4'``), one seed (``--tune-seed``, default the first
   of ``--seeds``), trained on the training images minus a held-out validation split and scored on it
   (``eval.split=val``). A recipe without a validation split gets ``data.val_size=--tune-val-size`` images
   held out of its training images (seeded by ``data.split_seed``) and ``train.select=last``, so the tuning
   runs keep their last epoch like the final runs do; the test split is not evaluated.
2. **Choice**: per group, the value with the highest ``--tune-metric`` (default: AP for detection, else PGD,
   else clean accuracy; ties go to the value listed first).
3. **Seeds** (table ``<title>-tuned``): every group with its chosen value, on the recipe's own data and test
   split, for every seed of ``--seeds``. Its CSV and Markdown carry the choice per cell (``tuned``) and the
   tuning table it came from (``tuned_on``).

Both phases are ordinary cached ablations: rerunning the command reuses finished runs, resumes interrupted
ones and recomputes the same choice.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from kdlab.ablation.grid import AblationPlan, Cell, split_values
from kdlab.errors import KdlabError
from kdlab.report.tables import TEACHER_CELL, tuning_cell

_ENTRY = re.compile(r"^(?P<key>[^=\[\]]+?)(?:\[(?P<group>[^\]]+)\])?=(?P<values>.+)$")


@dataclass(frozen=True)
class TuneSpec:
    """One tuned key, its values, and per-group value lists that replace them for that group."""

    key: str
    values: tuple[str, ...]
    per_group: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def values_for(self, group: str) -> tuple[str, ...]:
        return self.per_group.get(group, self.values)

    @property
    def short(self) -> str:
        return self.key.split(".")[-1]

    def setting(self, value: str) -> str:
        """``weight=2``: the seeds' ``tuned`` column."""
        return f"{self.short}={value}"

    def label(self, cell: str, value: str) -> str:
        """``kind=ssim,weight=2``: the tuning grid's cell (:func:`kdlab.report.tables.tuning_cell`)."""
        return tuning_cell(cell, self.setting(value))


def parse_tune(entries: list[str]) -> TuneSpec:
    """``KEY=V1,V2,...`` once, plus any ``KEY[GROUP]=V1,...``; one key only (one-line errors otherwise)."""
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
    return TuneSpec(key, values, per_group)


def tuning_plan(plan: AblationPlan, tune: TuneSpec, seed: int, val_size: int | None) -> AblationPlan:
    """The tuning grid: every cell of ``plan`` times its values, on a validation split, one seed."""
    from kdlab.config.recipe import apply_overrides, validate_recipe

    labels = [cell.label for cell in plan.cells]
    unknown = sorted(set(tune.per_group) - set(labels))
    if unknown:
        raise KdlabError(f"--tune {tune.key}[{unknown[0]}]: no such cell; cells: {', '.join(labels)}")
    if any(cell.overrides and any(o.startswith(tune.key + "=") for o in cell.overrides) for cell in plan.cells):
        raise KdlabError(f"--tune {tune.key}: the ablation's cells already set it; tune another key")
    base = validate_recipe(apply_overrides(plan.base_raw, plan.common_overrides), source=plan.recipe_path)
    split = ["eval.split=val"]
    if base.data.val_size == 0:
        if not val_size:
            raise KdlabError(f"{plan.recipe_path} has no validation split (data.val_size 0): pass --tune-val-size "
                             "N to hold out N training images for tuning")
        split += [f"data.val_size={val_size}", "train.select=last"]
    elif val_size and val_size != base.data.val_size:
        raise KdlabError(f"--tune-val-size {val_size}: the recipe already holds out data.val_size="
                         f"{base.data.val_size} images; drop --tune-val-size or change the recipe")
    cells = [Cell(tune.label(cell.label, value), (*cell.overrides, f"{tune.key}={value}"))
             for cell in plan.cells for value in tune.values_for(cell.label)]
    tuned = replace(plan, cells=cells, seeds=[seed], include_teacher=False,
                    common_overrides=[*plan.common_overrides, *split], title_suffix="-val",
                    grid_keys=(*plan.grid_keys, tune.key), tuned={}, tuned_on=None, divergence_is_a_result=True)
    for cell in cells:  # every tuning cell validates before any training
        tuned.recipe_for(cell, seed)
    return tuned


def default_metric(task: str, attacks: list[str]) -> str:
    if task == "detection":
        return "AP"
    return "pgd_acc" if "pgd" in attacks else "clean_acc"


def choose(plan: AblationPlan, tune: TuneSpec, rows: list[dict], metric: str) -> dict[str, str]:
    """Per cell of ``plan``, the tuned value with the highest ``metric`` in the tuning rows (first on ties)."""
    scores = {str(row["cell"]): row.get(metric) for row in rows if row.get("cell") != TEACHER_CELL}
    chosen = {}
    for cell in plan.cells:
        best, best_score = None, -math.inf
        tried = {value: tune.label(cell.label, value) for value in tune.values_for(cell.label)}
        missing = [label for label in tried.values() if label not in scores]
        if missing:
            raise KdlabError(f"the tuning table has no row for {missing[0]}: pass the --tune values it was made "
                             f"with (its cells: {', '.join(sorted(scores)) or 'none'})")
        for value, label in tried.items():
            score = scores[label]
            if isinstance(score, (int, float)) and not math.isnan(score) and score > best_score:
                best, best_score = value, score
        if best is None:
            raise KdlabError(f"no {metric} for cell {cell.label} in the tuning table (every value diverged, or "
                             f"choose --tune-metric from its columns, e.g. AP, AP50, clean_acc)")
        chosen[cell.label] = best
    return chosen


def seeds_plan(plan: AblationPlan, tune: TuneSpec, chosen: dict[str, str], tuning_table: Path) -> AblationPlan:
    """The ablation's cells, each with its chosen value, on the recipe's own data and test split."""
    cells = [Cell(cell.label, (*cell.overrides, f"{tune.key}={chosen[cell.label]}")) for cell in plan.cells]
    return replace(plan, cells=cells, title_suffix="-tuned", tuned_on=tuning_table.name,
                   tuned={label: tune.setting(value) for label, value in chosen.items()})


def tuned_rows(table: Path) -> list[dict]:
    from kdlab.results import read_table

    frame = read_table(table)
    return frame.where(frame.notna(), None).to_dict("records")
