"""Final evaluation of finished runs: new attacks on a trained checkpoint, never a new training run.

:func:`evaluate_finished` evaluates one finished run directory's selected checkpoint (``best.pt``, the one the
run's own evaluation measured) on the run's own test images -- the recipe's data, ``n`` images in the fixed
order seeded by its ``eval.seed`` -- with each attack at the protocol's settings (``kdlab eval``'s defaults, the
same code path: PGD-20 with step eps/4, i.e. 2/255 at 8/255; CW-inf 30 steps, step eps/4; the standard
AutoAttack, :mod:`kdlab.robustness.attacks`), plus the sanity checks (``kdlab eval --sanity``).
:func:`evaluate_table` applies it to every row of an ablation table and writes the columns into its CSV
(then re-renders its Markdown and PNG). ``kdlab eval TABLE.csv`` is the command; ``kdlab ablate`` can call
:func:`evaluate_table` after its cells have finished.

Decisions, each stated where it is made:

- **eps**: every attack runs at the budget the run's own evaluation recorded (``eval_eps`` of its summary,
  8/255 by default), so the new columns sit beside its PGD number on one budget; a table whose rows were
  evaluated at different budgets is refused (one column is one budget).
- **Which runs**: classifiers evaluated on their test split. A detection run (its AP is its final evaluation)
  and a run evaluated on its validation split (a tuning run: final numbers are test numbers) are refused.
- **PGD reuse**: the run's own PGD number is reused when it *is* the PGD-20 of the protocol on the same images --
  same n, seed and data, 20 steps, step eps/4, fp32 -- (training's evaluation and ``kdlab eval`` attack each image
  from the same per-image seeded start, so they give the same number); otherwise PGD-20 is measured. The clean
  accuracy likewise.
- **Nothing computed twice**: each attack's row goes to ``out`` (``results/eval.csv``, the rows ``kdlab eval``
  appends) as it finishes, and an attack already recorded there for the same checkpoint (SHA-256), test images
  (SHA-256 of the selected images and labels), attack settings and n is not run again
  (:data:`kdlab.tasks.classification_eval.IDENTITY`). The columns of a finished evaluation are kept in the run
  directory (:data:`CACHE`, keyed by the checkpoint's SHA-256, the data section, n, seed, eps, batch size,
  attack settings and sanity), so a second call loads nothing and attacks nothing.
- **Batch size**: the run's ``eval.batch_size`` (AutoAttack seeds each batch as the reference does, so its
  per-image results are reproducible for a fixed batch size).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdlab.errors import KdlabError
from kdlab.results import now, read_json, sole_writer, write_json

FINAL_ATTACKS = ["pgd", "cw", "autoattack"]
"""The final protocol's attacks (issue #24): PGD-20, CW-inf and the standard AutoAttack."""

CACHE = "final_eval.json"
"""The run directory's record of its final evaluations: one entry per configuration (see :func:`_cache_key`)."""

SANITY_NOT_RUN = "not run"

Notify = Callable[[str], None]


def _quiet(text: str) -> None:
    return None


# --------------------------------------------------------------------------- one finished run
def _finished(run_dir: Path) -> tuple[Any, dict]:
    """The recipe and summary of a finished classification run evaluated on its test split; one line otherwise."""
    import yaml

    from kdlab.config.recipe import validate_recipe

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KdlabError(f"run directory {run_dir} not found: train it first (kdlab train/distill/ablate with the "
                         "command that made it; a finished run is reused, not retrained)")
    missing = [name for name in ("summary.json", "best.pt", "recipe.yaml") if not (run_dir / name).is_file()]
    if missing:
        raise KdlabError(f"{run_dir} has no finished checkpoint ({', '.join(missing)} missing): finish the run "
                         "first (rerun its command with --resume); final evaluation never trains")
    recipe = validate_recipe(yaml.safe_load((run_dir / "recipe.yaml").read_text()), str(run_dir / "recipe.yaml"))
    summary = read_json(run_dir / "summary.json")
    if recipe.task != "classification":
        raise KdlabError(f"{run_dir} is a {recipe.task} run: its COCO AP is its final evaluation, the attacks apply "
                         "to classifiers; leave it out of the final evaluation")
    if recipe.eval.split != "test":
        raise KdlabError(f"{run_dir} was evaluated on its validation split (a tuning run): final numbers are "
                         "measured on the test split of final runs; evaluate the study's final table instead")
    return recipe, summary


def _run_eps(recipe, summary: dict) -> float:
    recorded = summary.get("eval_eps")
    return float(recorded) if recorded is not None else float(recipe.eval.eps)


def reusable_pgd(recipe, summary: dict, n: int, eps: float) -> float | None:
    """The run's own PGD accuracy when it is the protocol's PGD-20 (20 steps, step eps/4, fp32) measured on the
    images the final evaluation would use (same data, seed and n), else ``None``."""
    spec = recipe.eval
    value, measured_n = summary.get("pgd_acc"), summary.get("eval_n")
    if value is None or measured_n is None or spec.precision != "fp32" or "pgd" not in spec.attacks:
        return None
    if spec.steps != 20 or not math.isclose(spec.alpha, eps / 4, rel_tol=0, abs_tol=1e-12):
        return None
    # the final n is min(n, test split size); the split's size is known when it cut the run's own n
    same_images = n == measured_n or (n > measured_n and measured_n < spec.n)
    return float(value) if same_images else None


def _cache_key(checkpoint_sha: str, recipe, n: int, eps: float, attacks: list[str], sanity: bool) -> str:
    from kdlab.robustness.attacks import AttackSpec
    from kdlab.robustness.sanity import SANITY_RULES

    settings = []
    for name in attacks:
        r = AttackSpec(name, eps=eps, seed=recipe.eval.seed).resolved()
        settings.append([r.name, r.eps, r.alpha, r.steps, r.restarts])
    payload = {"checkpoint_sha256": checkpoint_sha, "data": recipe.data.model_dump(mode="json"), "n": n,
               "seed": recipe.eval.seed, "eps": eps, "batch_size": recipe.eval.batch_size, "attacks": settings,
               "sanity": SANITY_RULES if sanity else False}  # a verdict cached under older rules is judged again
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(run_dir: Path, key: str) -> dict | None:
    path = run_dir / CACHE
    if not path.is_file():
        return None
    entry = (read_json(path) or {}).get(key)
    return dict(entry["columns"]) if isinstance(entry, dict) and "columns" in entry else None


def _remember(run_dir: Path, key: str, columns: dict, details: dict) -> None:
    from filelock import FileLock

    path = run_dir / CACHE
    with FileLock(str(path) + ".lock", timeout=600):
        entries = (read_json(path) or {}) if path.is_file() else {}
        entries[key] = {"columns": columns, **details}
        write_json(path, entries)


def evaluated_columns(run_dir: Path, attacks: list[str], n: int, sanity: bool) -> dict[str, Any] | None:
    """The columns of this final evaluation if the run directory has them on record (same checkpoint, data, n,
    seed, eps, batch size, attacks and sanity), else ``None``; reads the recipe, the summary and the checkpoint's
    digest, nothing else. A run dir without a finished checkpoint is refused (one line)."""
    from kdlab.models.files import file_digest

    if n < 1:
        raise KdlabError(f"n {n}: evaluate at least one test image (the protocol uses --n 1000)")
    run_dir = Path(run_dir)
    recipe, summary = _finished(run_dir)
    key = _cache_key(file_digest(run_dir / "best.pt"), recipe, n, _run_eps(recipe, summary),
                     check_attacks(attacks), sanity)
    return _cached(run_dir, key)


def check_attacks(attacks: list[str]) -> list[str]:
    """The attacks asked for, known and without repeats (``clean`` is always measured); one line otherwise."""
    from kdlab.robustness.attacks import attack_def

    chosen = [name for name in dict.fromkeys(attacks or FINAL_ATTACKS) if name != "clean"]
    for name in chosen:
        attack_def(name)  # unknown: one line naming the choices
    return chosen


def evaluate_finished(run_dir: Path, attacks: list[str], n: int, sanity: bool, *, threads: int = 1,
                      out: Path = Path("results/eval.csv"), progress: Any = None,
                      notify: Notify | None = None) -> dict[str, Any]:
    """Evaluate a finished run's ``best.pt`` on its own test images with ``attacks`` (and ``clean``) and, with
    ``sanity``, the sanity checks; never trains (a run dir without a finished checkpoint is refused, one line).

    Returns the table's columns: ``<attack>_acc`` and ``<attack>_n`` for ``clean`` and each attack (accuracy in %
    and the number of test images), ``sanity`` (the verdict ``kdlab eval --sanity`` records: ``"ok (...)"`` or
    the violations; ``"not run"`` without ``sanity``), ``final_eval_seconds`` (wall seconds the evaluation took
    when it was computed; ``None`` when every attack was on record and only the verdict was judged again, e.g.
    under new sanity rules: :func:`evaluate_table` then keeps the seconds the table records), ``final_eval_torch``
    (the torch that computed it) and ``final_eval_cached`` (True when this call did no work). Idempotent and resumable: see the module docstring. ``threads``: torch threads."""
    import torch

    from kdlab.models.files import file_digest
    from kdlab.runs.evaluate import evaluate_target

    notify = notify or _quiet
    run_dir = Path(run_dir)
    chosen = check_attacks(attacks)
    cached = evaluated_columns(run_dir, chosen, n, sanity)
    if cached is not None:
        return {**cached, "final_eval_cached": True}
    recipe, summary = _finished(run_dir)
    eps = _run_eps(recipe, summary)
    checkpoint_sha = file_digest(run_dir / "best.pt")
    key = _cache_key(checkpoint_sha, recipe, n, eps, chosen, sanity)

    reused = reusable_pgd(recipe, summary, n, eps) if "pgd" in chosen else None
    if reused is not None:
        notify(f"pgd: the run's own PGD-20 on the same {summary['eval_n']} images is reused ({reused:.2f} %)")
    measure = ["clean"] + [name for name in chosen if not (name == "pgd" and reused is not None)]
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        report = evaluate_target(run_dir, measure, eps=eps, n=n, batch_size=recipe.eval.batch_size,
                                 seed=recipe.eval.seed, out=Path(out), sanity=sanity, progress=progress,
                                 notify=notify)
    finally:
        torch.set_num_threads(threads_before)
    seconds = time.perf_counter() - started
    rows = {str(row["attack"]): row for row in report.rows}
    count = int(rows["clean"]["n"])
    columns: dict[str, Any] = {}
    for name in ["clean", *chosen]:
        if name in rows:
            columns[f"{name}_acc"] = float(rows[name]["accuracy"])
        else:  # the run's own PGD-20 on these images (the rule in reusable_pgd)
            columns[f"{name}_acc"] = reused
        columns[f"{name}_n"] = count
    columns["sanity"] = report.sanity if sanity else SANITY_NOT_RUN
    # every attack already on record (a verdict judged again under new rules): no evaluation cost was measured
    columns["final_eval_seconds"] = round(seconds, 1) if report.attacks_run != 0 else None
    columns["final_eval_torch"] = torch.__version__.split("+")[0]
    _remember(run_dir, key, columns, {"checkpoint_sha256": checkpoint_sha, "test_sha256": rows["clean"].get(
        "test_sha256"), "eps": eps, "n": count, "out": str(out), "evaluated_at": now()})
    return {**columns, "final_eval_cached": False}


# --------------------------------------------------------------------------- every row of a table
TABLE_COLUMNS_SUFFIXES = ("_acc", "_n")
EXTRA_COLUMNS = ("sanity", "final_eval_seconds", "final_eval_torch")


def _table_runs(csv_path: Path):
    """The table's rows and, per row, its run directory (``None`` for a diverged row: no checkpoint, no
    metrics); refuses a table whose run directories are missing, naming them and the fix."""
    from kdlab.report.tables import csv_kind
    from kdlab.results import read_table

    csv_path = Path(csv_path)
    if csv_kind(csv_path) != "ablation":
        raise KdlabError(f"{csv_path} is not an ablation table: kdlab eval TABLE.csv evaluates the runs of a "
                         "results/ablations/*.csv (for one run: kdlab eval RUN_DIR)")
    frame = read_table(csv_path)
    if "run_dir" not in frame.columns:
        raise KdlabError(f"{csv_path} names no run directories (no run_dir column): regenerate it with its "
                         "kdlab ablate command (finished runs are reused)")
    flags = frame["flag"].fillna("").astype(str) if "flag" in frame.columns else [""] * len(frame)
    runs, missing = [], []
    for run_dir, flag in zip(frame["run_dir"], flags):
        if flag.startswith("diverged"):
            runs.append(None)
            continue
        if not isinstance(run_dir, str) or not run_dir:
            missing.append("(empty run_dir)")
            runs.append(None)
            continue
        path = Path(run_dir)
        runs.append(path)
        if not (path / "best.pt").is_file() or not (path / "summary.json").is_file():
            missing.append(run_dir)
    if missing:
        command = next((str(c) for c in frame.get("command", []) if isinstance(c, str) and c), None)
        fix = (f"rerun its command from the repository root ({command}; finished runs are reused, missing ones "
               "are trained) or evaluate on the machine that trained them") if command else \
            "run the evaluation where the runs are (run directories are not in git), or regenerate the table " \
            "with its kdlab ablate command"
        shown = ", ".join(missing[:2]) + (f" and {len(missing) - 2} more" if len(missing) > 2 else "")
        raise KdlabError(f"{len(missing)} of {len(frame)} run directories of {csv_path.name} are missing or "
                         f"unfinished ({shown}): {fix}")
    return frame, runs


def _write_row(csv_path: Path, run_dir: str, columns: dict[str, Any]) -> None:
    """Write one run's final columns into every table row of that run, atomically, under the table's lock."""
    import pandas as pd

    from kdlab.results import rewrite_table

    def write(frame: pd.DataFrame) -> None:  # image counts stay integers beside rows not evaluated yet (table_csv)
        rows = frame["run_dir"].astype(str) == str(run_dir)
        for column, value in columns.items():
            if column not in frame.columns or (frame[column].dtype != object and isinstance(value, str)):
                frame[column] = frame.get(column, pd.Series([None] * len(frame))).astype(object)
            frame.loc[rows, column] = value

    rewrite_table(csv_path, write)


def evaluate_table(csv_path: Path, attacks: list[str], n: int, sanity: bool, threads: int = 1, *,
                   out: Path = Path("results/eval.csv"), progress: Any = None,
                   notify: Notify | None = None) -> dict[str, Any]:
    """:func:`evaluate_finished` on every run of an ablation table (a diverged row has nothing to evaluate), each
    run's columns written into the CSV as soon as it is done; then the Markdown and PNG are rendered again
    (:func:`kdlab.report.tables.render`). Resumable: a run already evaluated costs nothing on a rerun. Refuses,
    before any work, a table whose run directories are missing or unfinished, or whose runs were evaluated at
    different budgets. Tells ``notify`` one line per row and, once a row has been measured, the expected time of
    the rest.

    Returns a summary: ``rows`` (table rows), ``runs`` (distinct runs), ``evaluated`` (computed now),
    ``cached`` (done before), ``skipped`` (diverged rows), ``sanity_failed`` (``cell seed`` of rows whose sanity
    verdict is not ok), ``seconds``, ``markdown`` and ``plot`` (the rendered files). Not while another process
    writes the table (:func:`kdlab.results.sole_writer`: a ``kdlab ablate`` would drop the columns written here)."""
    with sole_writer(csv_path):
        return _evaluate_table(csv_path, attacks, n, sanity, threads, out, progress, notify)


def _evaluate_table(csv_path: Path, attacks: list[str], n: int, sanity: bool, threads: int, out: Path,
                    progress: Any, notify: Notify | None) -> dict[str, Any]:
    from kdlab.config.units import format_clock, format_eps
    from kdlab.report.tables import render
    from kdlab.tasks.base import EvalInterrupted, refuse_unwritable

    notify = notify or _quiet
    csv_path = Path(csv_path)
    chosen = check_attacks(attacks)
    refuse_unwritable(Path(out), "--out")
    frame, runs = _table_runs(csv_path)
    budgets = {}
    for path in dict.fromkeys(r for r in runs if r is not None):
        recipe, summary = _finished(path)  # a detection or tuning run: one line, before any work
        budgets[path] = _run_eps(recipe, summary)
    if len({round(eps, 9) for eps in budgets.values()}) > 1:
        shown = ", ".join(sorted({format_eps(eps) for eps in budgets.values()}))
        raise KdlabError(f"the runs of {csv_path.name} were evaluated at different budgets ({shown}): one column "
                         "is one budget; evaluate each budget's runs in a table of their own")

    distinct = list(dict.fromkeys(r for r in runs if r is not None))
    before = {path: evaluated_columns(path, chosen, n, sanity) for path in distinct}
    earlier = [float(c["final_eval_seconds"]) for c in before.values()
               if c is not None and c.get("final_eval_seconds") is not None]
    todo = sum(1 for columns in before.values() if columns is None)
    expected = (f"; expected {format_clock(sum(earlier) / len(earlier) * todo)} at the "
                f"{len(earlier)} evaluated runs' pace" if earlier and todo else
                "; the expected time follows the first run" if todo else "")
    notify(f"{csv_path.name}: {len(distinct)} runs in {len(runs)} rows, {todo} to evaluate "
           f"({', '.join(['clean', *chosen])}{', sanity' if sanity else ''}; n {n}){expected}")
    started = time.perf_counter()
    done: dict[Path, dict] = {}
    measured_seconds: list[float] = []
    evaluated = cached = skipped = 0
    cells, seeds = frame["cell"].astype(str).tolist(), frame["seed"].tolist()
    total = len(runs)
    try:
        for index, (run_dir, cell, seed) in enumerate(zip(runs, cells, seeds), start=1):
            where = f"[{index}/{total}] {cell} seed {seed}"
            if run_dir is None:
                skipped += 1
                notify(f"{where}: diverged, nothing to evaluate")
                continue
            if run_dir in done:
                notify(f"{where}: {run_dir.name} evaluated above (one run, several rows)")
                continue
            tic = time.perf_counter()
            columns = evaluate_finished(run_dir, chosen, n, sanity, threads=threads, out=out, progress=progress,
                                        notify=notify)
            fresh = not columns.pop("final_eval_cached")
            # no cost measured (every attack on record): the row keeps the seconds it records
            written = {k: v for k, v in columns.items() if not (k == "final_eval_seconds" and v is None)}
            _write_row(csv_path, str(frame["run_dir"].iloc[index - 1]), written)
            done[run_dir] = columns
            if fresh:
                evaluated += 1
                measured_seconds.append(time.perf_counter() - tic)
            else:
                cached += 1
            left = sum(1 for r in dict.fromkeys(runs[index:]) if r is not None and r not in done and before[r] is None)
            shown = ", ".join(f"{name} {columns[f'{name}_acc']:.2f}" for name in ["clean", *chosen])
            eta = ""
            if left and measured_seconds:
                eta = (f"; expected {format_clock(sum(measured_seconds) / len(measured_seconds) * left)} for the "
                       f"{left} run{'s' if left != 1 else ''} left")
            status = "measured" if fresh else "already evaluated"
            notify(f"{where}: {status} (n {columns['clean_n']}): {shown}; sanity {columns['sanity'][:60]}{eta}")
    except KeyboardInterrupt:
        markdown, _ = render(csv_path)
        raise EvalInterrupted(
            f"interrupted: {len(done)} run{'s' if len(done) != 1 else ''} of {csv_path.name} evaluated and written "
            f"into it ({markdown} re-rendered); finished attacks are kept in {out}: rerun the same command to go on "
            "(evaluated runs are skipped)") from None
    markdown, plot = render(csv_path)
    failed = [f"{cell} seed {seed}" for run_dir, cell, seed in zip(runs, cells, seeds)
              if run_dir is not None and sanity and not str(done[run_dir]["sanity"]).startswith("ok")]
    return {"rows": total, "runs": len(done), "evaluated": evaluated, "cached": cached, "skipped": skipped,
            "sanity_failed": failed, "seconds": round(time.perf_counter() - started, 1), "markdown": markdown,
            "plot": plot}
