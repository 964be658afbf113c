"""What ``kdlab train`` and ``kdlab distill`` print when a run is done: one row per model (the teacher, then the
trained model) with every metric the run measured, the table's title (what was measured, on how many images) and
notes under it.

The metric columns are the evaluation attacks (``<attack>_acc``, in the order of
:data:`kdlab.config.names.ATTACKS`) and the COCO metrics (:data:`kdlab.config.names.DETECTION_METRICS`) that the
run's summary holds. A teacher trained from its recipe, or given as the ``best.pt`` of a kdlab run directory, shows
the scores its own run measured (that directory's ``summary.json``); a teacher no run of kdlab evaluated (another
checkpoint, a RobustBench model) says so instead of showing dashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.config.names import ATTACKS, DETECTION_METRICS, METRIC_LABELS
from kdlab.config.units import format_eps
from kdlab.results import read_json

NOT_EVALUATED = "not evaluated"


def metric_names() -> tuple[str, ...]:
    """Every metric a run can record, in the order tables show them."""
    return (*(f"{attack}_acc" for attack in ATTACKS), *DETECTION_METRICS)


@dataclass
class ResultView:
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    short: dict[str, str] = field(default_factory=dict)  # header abbreviations a narrow terminal may use
    notes: list[str] = field(default_factory=list)


def _own_run(teacher: str) -> Path | None:
    """The kdlab run directory whose evaluation scored this teacher: the teacher's run directory (a teacher recipe),
    or the directory of a checkpoint that is a run's ``best.pt`` (the model that run evaluated)."""
    path = Path(teacher)
    if path.is_dir() and (path / "summary.json").is_file():
        return path
    if path.name == "best.pt" and (path.parent / "summary.json").is_file():
        return path.parent
    return None


def teacher_scores(summary: dict[str, Any]) -> tuple[dict[str, Any] | None, Path | None]:
    """The teacher's scores (metric -> value) and the run directory that measured them; ``(None, None)`` when no
    kdlab run evaluated the teacher (a checkpoint from elsewhere, a RobustBench model)."""
    teacher = str(summary.get("teacher") or "")
    own = _own_run(teacher) if teacher else None
    if own is not None:
        recorded = read_json(own / "summary.json")
        return {m: recorded[m] for m in metric_names() if recorded.get(m) is not None} | {
            key: recorded.get(key) for key in ("eval_n", "eval_split", "eval_eps", "eval_steps")}, own
    carried = {m: summary[f"teacher_{m}"] for m in metric_names() if summary.get(f"teacher_{m}") is not None}
    return (carried or None), None


def run_result_view(summary: dict[str, Any], role: str, reused: bool) -> ResultView:
    """The table ``kdlab train``/``distill`` prints for a finished run (``role``: "model" or "student")."""
    teacher = summary.get("teacher")
    scores, measured_by = teacher_scores(summary) if teacher else (None, None)
    shown = [m for m in metric_names() if summary.get(m) is not None or (scores or {}).get(m) is not None]
    rows, notes = [], []
    if teacher:
        if scores is None:
            rows.append({"role": "teacher", "run": teacher, **{m: NOT_EVALUATED for m in shown}})
            notes.append(f"teacher {teacher}: not evaluated by kdlab (a checkpoint without its run's summary.json, "
                         f"or a zoo model); kdlab eval {teacher} measures it")
        else:
            rows.append({"role": "teacher", "run": teacher, **{m: scores.get(m) for m in shown}})
            missing = [m for m in shown if scores.get(m) is None]
            if missing:
                notes.append(f"teacher: {', '.join(missing)} not measured by its run (-)")
            settings = ("eval_n", "eval_split", "eval_eps", "eval_steps")
            if measured_by is not None and summary.get("task") != "detection" and any(scores.get(k) not in (None, summary.get(k)) for k in settings):
                notes.append(f"teacher scores as its run measured them ({measured_by}): "
                             f"{_what(scores)}")
    rows.append({"role": role, "run": summary["run_dir"], **{m: summary.get(m) for m in shown}})
    note = " (finished earlier: reused; --force retrains)" if reused else ""
    if summary.get("task") == "detection":
        title = f"{summary['name']}: COCO box AP (%) on {summary.get('eval_n')} {summary.get('eval_split')} images{note}"
    else:
        title = f"{summary['name']}: accuracy (%) on {_what(summary)}{note}"
    short = {m: METRIC_LABELS[m] for m in shown if m in METRIC_LABELS}
    return ResultView(title, ["role", "run", *shown], rows, short, notes)


def _what(summary: dict[str, Any]) -> str:
    return (f"{summary.get('eval_n')} {summary.get('eval_split')} images, PGD-{summary.get('eval_steps')} eps "
            f"{format_eps(summary.get('eval_eps') or 0)}")
