"""Ablation tables: CSV (one row per cell and seed) -> Markdown (mean ± std over seeds) + PNG bars.

``kdlab table results/ablations/x.csv`` regenerates the Markdown and the plot from the CSV
alone, so a committed CSV is the single source of every figure shown beside it.
Standard deviations are sample standard deviations (ddof = 1) over seeds; a cell with one
seed shows its mean alone. With a baseline cell, a last column gives each cell's *paired*
difference on the headline metric: the mean ± std over seeds of (cell − baseline) for the
same seed. Seed noise shared by both cells (data order, initialisation) cancels in it, so it
separates a small effect from run-to-run spread better than two overlapping mean ± std columns. Beside each
paired column (``correction="holm"``, the default) a second one gives the comparison's paired t-test p-value and
its Holm-adjusted value over every comparison the table makes (:func:`holm_family`).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from filelock import FileLock

from kdlab.config.names import CORRECTIONS, DETECTION_METRICS, METRIC_LABELS, WEAK_AP50
from kdlab.errors import KdlabError, did_you_mean
from kdlab.report.paper import PAPER_NUMBERS
from kdlab.report.stats import PairedDifference, holm_adjust, paired_difference, render_holm
from kdlab.results import atomic_write_text, read_table, rewrite_table, sole_writer, table_csv

Value = TypeVar("Value")  # a tuned value: its text in a table, its number in a search

TEACHER_CELL = "teacher"  # the shared teacher's row: one run for every seed, so never paired with a seed

# Training cost, shown beside the metrics where a table records it (method comparisons): column -> header
COST_COLUMNS = {"passes_per_image": "passes/img", "teacher_forwards_per_image": "teacher fwd/img",
                "train_seconds": "train s", "wall_seconds": "wall s"}


# A flag's first word (the row's ``flag`` column) and the note that explains its ⚠ mark under a table.
FLAG_NOTES = {
    "diverged": "⚠ diverged: the training loss became non-finite on a seed (the same run diverges again: lower the "
                "value, or the learning rate); recorded with no metrics, so a tuning grid goes on and a declared "
                "study keeps its seeds: the cell's means and its paired differences are over the seeds that "
                "finished (its seeds column counts the diverged ones, a paired column the seeds it paired).",
    "collapsed": "⚠ collapsed: a model of this cell predicts (nearly) one or two classes or is at chance on clean "
                 "images -- collapsed: robust accuracy meaningless (see the CSV's flag column).",
    "weak": f"⚠ weak: a detector of this cell (or the teacher) finds almost nothing: AP50 under {WEAK_AP50:g} % (see "
            "the CSV's flag column); its AP says little about the method.",
}


def tuning_cell(cell: str, setting: str) -> str:
    """``kind=ssim,weight=2``: a ``--tune`` grid's cell is the ablation cell and the tried setting (``weight=2``);
    :mod:`kdlab.ablation.tuning` writes it and :func:`tuning_edges` reads it."""
    return f"{cell},{setting}"


def metric_columns(frame: pd.DataFrame) -> list[str]:
    accuracy = [c for c in frame.columns if c.endswith("_acc") and not c.startswith(("val_", "teacher_"))]
    detection = [c for c in DETECTION_METRICS if c in frame.columns]
    return accuracy + detection


def cost_columns(frame: pd.DataFrame) -> list[str]:
    """The training-cost columns a method comparison shows; other ablations show each run's wall time (training
    and evaluation, with the torch thread count :func:`thread_note` reads off the runs). Absent from older tables."""
    shown = ["passes_per_image", "teacher_forwards_per_image", "train_seconds"]
    if "methods" not in set(frame.get("kind", [])):
        shown = ["wall_seconds"]
    return [c for c in shown if c in frame.columns and frame[c].notna().any()]


def _recorded_threads(run_dir: Any) -> int | None:
    """The torch thread count a run recorded (``torch_threads`` in its summary.json or run.json), if readable."""
    import json

    if not isinstance(run_dir, str) or not run_dir:
        return None
    for name in ("summary.json", "run.json"):
        try:
            value = json.loads((Path(run_dir) / name).read_text()).get("torch_threads")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int):
            return value
    return None


def thread_note(frame: pd.DataFrame) -> str:
    """How many torch threads the cells' runs used, as their rows (a ``torch_threads`` column) or their run
    directories record it: "2 torch threads per run", "1-2 torch threads per run (differs between runs)", or
    "torch thread count not recorded" when neither says. The teacher's row (trained once, maybe elsewhere) is
    left out."""
    cells = frame[frame["cell"] != TEACHER_CELL] if "cell" in frame.columns else frame
    counts: set[int] = set()
    unknown = False
    for _, row in cells.iterrows():
        value = row.get("torch_threads")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = _recorded_threads(row.get("run_dir"))
        if value is None:
            unknown = True
        else:
            counts.add(int(value))
    if not counts:
        return "torch thread count not recorded"
    low, high = min(counts), max(counts)
    text = f"{low} torch thread{'s' if low > 1 else ''} per run" if low == high else \
        f"{low}-{high} torch threads per run (differs between runs)"
    return text + ("; not recorded for some runs" if unknown else "")


def device_note(frame: pd.DataFrame) -> str | None:
    """Which device the table's rows ran on (their ``device_name``: the GPU, else the processor), with how many
    rows each when they differ: CPU training is reproducible on one processor type only, and a teacher retrained
    on another one comes out different (docs/ablations.md, "Continuing a study"). None when no row records it."""
    if "device_name" not in frame.columns:
        return None
    names = frame["device_name"].dropna().astype(str)
    counts = names[names.str.strip() != ""].value_counts(sort=False)
    if counts.empty:
        return None
    missing = len(frame) - int(counts.sum())
    if len(counts) == 1 and not missing:
        return f"device: {counts.index[0]} (every row)."
    parts = [f"{name} ({count} row{'s' if count != 1 else ''})" for name, count in counts.items()]
    if missing:
        parts.append(f"not recorded ({missing} row{'s' if missing != 1 else ''})")
    return f"device: {', '.join(parts)}" + ("; rows from different devices." if len(counts) > 1 else ".")


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and seed count per cell, in the order cells first appear."""
    metrics = metric_columns(frame) + cost_columns(frame)
    grouped = frame.groupby("cell", sort=False)[metrics]
    summary = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    summary["seeds"] = frame.groupby("cell", sort=False)["seed"].nunique()
    return summary.reset_index()


def _mean_std(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or math.isnan(std):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def headline_metric(frame: pd.DataFrame) -> str:
    """The number a table is read for: AP (detection), else robust (PGD), else clean accuracy."""
    metrics = metric_columns(frame)
    for name in ("AP", "pgd_acc", "clean_acc"):
        if name in metrics:
            return name
    return metrics[0]


def paired_differences(frame: pd.DataFrame, baseline: str, metric: str) -> dict[str, PairedDifference]:
    """Per cell: the mean and 95 % CI over seeds of (cell − baseline) on ``metric``, the same seed paired."""
    if baseline == TEACHER_CELL:
        raise KdlabError("the teacher row is one run shared by every seed, so nothing pairs with it: "
                         "choose a student cell as --baseline, e.g. student-ce")
    if baseline not in set(frame["cell"]):
        raise KdlabError(f"baseline cell '{baseline}' is not in the table: choose one of "
                         f"{', '.join(dict.fromkeys(frame['cell'].astype(str)))}")
    wide = frame[frame["cell"] != TEACHER_CELL].pivot_table(index="seed", columns="cell", values=metric, sort=False,
                                                            dropna=False)  # a cell whose every run diverged: no pair
    deltas = wide.sub(wide[baseline], axis=0)
    return {str(cell): paired_difference(deltas[cell].tolist()) for cell in deltas.columns}


def check_correction(correction: str) -> None:
    """Refuse a ``--correction`` kdlab does not know, before any work."""
    if correction not in CORRECTIONS:
        raise KdlabError(f"--correction {correction}: choose {' or '.join(CORRECTIONS)}"
                         f"{did_you_mean(correction, CORRECTIONS)}")


def holm_family(deltas: dict[str, dict[str, PairedDifference]]) -> tuple[dict[tuple[str, str], float], int]:
    """Holm-adjusted p-values of a table's family of comparisons, keyed ``(baseline, cell)``, and the family size
    m. The family: every cell against every baseline (``deltas``: baseline -> cell -> paired difference) with two
    paired seeds or more; a comparison made twice (two baselines against each other) counts once."""
    tests: dict[frozenset[str], float] = {}
    for base, cells in deltas.items():
        for cell, difference in cells.items():
            if cell != base and difference.pairs >= 2:
                tests.setdefault(frozenset((base, cell)), difference.p)
    adjusted = dict(zip(tests, holm_adjust(list(tests.values()))))
    return ({(base, cell): adjusted[frozenset((base, cell))] for base, cells in deltas.items() for cell in cells
             if cell != base and frozenset((base, cell)) in adjusted}, len(tests))


def is_collapsed(flag: Any) -> bool:
    """Whether a row's ``flag`` says its model collapsed (``collapsed: ...``, :mod:`kdlab.robustness.accuracy`)."""
    return isinstance(flag, str) and flag.startswith("collapsed")


def collapsed_rows(frame: pd.DataFrame) -> pd.Series:
    """Per row of ``frame``, :func:`is_collapsed` of its ``flag`` (all False without the column)."""
    flags = frame["flag"] if "flag" in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    return flags.map(is_collapsed).astype(bool)


def tuning_score(values: list[Any], collapsed: bool, rule: str = "keep") -> float | None:
    """What one tuning value scores (:mod:`kdlab.ablation.tuning`'s selection rule): the mean of its seeds'
    ``values``; ``None`` (never chosen) when a seed has none (it diverged), or when a seed ``collapsed`` and the
    study declares ``tune.collapsed: exclude`` (``rule``)."""
    finite = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not finite or len(finite) != len(values) or (collapsed and rule == "exclude"):
        return None
    return sum(finite) / len(finite)


def best_tuned_value(scores: dict[Value, float | None]) -> Value | None:
    """The value a tuning chooses: the highest :func:`tuning_score` (``None`` or NaN: never), the first tried on
    ties (``scores`` in the order the values were tried); ``None`` when no value has a score."""
    finite = {value: score for value, score in scores.items() if score is not None and not math.isnan(score)}
    return max(finite, key=finite.__getitem__) if finite else None


def tuning_edges(frame: pd.DataFrame, folder: Path) -> dict[str, list[str]]:
    """Per cell of a ``--tune`` table whose chosen value is the smallest or the largest of the (3 or more) values
    its tuning table (``tuned_on``, in ``folder``) tried: "smallest" or "largest". A choice at the edge of the
    grid says a wider grid might choose otherwise. A tuning table that records why its search stopped
    (``tune_stop``, :mod:`kdlab.ablation.tuning`) gives that instead where it is not "interior": "search stopped:
    bound", "search stopped: bracketed divergence", "search stopped: max rounds". A chosen value with a collapsed
    tuning seed adds "⚠ collapsed on k of n tuning seeds". A cell with no mark has no entry."""
    source = next(iter(frame["tuned_on"].dropna()), None) if "tuned_on" in frame.columns else None
    if source is None or not (Path(folder) / str(source)).is_file():
        return {}
    tuning = read_table(Path(folder) / str(source))
    labels = tuning["cell"].astype(str)
    tried = labels.tolist()
    stops = dict(zip(tried, tuning["tune_stop"].astype(object).where(tuning["tune_stop"].notna(), "")
                     .astype(str))) if "tune_stop" in tuning.columns else None
    collapsed_runs = collapsed_rows(tuning)
    edges = {}
    for cell, chosen in frame.groupby("cell", sort=False)["tuned"].first().dropna().items():
        key, _, value = str(chosen).partition("=")
        prefix = tuning_cell(str(cell), f"{key}=")
        marks = []
        if stops is not None:
            stop = next((stops[label] for label in tried if label.startswith(prefix) and stops[label]), "")
            if stop and stop != "interior":
                marks.append(f"search stopped: {stop}")
        else:
            try:
                values = [float(label[len(prefix):]) for label in tried if label.startswith(prefix)]
                if len(values) >= 3 and float(value) in (min(values), max(values)):
                    marks.append("largest" if float(value) == max(values) else "smallest")
            except ValueError:  # a tuned key with non-numeric values has no order
                pass
        runs = labels == prefix + value
        collapsed = int(collapsed_runs[runs].sum())
        if collapsed:
            marks.append(f"⚠ collapsed on {collapsed} of {int(runs.sum())} tuning seeds")
        if marks:
            edges[str(cell)] = marks
    return edges


def metric_sizes(frame: pd.DataFrame, metric: str) -> str:
    """``"n=1000"`` (or ``"n=500–1000"``): the test images behind an accuracy column, from its ``<attack>_n``
    column (written by the final evaluation, :mod:`kdlab.runs.final_eval`); ``""`` where the table has none."""
    column = f"{metric[:-4]}_n" if metric.endswith("_acc") else ""
    if column not in frame.columns:
        return ""
    sizes = sorted({int(v) for v in pd.to_numeric(frame[column], errors="coerce").dropna()})
    if not sizes:
        return ""
    return f"n={sizes[0]}" if len(sizes) == 1 else f"n={sizes[0]}–{sizes[-1]}"


def metric_header(frame: pd.DataFrame, metric: str) -> str:
    """A metric's column header: its label, with its n where the table records it, e.g. ``AutoAttack (n=1000)``."""
    sizes = metric_sizes(frame, metric)
    label = METRIC_LABELS.get(metric, metric)
    return f"{label} ({sizes})" if sizes else label


def compared_metrics(frame: pd.DataFrame, metrics: list[str] | None = None) -> list[str]:
    """The metrics the paired columns compare, the deciding one first: ``metrics`` as given (each must be a column
    of the table), else the headline metric (:func:`headline_metric`) and, where every student row has it,
    AutoAttack (``autoattack_acc``): a robustness claim is checked against the standard attack as well."""
    available = metric_columns(frame)
    if metrics:
        for metric in metrics:
            if metric not in available:
                raise KdlabError(f"--metric {metric}: not a metric of this table; choose one of "
                                 f"{', '.join(available)}{did_you_mean(metric, available)}")
        return list(dict.fromkeys(metrics))
    chosen = [headline_metric(frame)]
    students = frame[frame["cell"] != TEACHER_CELL]
    students = students[~flags_of(students).str.startswith("diverged")]  # a diverged run has nothing to measure
    if "autoattack_acc" in available and "autoattack_acc" not in chosen and len(students) \
            and students["autoattack_acc"].notna().all():
        chosen.append("autoattack_acc")
    return chosen


def sanity_note(frame: pd.DataFrame) -> str | None:
    """What the ``sanity`` column (``kdlab eval --sanity`` verdicts, one per run) says of the table's rows: passed
    on all of them, or which rows failed which check; ``None`` where no row was checked."""
    import re

    if "sanity" not in frame.columns:
        return None
    verdicts = frame["sanity"].astype(object).where(frame["sanity"].notna(), "").astype(str).str.strip()
    checked = verdicts[(verdicts != "") & (verdicts != "not run")]
    if checked.empty:
        return None
    unchecked = len(frame) - len(checked)
    rest = f"; not run on {unchecked} row{'s' if unchecked != 1 else ''}" if unchecked else ""
    failed = checked[~checked.str.startswith("ok")]
    settings = checked.iloc[0].rsplit(" (", 1)[-1].rstrip(")") if checked.iloc[0].endswith(")") else ""
    how = f" ({settings})" if settings else ""
    if failed.empty:
        return f"sanity (kdlab eval --sanity{how}): passed on all {len(checked)} rows checked{rest}."
    shown = "; ".join(f"{frame.loc[i, 'cell']} seed {frame.loc[i, 'seed']}: "
                      + ", ".join(dict.fromkeys(re.findall(r"\[([a-z0-9-]+)\]", text))) for i, text in failed.items())
    return (f"sanity (kdlab eval --sanity{how}): failed on {len(failed)} of {len(checked)} rows checked ({shown}: "
            f"see the CSV's sanity column){rest}.")


def markdown_table(frame: pd.DataFrame, paper: str | None = None, baseline: str | list[str] | None = None,
                   edges: dict[str, list[str]] | None = None, correction: str = "holm",
                   metrics: list[str] | None = None, pairs: list[tuple[str, str]] | None = None) -> str:
    """Mean ± std per cell, and one paired column per ``baseline`` cell (e.g. ``kind=none`` and the best rival),
    each followed (``correction="holm"``) by its t-test column: p-value and Holm-adjusted p-value over the table's
    comparisons; ``edges`` (:func:`tuning_edges`) marks tuned values at the edge of their grid. The paired columns
    compare each metric of :func:`compared_metrics` (``metrics``: the deciding one first), each metric's
    comparisons a Holm family of their own. ``pairs`` (a study's declared comparisons, ``(cell, against)``): a
    table of those comparisons alone per compared metric, Holm-adjusted over them, under the cells
    (:func:`pairs_markdown`)."""
    check_correction(correction)
    baselines = [baseline] if isinstance(baseline, str) else list(baseline or [])
    edges = edges or {}
    summary = summarise(frame)
    metric_list = metric_columns(frame)
    reference = PAPER_NUMBERS.get(paper) if paper else None
    tuned = frame.groupby("cell", sort=False)["tuned"].first() if "tuned" in frame.columns else None
    costs = cost_columns(frame)
    header = ["cell", "seeds"] + (["tuned"] if tuned is not None else []) + [metric_header(frame, m)
                                                                             for m in metric_list]
    header += [COST_COLUMNS[c] for c in costs]
    compared = compared_metrics(frame, metrics) if baselines or pairs else []
    deciding = compared[0] if compared else ""
    deltas = {(metric, base): paired_differences(frame, base, metric) for metric in compared for base in baselines}
    families = {metric: holm_family({base: deltas[(metric, base)] for base in baselines}) if correction == "holm"
                else (None, 0) for metric in compared}
    for metric in compared:
        metric_label = METRIC_LABELS.get(metric, metric)
        for base in baselines:
            header.append(f"Δ {metric_label} vs {base} (paired, 95 % CI)")
            header += [] if families[metric][0] is None else [f"Δ {metric_label} vs {base}: t-test p, Holm"]
    if reference:
        header.append(reference["label"])  # what the paper measured, e.g. "attack unstated"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    marks, diverged = cell_marks(frame), diverged_seeds(frame)
    for _, row in summary.iterrows():
        label = str(row["cell"]) + "".join(f" ⚠ {mark}" for mark in marks.get(str(row["cell"]), []))
        failed = diverged.get(str(row["cell"]), 0)
        cells = [label, str(int(row["seeds"])) + (f" ({failed} diverged)" if failed else "")]
        edge = "; ".join(f"{mark} tried" if mark in ("smallest", "largest") else mark
                         for mark in edges.get(str(row["cell"]), []))
        edge = f" ({edge})" if edge else ""
        cells += [] if tuned is None else [_markdown_cell(tuned.get(row["cell"])) + edge]
        cells += [_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in metric_list]
        cells += [_cost_cell(c, row[f"{c}_mean"], row[f"{c}_std"]) for c in costs]
        for metric in compared:
            holm = families[metric][0]
            for base in baselines:
                delta = deltas[(metric, base)].get(str(row["cell"])) if str(row["cell"]) != base else None
                cells.append("—" if delta is None else render_pairs(delta, frame, str(row["cell"]), base))
                if holm is not None:
                    cells.append("—" if delta is None else render_holm(delta, holm.get((base, str(row["cell"])), 1.0)))
        if reference:
            value = paper_value(reference, row["cell"])
            cells.append(f"{value:.2f}" if value is not None else "—")
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "Mean ± sample standard deviation over seeds (accuracy and AP in %)."]
    for base in baselines:
        notes.append(f"Paired column: mean over seeds of (cell − {base}) for the same seed, with its two-sided "
                     "95 % Student-t confidence interval; \"not separated\" when the interval includes 0.")
    if correction == "holm" and compared and baselines:
        deciding, m = METRIC_LABELS.get(compared[0], compared[0]), families[compared[0]][1]
        notes.append(f"t-test column: two-sided paired t-test p-value of the same difference (t = mean / (sd / √n), "
                     f"df = n − 1) and its Holm–Bonferroni adjusted value over the table's family of m = {m} "
                     f"comparison{'s' if m != 1 else ''} on {deciding} (every cell against every baseline, two seeds "
                     "or more); \"separated (Holm)\" when the adjusted p < 0.05. The intervals are not corrected "
                     "(kdlab table --correction none shows them alone).")
    if len(compared) > 1 and baselines:
        others = ", ".join(METRIC_LABELS.get(metric, metric) for metric in compared[1:])
        notes.append(f"The verdict is read on {METRIC_LABELS.get(compared[0], compared[0])}; the {others} columns "
                     "give the same paired intervals and tests on that metric, each metric's comparisons a Holm "
                     "family of their own (a check that the verdict holds under the other attack, not a second "
                     "chance to find one).")
    final = [metric for metric in metric_list if metric_sizes(frame, metric)] \
        if "final_eval_torch" in frame.columns else []  # written by the final evaluation alone
    if final:
        torches = sorted(set(frame["final_eval_torch"].dropna().astype(str))) if "final_eval_torch" in frame.columns \
            else []
        protocol = {"pgd_acc": "PGD-20 with step ε/4", "cw_acc": "CW∞ 30 steps with step ε/4",
                    "autoattack_acc": "the standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square)"}
        attacks = [protocol[metric] for metric in final if metric in protocol]
        budgets = sorted({float(e) for e in pd.to_numeric(frame.get("eval_eps", pd.Series(dtype=float)),
                                                           errors="coerce").dropna()})
        at = f" at ε = {budgets[0] * 255:g}/255" if len(budgets) == 1 else ""
        notes.append(f"{', '.join(metric_header(frame, metric) for metric in final)}: final evaluation of every "
                     "run's best.pt on the same test images (kdlab eval TABLE.csv, docs/evaluation.md)" + at
                     + (": " + "; ".join(attacks) if attacks else "")
                     + (f"; torch {', '.join(torches)}" if torches else "") + ".")
    checked = sanity_note(frame)
    if checked:
        notes.append(checked)
    for metric in metric_list:  # an attack measured on some seeds only (AutoAttack on seed 0: kdlab table --with-eval)
        measured = frame[frame["cell"] != TEACHER_CELL].groupby("cell", sort=False)[metric].count()
        if not metric.endswith("_acc") or not len(measured) or measured.max() == 0:
            continue  # a detection AP by size is empty where the test images have no object of that size
        if (measured < summary.set_index("cell")["seeds"].reindex(measured.index)).any():
            sizes = frame[f"{metric[:-4]}_n"].dropna().unique() if f"{metric[:-4]}_n" in frame.columns else []
            notes.append(f"{METRIC_LABELS.get(metric, metric)}: measured on {int(measured.max())} seed(s) per cell"
                         + (f", n = {int(sizes[0])} test images" if len(sizes) == 1 else "")
                         + " (kdlab eval RUN_DIR, merged with kdlab table --with-eval); no ± without a second seed.")
    if costs == ["wall_seconds"]:
        notes.append(f"wall s: seconds per run, training and test evaluation ({thread_note(frame)}, runs sharing "
                     "the machine: a rough guide).")
    elif costs:
        notes.append("Training cost: student forward+backward passes and teacher forwards per training image (a "
                     "k-step inner maximisation costs k extra passes), and training seconds (wall time of the "
                     f"epochs, {thread_note(frame)}; on a shared machine, a rough guide).")
    device = device_note(frame)
    if device is not None:
        notes.append(device)
    if tuned is not None:
        source = next(iter(frame["tuned_on"].dropna()), "?") if "tuned_on" in frame.columns else "?"
        notes.append(f"tuned: the value each cell uses, chosen on a validation split held out of the training "
                     f"images (kdlab ablate --tune, a study's tune:; the seeds it averaged: its tune_seeds column), never on "
                     f"the test split: `{source}`.")
        edge_marks = {mark for marks in edges.values() for mark in marks}
        if {"smallest", "largest"} & edge_marks:
            notes.append("(smallest/largest tried): the best validation value was at the edge of the values tried; "
                         "a wider grid might choose another.")
        if any(mark.startswith("search stopped") for mark in edge_marks):
            notes.append("(search stopped: ...): why the tuning search (kdlab.ablation.tuning) ended other than with "
                         "the best value interior: bound = it is a declared bound; bracketed divergence = its "
                         "neighbour diverged (or collapsed, under tune.collapsed: exclude) and the values between "
                         "were tried; max rounds = still at an open edge "
                         "after the declared rounds.")
    if "acm_total_weight" in frame.columns:
        totals = sorted(set(frame.loc[frame["cell"] != TEACHER_CELL, "acm_total_weight"].dropna().round(6)))
        notes.append("Total ACM weight (acm.weight × Σ block weights): "
                     + (f"{totals[0]:g} in every cell." if len(totals) == 1 else
                        "differs between cells (" + ", ".join(f"{t:g}" for t in totals) + "): --per-block-weight."))
    shown = {mark for cell_marks in marks.values() for mark in cell_marks}
    notes += [note for mark, note in FLAG_NOTES.items() if mark in shown]
    if reference:
        notes.append(f"Paper column: {reference['source']}.")
    if "tune_stop" in frame.columns:
        notes += ["", *tuning_grid_markdown(frame, deciding or headline_metric(frame))]
    for metric in compared if pairs else []:
        notes += ["", *pairs_markdown(frame, pairs, metric, correction)]
    notes += teacher_gap_markdown(frame, metrics)
    return "\n".join(lines + notes) + "\n"


def teacher_gap_markdown(frame: pd.DataFrame, metrics: list[str] | None = None) -> list[str]:
    """The gap from each cell up to the table's teacher (one run): per cell and metric, the mean over the cell's
    seeds of (teacher − cell) with its 95 % t-interval. The teacher is one fixed model, so the interval is that of
    the cell's seeds (a one-sample interval: :func:`~kdlab.report.stats.paired_difference` of the per-seed gaps).
    It is the headroom of ``teacher_headroom_cpu`` (teacher − PGD-AT student, declared in its study file) and, in
    a distillation table, how much of the teacher's robustness a method leaves behind; ``metrics``: as
    :func:`compared_metrics`. Nothing without exactly one teacher row, another cell or a metric measured yet."""
    teacher = frame[frame["cell"] == TEACHER_CELL]
    students = frame[frame["cell"] != TEACHER_CELL]
    if len(teacher) != 1 or students.empty or not metric_columns(frame):
        return []
    metrics = [m for m in compared_metrics(frame, metrics) if not pd.isna(teacher[m].iloc[0])]
    if not metrics:
        return []
    labels = [METRIC_LABELS.get(metric, metric) for metric in metrics]
    title = "Gap to the teacher (teacher − cell; the teacher is one run, so the 95 % interval is over the cell's seeds):"
    lines = ["", title, "", "| cell | " + " | ".join(f"Δ {label}" for label in labels) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    for cell, rows in students.groupby("cell", sort=False):
        gaps = [paired_difference([float(teacher[m].iloc[0]) - float(value) for value in rows[m]]).render()
                for m in metrics]
        lines.append(f"| {cell} | " + " | ".join(gaps) + " |")
    return lines


def pairs_markdown(frame: pd.DataFrame, pairs: list[tuple[str, str]], metric: str, correction: str) -> list[str]:
    """A study's declared comparisons: per pair (cell − against, the same seed) the paired mean and 95 % CI and
    (``correction="holm"``) the t-test p-value with its Holm-adjusted value over exactly the declared pairs."""
    label = METRIC_LABELS.get(metric, metric)
    cells = set(frame["cell"].astype(str))
    differences = {(a, b): paired_differences(frame, b, metric).get(a, paired_difference([]))
                   if a in cells and b in cells else paired_difference([]) for a, b in pairs}
    tested = [pair for pair, difference in differences.items() if difference.pairs >= 2]
    adjusted = dict(zip(tested, holm_adjust([differences[pair].p for pair in tested])))
    header = ["comparison (declared)", f"Δ {label} (paired, 95 % CI)"]
    header += [f"Δ {label}: t-test p, Holm"] if correction == "holm" else []
    lines = ["Declared comparisons:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (a, b), difference in differences.items():
        row = [f"{a} − {b}", render_pairs(difference, frame, a, b)]
        if correction == "holm":
            row.append(render_holm(difference, adjusted.get((a, b), 1.0)))
        lines.append("| " + " | ".join(row) + " |")
    if correction == "holm":
        lines += ["", (f"Holm–Bonferroni over the m = {len(tested)} declared comparison{'s' if len(tested) != 1 else ''} "
                      f"with two paired seeds or more; \"separated (Holm)\" when the adjusted p < 0.05.")]
    return lines


def tuning_grid_markdown(frame: pd.DataFrame, metric: str) -> list[str]:
    """A tuning table's final grid per cell: every value tried (in value order) with its mean validation ``metric``
    over the tuning seeds, the round that added it (and why), the choice and why the search stopped. A value with a
    collapsed seed is marked; under a declared ``tune.collapsed: exclude`` it is not choosable
    (:mod:`kdlab.ablation.tuning`)."""
    label = METRIC_LABELS.get(metric, metric)
    rule = ((study_declaration(frame) or {}).get("tune") or {}).get("collapsed", "keep")
    collapsed_runs = collapsed_rows(frame)
    lines = [("Tuning grid per cell (kdlab.ablation.tuning): every value tried, its mean validation "
             f"{label} over the tuning seeds (round it was added in, why), the choice (**bold**) and why the search "
             "stopped:"), ""]
    frame = frame[frame["cell"] != TEACHER_CELL]
    for group, rows in frame.groupby(frame["cell"].astype(str).str.rsplit(",", n=1).str[0], sort=False):
        values, choosable = [], {}
        for cell, runs in rows.groupby("cell", sort=False):
            setting = str(cell).rsplit(",", 1)[1]
            scores = (pd.to_numeric(runs[metric], errors="coerce") if metric in runs.columns
                      else pd.Series([math.nan] * len(runs))).tolist()
            kept = tuning_score(scores, False)  # the mean shown, also beside a value the rule excludes
            mean = math.nan if kept is None else kept
            number = pd.to_numeric(pd.Series([setting.partition("=")[2]]), errors="coerce").iloc[0]
            first = runs.iloc[0]
            collapsed = int(collapsed_runs[runs.index].sum())
            values.append((number, setting, mean, first.get("tune_round"), first.get("tune_added"),
                           first.get("tune_stop"), runs["seed"].nunique(), collapsed))
            choosable[setting] = tuning_score(scores, collapsed > 0, rule)
        best = best_tuned_value(choosable)
        ordered = sorted(values, key=lambda v: (math.isnan(v[0]), v[0] if not math.isnan(v[0]) else 0))
        shown = []
        for _number, setting, mean, round_, added, _stop, seeds, collapsed in ordered:
            score = "diverged" if math.isnan(mean) else f"{mean:.2f}"
            if collapsed:
                score += f" ⚠ collapsed on {collapsed} of {seeds} seed{'s' if seeds != 1 else ''}" + (
                    ", excluded" if rule == "exclude" else "")
            text = f"{setting}: {score}" + (f" (round {int(round_)}, {added})" if _present(round_) else "")
            shown.append(f"**{text}**" if setting == best else text)
        stop = next((v[5] for v in values if _present(v[5]) and str(v[5])), "not recorded")
        seeds = max(v[6] for v in values)
        lines.append(f"- {group} ({seeds} seed{'s' if seeds != 1 else ''}): " + "; ".join(shown)
                     + f". Stopped: {stop}.")
    return lines


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def flags_of(frame: pd.DataFrame) -> pd.Series:
    """The rows' ``flag`` column as text, ``""`` where a row has none (or the table no such column)."""
    if "flag" not in frame.columns:
        return pd.Series("", index=frame.index, dtype=str)
    return frame["flag"].astype(object).where(frame["flag"].notna(), "").astype(str)


def diverged_seeds(frame: pd.DataFrame) -> dict[str, int]:
    """Per cell, how many of its rows are flagged ``diverged`` (no metrics: a run whose loss became non-finite)."""
    counts = frame[flags_of(frame).str.startswith("diverged")].groupby("cell")["seed"].nunique()
    return {str(cell): int(count) for cell, count in counts.items()}


def render_pairs(difference: PairedDifference, frame: pd.DataFrame, cell: str, against: str) -> str:
    """``difference.render()``, with ``(4 of 5 seeds paired)`` when a seed both cells ran has no metric in one
    of them (it diverged): the difference is then over the seeds that finished in both."""
    seeds = set(frame.loc[frame["cell"].astype(str) == cell, "seed"]) \
        & set(frame.loc[frame["cell"].astype(str) == against, "seed"])
    shown = difference.render()
    return shown + (f" ({difference.pairs} of {len(seeds)} seeds paired)"
                    if 0 < difference.pairs < len(seeds) else "")


def cell_marks(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Per flagged cell, the first words of its rows' flags (``collapsed``, ``weak``, ``diverged``: the keys of
    :data:`FLAG_NOTES`): what the Markdown marks ``⚠ collapsed`` and the plot hatches."""
    flags = flags_of(frame)
    # a flag's first word names it: "collapsed: ..." (classification), "weak: ..." (detection), "diverged"
    marks = frame.assign(mark=flags.str.split(":").str[0].str.strip())[flags != ""].groupby("cell")["mark"]
    return {str(cell): sorted(set(values)) for cell, values in marks}


def paper_value(reference: dict, cell: Any) -> float | None:
    """The paper's number for a cell: grid cells are labelled "kind=ssim", so the value matches as well as the
    whole label."""
    return reference["cells"].get(str(cell), reference["cells"].get(str(cell).split("=")[-1]))


def check_paper_fits(frame: pd.DataFrame, paper: str) -> None:
    """Refuse ``--paper`` on a table none of whose cells the paper reports (an empty paper column says nothing),
    naming the table the paper's numbers fit."""
    if paper not in PAPER_NUMBERS:
        raise KdlabError(f"--paper '{paper}' unknown: choose one of {', '.join(PAPER_NUMBERS)}")
    reference = PAPER_NUMBERS[paper]
    if not any(paper_value(reference, cell) is not None for cell in frame["cell"].astype(str).unique()):
        raise KdlabError(f"--paper {paper}: none of this table's cells ({', '.join(dict.fromkeys(frame['cell'].astype(str)))}) "
                         f"is in the paper's table; its numbers fit {reference['fits']}: drop --paper here")


def _cost_cell(column: str, mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    if column in ("train_seconds", "wall_seconds"):
        return f"{mean:.0f}" if math.isnan(std) else f"{mean:.0f} ± {std:.0f}"
    return f"{mean:g}"


def write_ablation_outputs(rows: list[dict[str, Any]], csv_path: Path, paper: str | None = None) -> None:
    """Rewrite the ablation CSV atomically (under its lock), then its Markdown and PNG."""
    frame = pd.DataFrame(rows)
    with FileLock(str(csv_path) + ".lock", timeout=600):
        atomic_write_text(csv_path, table_csv(frame))
    render(csv_path, paper=paper)


def merge_eval_column(csv_path: Path, eval_path: Path, attack: str = "autoattack") -> int:
    """Copy ``attack``'s accuracy from evaluation rows (``kdlab eval RUN_DIR``, results/eval.csv; the latest per
    model and test set) into the ablation rows of the same run, as ``<attack>_acc`` and ``<attack>_n``; rewrites the
    CSV atomically under its lock. Returns how many rows received a value (a one-line error when none)."""
    csv_path, eval_path = Path(csv_path), Path(eval_path)
    if csv_kind(eval_path) != "eval":
        raise KdlabError(f"--with-eval {eval_path}: not an evaluation table: pass results/eval.csv (kdlab eval)")
    evaluations = latest_eval_rows(read_table(eval_path))
    evaluations = evaluations[evaluations["attack"] == attack]
    by_run = {Path(str(checkpoint)).parent.name: row for checkpoint, row in
              zip(evaluations["checkpoint"], evaluations.to_dict("records"))}
    if not csv_path.is_file():
        raise KdlabError(f"table '{csv_path}' not found: run the ablation first, or check the path")

    def merge(frame: pd.DataFrame) -> int:
        runs = frame["run_dir"].map(lambda run_dir: Path(str(run_dir)).name)
        frame[f"{attack}_acc"] = runs.map(lambda run: by_run.get(run, {}).get("accuracy"))
        frame[f"{attack}_n"] = runs.map(lambda run: by_run.get(run, {}).get("n"))
        matched = int(frame[f"{attack}_acc"].notna().sum())
        if not matched:
            raise KdlabError(f"no {attack} row of {eval_path} evaluates a run of {csv_path.name}: run kdlab eval "
                             f"RUN_DIR --attack {attack} on a run_dir of the table first")
        return matched

    with sole_writer(csv_path):  # not while kdlab ablate writes it
        return rewrite_table(csv_path, merge)


def default_paper(frame: pd.DataFrame) -> str | None:
    """The paper table this ablation reproduces, judged by its contents (not its file name)."""
    if "components" in set(frame.get("kind", [])):
        return "mixacm-components"
    return None


def default_baseline(frame: pd.DataFrame) -> str | None:
    """The cell the others are compared with, when the table has an obvious one: no distillation (or, in a
    method comparison, MixACM)."""
    cells = set(frame["cell"].astype(str))
    # a method comparison is read against MixACM, the method kdlab reproduces
    methods = "methods" in set(frame.get("kind", []))
    return next((cell for cell in ("student-ce", "kind=none", *(("mixacm",) if methods else ())) if cell in cells),
                None)


def study_declaration(frame: pd.DataFrame) -> dict | None:
    """The declaration a study's table records in every row (``study_declaration``, :mod:`kdlab.ablation.study`)."""
    import json

    if "study_declaration" not in frame.columns:
        return None
    recorded = frame["study_declaration"].dropna()
    return json.loads(str(recorded.iloc[0])) if len(recorded) else None


def declaration_markdown(frame: pd.DataFrame, declaration: dict) -> list[str]:
    """The opening of a study table's Markdown: what was declared before any result (question, cells, seeds,
    deciding metric, comparisons, correction, tuning, final evaluation) and the command that regenerates it."""
    sha = next(iter(frame["study_sha256"].dropna().astype(str)), "?") if "study_sha256" in frame.columns else "?"
    cells = declaration["cells"]
    preset = next(key for key in ("components", "blocks", "methods", "grid") if key in cells)
    shown = {"components": "the MixACM components preset", "blocks": f"blocks {cells.get('blocks')}"
             + (" cumulative" if cells.get("cumulative") else "")
             + (" (every block at acm.weight)" if cells.get("per_block_weight") else " (equal total ACM weight)"),
             "methods": f"methods {', '.join(cells.get('methods', []))}"
             + (f" (method_set {', '.join(cells['method_set'])})" if cells.get("method_set") else ""),
             "grid": "grid " + "; ".join(f"{key}: {', '.join(values)}" for key, values in cells.get("grid", []))}
    comparisons = declaration["comparisons"]
    compared = (f"every cell − {comparisons['baseline']}" if "baseline" in comparisons
                else ", ".join(f"{a} − {b}" for a, b in comparisons["pairs"]) or "none declared")
    seeds = declaration["seeds"]
    lines = [(f"Study `{declaration['study']}` (declaration sha256 `{sha}`), declared before its runs: "
             f"{declaration['question']}"), "",
             f"- recipe: `{declaration['recipe']}`" + (f", --set {' '.join(declaration['set'])}"
                                                       if declaration["set"] else ""),
             f"- cells: {shown[preset]}",
             f"- seeds: {', '.join(map(str, seeds))} ({len(seeds)})",
             f"- deciding metric: {METRIC_LABELS.get(declaration['metric'], declaration['metric'])}",
             f"- comparisons: {compared}",
             f"- correction: {declaration['correction']}"]
    tune = declaration.get("tune")
    if tune:
        own = "; ".join(f"{cell}: " + ("not tuned" if spec is None else ", ".join(spec["values"]))
                        for cell, spec in tune["cells"].items())
        lines.append(f"- tuning: {tune['key']} = {', '.join(tune['values'])} ({tune['scale']} scale"
                     + (f", bounds {tune['bounds']}" if tune["bounds"] != [None, None] else "")
                     + f"; {own}" * bool(own) + f"), on validation {tune.get('metric') or declaration['metric']}, "
                     f"mean of seeds {', '.join(map(str, tune['seeds']))}, up to {tune['max_rounds']} rounds")
    final = declaration.get("final")
    lines.append("- final evaluation: " + (f"{', '.join(final['attacks'])} on n = {final['n']} test images"
                                           + (", sanity checks" if final["sanity"] else "")
                                           if final else "none declared"))
    command = next(iter(frame["command"].dropna().astype(str)), "") if "command" in frame.columns else ""
    if command:
        lines.append(f"- regenerate: `{command}`")
    return lines + [""]


def study_status(frame: pd.DataFrame, declaration: dict, tuning: bool) -> str | None:
    """``**In progress**: ...`` for a study table that is not finished, else ``None``. A final table records how
    many rows it holds when finished (``study_runs``) and is in progress while it holds fewer, or while a row lacks
    the declared final evaluation; a tuning grid is in progress until its searches stopped (``tune_stop``, written
    when the last round ends)."""
    if tuning:
        if "tune_stop" in frame.columns and frame["tune_stop"].notna().all():
            return None
        last = int(frame["tune_round"].max()) if "tune_round" in frame.columns and len(frame) else 1
        return (f"**In progress**: tuning round {last} of at most {declaration['tune']['max_rounds']}, "
                f"{len(frame)} runs so far; no value is chosen before every search stops. The regenerate command "
                "continues it.")
    if "study_runs" not in frame.columns or frame["study_runs"].dropna().empty:
        return None  # written before tables recorded it
    declared = int(frame["study_runs"].dropna().max())
    final = declaration.get("final")
    wanted = [f"{attack}_acc" for attack in final["attacks"]] if final else []
    students = frame[frame["cell"].astype(str) != TEACHER_CELL]
    scored = students[~flags_of(students).str.startswith("diverged")]
    evaluated = int(scored[wanted].notna().all(axis=1).sum()) if set(wanted) <= set(frame.columns) else 0
    if len(frame) >= declared and evaluated == len(scored):
        return None
    return (f"**In progress**: {len(frame)} of the {declared} declared runs have a row"
            + (f", {evaluated} of {len(scored)} student runs have the declared final evaluation" if final else "")
            + ". The regenerate command continues it; `kdlab verify results` lists what is left.")


def render(csv_path: Path, paper: str | None = None, baseline: str | list[str] | None = None,
           out_dir: Path | None = None, correction: str | None = None,
           metrics: list[str] | None = None, plot: bool = True) -> tuple[Path, Path]:
    """Markdown and PNG from the CSV alone, beside it (or in ``out_dir``, e.g. a report's scratch folder; ``plot``
    False: the Markdown alone, e.g. to check a committed one, ``kdlab verify``);
    ``correction`` (:data:`~kdlab.config.names.CORRECTIONS`) and ``metrics`` (the paired columns' metrics, the
    deciding one first) as in :func:`markdown_table`. A study's table (:func:`study_declaration`) opens with its
    declaration and by default reads its declared comparisons, deciding metric and correction."""
    from kdlab.report.plots import plot_ablation_bars, plot_cost_robustness

    csv_path = Path(csv_path)
    frame = read_table(csv_path)
    declaration = study_declaration(frame)
    correction = correction or (declaration or {}).get("correction") or "holm"
    check_correction(correction)
    if paper is not None:
        check_paper_fits(frame, paper)
    paper = paper or default_paper(frame)
    pairs, metric, tuning = None, None, csv_path.stem.endswith("-val")
    if declaration is not None and not baseline:
        metric = (declaration.get("tune") or {}).get("metric") or declaration["metric"] if tuning else \
            declaration["metric"]
        comparisons = declaration["comparisons"]
        if not tuning:
            baseline = comparisons.get("baseline")
            if baseline is not None and baseline not in set(frame["cell"].astype(str)):
                baseline = None  # a study in progress (its teacher row first): no row of its baseline cell yet
            pairs = [tuple(pair) for pair in comparisons.get("pairs", [])] or None
    else:
        baseline = baseline or default_baseline(frame)
    if not metric_columns(frame):  # only diverged runs so far: nothing to compare (or plot) yet
        baseline, pairs, metric = None, None, None
    if metric is not None and not metrics:  # the declared deciding metric first; AutoAttack beside it when measured
        metrics = [metric] + ([] if tuning else [m for m in compared_metrics(frame)[1:] if m != metric])
    stem = Path(out_dir) / csv_path.stem if out_dir is not None else csv_path.with_suffix("")
    markdown = stem.with_name(stem.name + ".md")
    table = markdown_table(frame, paper, baseline, edges=tuning_edges(frame, csv_path.parent), correction=correction,
                           metrics=metrics, pairs=pairs)
    head = declaration_markdown(frame, declaration) if declaration is not None else []
    status = study_status(frame, declaration, tuning) if declaration is not None else None
    head += [status, ""] if status else []
    atomic_write_text(markdown, "\n".join([f"# {csv_path.stem}", "", *head, f"Source: `{csv_path.name}`.", "", ""])
                      + table)
    plot_path = plot_file(stem, "")
    if not plot:  # the Markdown alone
        return markdown, plot_path
    for suffix, inputs in plot_inputs(frame, csv_path).items():  # none while every run so far diverged
        draw = plot_cost_robustness if suffix == COST_PLOT else plot_ablation_bars
        draw(path=plot_file(stem, suffix), source=plot_source(csv_path, inputs), **inputs)
    return markdown, plot_path


COST_PLOT = "-cost"  # the suffix of a method comparison's cost plot: <table>-cost.png


def plot_file(stem: Path, suffix: str) -> Path:
    """The PNG of a table (``stem``: its path without ``.csv``) for a :func:`plot_inputs` suffix."""
    return stem.with_name(stem.name + suffix + ".png")


def plot_inputs(frame: pd.DataFrame, csv_path: Path) -> dict[str, dict[str, Any]]:
    """What :func:`render` draws for a table, by the suffix of each PNG's name (``""``: ``<table>.png``, the bars,
    once a metric column has a value; :data:`COST_PLOT`: a method comparison's cost plot): the keyword arguments of
    :func:`~kdlab.report.plots.plot_ablation_bars` and :func:`~kdlab.report.plots.plot_cost_robustness`, data
    included, which :func:`plot_source` digests."""
    metrics = metric_columns(frame)
    if not metrics:
        return {}
    summary = summarise(frame)
    values, errors = [f"{m}_mean" for m in metrics], [f"{m}_std" for m in metrics]
    inputs: dict[str, dict[str, Any]] = {"": {
        "table": summary[["cell", *values, *errors]], "value_columns": values, "error_columns": errors,
        "label_column": "cell",
        "title": f"{csv_path.stem}\n{plot_subtitle(frame) or 'settings not recorded in this CSV'} (mean ± std over "
                 "seeds)",
        "series_labels": [metric_header(frame, m) for m in metrics], "flags": cell_marks(frame)}}
    if "passes_per_image" in cost_columns(frame):
        metric = headline_metric(frame)
        inputs[COST_PLOT] = {
            "table": frame.loc[frame["cell"] != TEACHER_CELL, ["cell", "passes_per_image", metric]],
            "cost_column": "passes_per_image", "metric_column": metric,
            "xlabel": "student forward+backward passes per training image",
            "ylabel": f"{METRIC_LABELS.get(metric, metric)} (%)",
            "title": f"{csv_path.stem}: robustness against training cost\n{plot_subtitle(frame)} (mean ± std over "
                     "seeds)"}
    return inputs


def plot_source(csv_path: Path, inputs: dict[str, Any]) -> str:
    """What a table's PNG records it was drawn from (its ``Source`` text, :func:`kdlab.report.plots.png_source`):
    the CSV's name and the sha256 of the plot's inputs (:func:`plot_inputs`: the numbers, labels and marks drawn).
    ``kdlab verify`` computes it again from the committed CSV: a plot that no longer shows what its CSV says (rows
    changed or added after it was drawn) is found; a change to columns the plot does not draw is not."""
    import json

    canonical = json.dumps({key: value.to_csv(index=False) if isinstance(value, pd.DataFrame) else value
                            for key, value in inputs.items()}, sort_keys=True, default=str)
    return f"{csv_path.name} data sha256 {hashlib.sha256(canonical.encode()).hexdigest()}"


def plot_subtitle(frame: pd.DataFrame) -> str:
    """What the bars measured: the model, n and the attack (from the cells' rows; tables written before these
    columns existed say only what they have)."""
    students = frame[frame["cell"] != TEACHER_CELL]

    def single(column: str):
        values = students[column].dropna().unique() if column in students.columns else []
        return values[0] if len(values) == 1 else None

    parts = [str(single("arch"))] if single("arch") is not None else []
    if single("eval_n") is not None:
        parts.append(f"n = {int(single('eval_n'))}")
    if "pgd_acc" in frame.columns and single("eval_steps") is not None and single("eval_eps") is not None:
        parts.append(f"PGD-{int(single('eval_steps'))} at ε = {float(single('eval_eps')) * 255:g}/255")
    elif any(metric in frame.columns for metric in DETECTION_METRICS):
        parts.append("COCO box AP")
    return ", ".join(parts)


# --------------------------------------------------------------------------- kdlab table on any kdlab CSV
# The columns that identify one evaluation: a re-evaluation of the same model, test set and attack supersedes.
EVAL_KEY = ["model", "dataset", "data_root", "test_sha256", "attack", "eps", "alpha", "steps", "restarts",
            "n", "seed"]
EVAL_COLUMNS = ["model", "arch", "dataset", "data_root", "attack", "eps_255", "steps", "n", "clean_accuracy",
                "accuracy", "AP", "AP50", "flag"]
RUNS_COLUMNS = ["name", "key", "kind", "arch", "overrides", "seed", "clean_acc", "pgd_acc", "autoattack_acc",
                "AP", "AP50", "flag", "git_commit", "finished_at"]
ACCEPTED = ("an ablation table (results/ablations/*.csv, written by kdlab ablate), evaluation rows "
            "(results/eval.csv, kdlab eval) or the runs table (results/runs.csv, kdlab train/distill)")


def csv_kind(path: Path) -> str:
    """``ablation``, ``eval`` or ``runs``, judged by the CSV's columns; a one-line error for anything else."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise KdlabError(f"table '{path}' not found: pass {ACCEPTED}")
    with path.open(newline="") as stream:
        header = set(next(csv.reader(stream), []))
    if {"cell", "seed"} <= header:
        return "ablation"
    if {"model", "attack"} <= header:
        return "eval"
    if {"name", "run_dir"} <= header:
        return "runs"
    raise KdlabError(f"{path} is not a table kdlab writes: kdlab table accepts {ACCEPTED}")


def latest_eval_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest row per :data:`EVAL_KEY`: re-evaluations supersede; rows on another test set stay apart."""
    return frame.drop_duplicates(subset=[k for k in EVAL_KEY if k in frame.columns], keep="last")


def rows_markdown(path: Path, kind: str) -> str:
    """A Markdown view of an evaluation CSV (latest rows) or of the runs table (one row per run)."""
    frame = read_table(path)
    if kind == "eval":
        frame, columns = latest_eval_rows(frame), EVAL_COLUMNS
        what = "latest evaluation per model, test set and attack"
    else:
        columns, what = RUNS_COLUMNS, "one row per run; its directory is run_dir (results/runs/<key>)"
    columns = [c for c in columns if c in frame.columns and frame[c].notna().any()]
    lines = [f"# {path.name}: {what}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_markdown_cell(row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _markdown_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|")
