"""An ablation's table: one row per finished (cell, seed), rewritten as CSV (+ Markdown and PNG) after each.

:class:`AblationTable` starts from the rows its own CSV holds (read back under the table's lock) and replaces
each as its run is recorded again, so the table is always the same function of what has finished, whichever
executor ran the cells (:mod:`kdlab.ablation.execute`, :mod:`kdlab.ablation.cluster`). A row carries the cell's
metrics, how its checkpoint was chosen, its training cost, its run directory and the ``kdlab ablate`` command
that wrote it with its ``--set`` values (``command``, ``overrides``) and the machine that computed it
(``device_name``, ``torch``, ``cuda``) and the code (``git_commit``, and ``git_diff_sha256`` for a dirty
tree, whose patch is stored as ``<results>/diffs/<git_diff_sha256>.patch``: :func:`_row`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdlab.ablation.grid import AblationPlan, Cell, acm_total_weight
from kdlab.config.names import ATTACKS, DETECTION_METRICS
from kdlab.report.tables import TEACHER_CELL
from kdlab.results import blank, read_table, results_folder, store_diff


def _row(plan: AblationPlan, cell: Cell, seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    row = {"ablation": plan.name, "kind": plan.kind, "cell": cell.label, "setting": " ".join(cell.overrides),
           "seed": seed, "plan": plan.fingerprint}
    row.update(plan.study)  # a declared study: its name, sha256 and declaration (kdlab.ablation.study)
    if plan.study and plan.title_suffix != "-val":  # its final table: how many rows it holds when finished
        row["study_runs"] = len(plan.cells) * len(plan.seeds) + int(plan.include_teacher)
    row.update(plan.cell_notes.get(cell.label, {}))  # a tuning grid: the round that added this value, and why
    row.update({key: value for key, value in summary.items()
                if (key.endswith("_acc") and not key.startswith("teacher_")) or key in DETECTION_METRICS})
    # how the checkpoint was chosen (train.select), on which epoch, with which validation value
    row["select"] = summary.get("select")
    row["best_epoch"] = summary.get("best_epoch")
    row["val_score"] = summary.get("val_score")
    if plan.kind == "blocks":
        row["acm_total_weight"] = acm_total_weight(plan.recipe_for(cell, seed))
    if plan.tuned:  # the value this cell's seeds use, chosen on the validation split (kdlab.ablation.tuning)
        row["tuned"], row["tuned_on"] = plan.tuned.get(cell.label), plan.tuned_on
    if plan.title_suffix:  # a tuning grid (val) or its seeds (test): say which split the numbers are on
        row["eval_split"] = summary.get("eval_split")
    row.update({key: summary.get(key) for key in ("arch", "eval_n", "eval_eps", "eval_steps")})  # plot titles
    row["flag"] = summary.get("flag") or ""  # a degenerate (collapsed) model's robust accuracy means nothing
    # training cost: wall time, training images per second, student passes and teacher forwards per image
    for key in ("wall_seconds", "train_seconds", "images_per_s", "passes_per_image", "teacher_forwards_per_image"):
        row[key] = summary.get(key)
    row["run_dir"] = summary.get("run_dir")
    # which teacher it was distilled from, by content (the teacher's row: its own weights); none without a teacher
    row["teacher_sha256"] = summary.get("teacher_sha256")
    # a study's declared final evaluation, run with the cell (kdlab.runs.final_eval.evaluate_finished): the
    # <attack>_acc columns above, each attack's n, the sanity verdict, its cost and torch
    row.update({key: value for key, value in summary.items() if key in final_columns(summary)})
    # the code that computed it: the commit, and for a dirty tree the digest of its patch (results/diffs/)
    row["git_commit"] = summary.get("git_commit")
    row["git_diff_sha256"] = summary.get("git_diff_sha256")
    # which machine computed it (a study continued on other machines, kdlab.ablation.slices): device, torch, CUDA
    row["device_name"] = summary.get("device_name")
    row["torch_threads"] = summary.get("torch_threads")  # CPU float sums depend on it; the table notes say it
    row["torch"] = (summary.get("versions") or {}).get("torch")
    row["cuda"] = summary.get("cuda")
    # what wrote this row: the ablate command as typed (every flag) and its --set overrides, shell-quoted
    row["command"] = plan.command
    row["overrides"] = shlex.join(plan.common_overrides)
    return row


def final_columns(summary: dict[str, Any]) -> list[str]:
    """The final evaluation's columns a summary carries besides ``<attack>_acc``: ``<attack>_n`` and
    :data:`kdlab.runs.final_eval.EXTRA_COLUMNS` (``sanity``, ``final_eval_seconds``, ``final_eval_torch``)."""
    from kdlab.runs.final_eval import EXTRA_COLUMNS

    names = [f"{attack}_n" for attack in ATTACKS] + list(EXTRA_COLUMNS)
    return [name for name in names if name in summary]


def missing(plan: AblationPlan, cell: Cell, seed: int, row: dict[str, Any], final: dict | None) -> str | None:
    """Why a table row is not a complete result (None when it is): a metric of its cell missing (``<attack>_acc``
    of the plan's attacks, or a detector's ``AP``), or, with a declared ``final:`` evaluation, one of its columns
    (each attack's ``_acc`` and ``_n`` with ``clean``, and ``sanity``). A diverged row of a tuning grid is a
    result (the same run diverges again), and so is one of a declared study; any other diverged row is not."""
    from kdlab.runs.final_eval import check_attacks

    if str(row.get("flag") or "").startswith("diverged"):
        return None if plan.divergence_is_a_result else "it diverged"
    recipe = plan.recipe_for(plan.cells[0] if cell.label == TEACHER_CELL else cell, seed)
    wanted = ["AP"] if recipe.task == "detection" else [f"{attack}_acc" for attack in recipe.eval.attacks]
    if final is not None and recipe.task == "classification" and recipe.eval.split == "test":
        attacks = ["clean", *check_attacks(list(final["attacks"]))]
        wanted += [f"{attack}_{suffix}" for attack in attacks for suffix in ("acc", "n")] + ["sanity"]
    gaps = [name for name in dict.fromkeys(wanted) if blank(row.get(name))]
    if not gaps:
        return None
    return f"no {', '.join(gaps[:3])}{' ...' if len(gaps) > 3 else ''} in its row"


def table_rows(plan: AblationPlan, path: Path) -> dict[tuple[str, int], dict]:
    """The rows of ``plan``'s table at ``path`` (read under the table's lock, like its writers) by (cell, seed):
    those of the plan's cells and seeds (and the shared teacher's), for a declared study only those of its plan
    fingerprint (rows of an earlier tuning choice are left out). Nothing when the table does not exist."""
    return _split_rows(plan, path)[0]


def _split_rows(plan: AblationPlan, path: Path) -> tuple[dict[tuple[str, int], dict], list[dict]]:
    """The table's rows in two parts, read once: :func:`table_rows`, and in table order the rows whose (cell,
    seed) the plan does not run (a tuning grid's later rounds while an earlier round's plan is replayed, seeds
    beyond a rerun's ``--seeds``)."""
    if not path.is_file() or path.stat().st_size == 0:
        return {}, []
    frame = read_table(path)  # its digest columns as text (kdlab.results.DIGEST_COLUMNS)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    cells = {cell.label for cell in plan.cells} | {TEACHER_CELL}
    fingerprinted = bool(plan.study) and "plan" in frame.columns
    ours: dict[tuple[str, int], dict] = {}
    others = []
    for row in records:
        key = (str(row["cell"]), int(row["seed"]))
        if key[0] not in cells or key[1] not in plan.seeds:
            if key[0] != TEACHER_CELL:  # the table has one teacher row: the plan's own (on its first seed)
                others.append(row)
        elif not fingerprinted or str(row["plan"]) == plan.fingerprint:
            ours[key] = row
    return ours, others


def committed(plan: AblationPlan, rows: dict[tuple[str, int], dict],
              final: dict | None) -> dict[tuple[str, int], str | None]:
    """A declared study continued on a fresh checkout (:func:`kdlab.ablation.execute.run_ablation`): for each
    (cell, seed) of the plan whose row the committed table holds (``rows``, :func:`table_rows`) and whose run
    directory is not here, ``None`` when that row stands for the run (complete, :func:`missing`), else why it is
    retrained. A (cell, seed) whose run directory is here is left out: it is reused as any finished run."""
    kept: dict[tuple[str, int], str | None] = {}
    for seed in plan.seeds:
        for cell in plan.cells:
            row = rows.get((cell.label, seed))
            if row is None:
                continue
            run_dir = row.get("run_dir")
            if run_dir and (Path(str(run_dir)) / "summary.json").is_file():
                continue
            kept[(cell.label, seed)] = missing(plan, cell, seed, row, final)
    return kept


def same_row(old: dict | None, new: dict) -> bool:
    """Whether ``new`` says what the table's row ``old`` says (as read back from the CSV: a number as written, an
    empty cell as NaN): then recording it again rewrites nothing."""
    if old is None:
        return False
    for key in set(old) | set(new):
        a, b = old.get(key), new.get(key)
        if blank(a) or blank(b):
            if blank(a) and blank(b):
                continue
            return False
        try:
            if float(a) == float(b):
                continue
        except (TypeError, ValueError):
            pass
        if str(a) != str(b):
            return False
    return True


class AblationTable:
    """An ablation's CSV (+ Markdown and PNG), rewritten after every finished run: the same function of what
    has finished whichever executor ran it (teacher first, then cells in plan order, seeds within a cell, then
    the table's rows of cells or seeds this plan does not run, kept as they were). A rerun starts from the rows
    its own table holds and replaces each as its run is recorded again: an interrupted rerun never leaves the
    table shorter than it was."""

    def __init__(self, plan: AblationPlan, out_dir: Path, on_cell: Callable[[str, int, dict], None] | None = None):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.plan, self.path, self.on_cell = plan, plan.table_path(out_dir), on_cell
        # the rows of cells or seeds it does not run are written back as they were (before, a rewrite dropped them:
        # replaying a tuning's round 1 emptied its later rounds from the table)
        self.rows, self.others = _split_rows(plan, self.path)

    def record(self, cell: Cell, seed: int, summary: dict) -> None:
        from kdlab.report.tables import write_ablation_outputs

        row = _row(self.plan, cell, seed, summary)
        unchanged = same_row(self.rows.get((cell.label, seed)), row)
        self.rows[(cell.label, seed)] = row
        self._store_diff(summary)
        if not unchanged:  # a reused run whose row the table holds already (a rerun, a tuning's rounds replayed)
            cell_major = [(c, s) for c in [Cell(TEACHER_CELL), *self.plan.cells] for s in self.plan.seeds]
            write_ablation_outputs([self.rows[(c.label, s)] for c, s in cell_major if (c.label, s) in self.rows]
                                   + self.others, self.path)
        if self.on_cell:
            self.on_cell(cell.label, seed, summary)

    def _store_diff(self, summary: dict) -> None:
        """A run from a dirty tree: its patch (the run directory's ``code.diff``) into the table's results folder,
        ``diffs/<git_diff_sha256>.patch`` (:func:`kdlab.results.store_diff`), so the row's code can be recovered
        wherever the table is committed (the run stored it beside its own runs table already)."""
        patch = Path(str(summary.get("run_dir") or "")) / "code.diff"
        if summary.get("git_diff_sha256") and summary.get("run_dir") and patch.is_file():
            store_diff(patch.read_bytes().decode(), results_folder(self.path))

    def order(self) -> list[tuple[Cell, int]]:
        """Seed-major: an interrupted ablation leaves complete tables for its first seeds, not a few full cells."""
        return [(cell, seed) for seed in self.plan.seeds for cell in self.plan.cells]
