"""``kdlab verify RESULTS``: what a reviewer checks before trusting a committed results folder, one small function
per check, each returning its problems (one line each, naming the file and row and what is wrong).

The tables checked: ``ablations/*.csv``, ``runs.csv`` and ``eval*.csv`` of the folder. Tables under ``archive/``
(pre-protocol tables kept for the record) are listed as "archived, not verified" and never fail the check.

- :func:`check_provenance` every row names its commit; a ``-dirty`` row's patch is in ``diffs/`` and hashes to its
  ``git_diff_sha256``;
- :func:`check_runs_recorded` every ablation row's run has a row in ``runs.csv``;
- :func:`check_study` a table that records a declared study matches ``recipes/studies/<study>.yaml`` (its digest,
  its (cell, seed) set, and the plan fingerprint its rows record, without which ``kdlab ablate`` retrains them);
- :func:`check_command` a table without one: its regenerate command (:mod:`kdlab.report.commands`) plans exactly
  its (cell, seed) set (:mod:`kdlab.verify.commands`; nothing is trained);
- :func:`check_markdown` each table's committed ``.md`` (what a reader reads) is what ``kdlab table`` writes from
  its CSV now;
- :func:`check_plots` each table's committed PNGs were drawn from its CSV as committed (the ``Source`` they record);
- :func:`check_report` the committed ``report.html`` is what ``kdlab report`` writes from the tables now;
- :func:`check_index` ``README.md`` names every file of the folder.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab.errors import KdlabError
from kdlab.report.commands import regenerate_commands
from kdlab.report.tables import TEACHER_CELL
from kdlab.results import DIFFS_FOLDER
from kdlab.verify.commands import AblateParser, planned_cells

ARCHIVE = "archive"
SHOWN_CELLS = 6  # cells named in a mismatch line before "and N more"


@dataclass(frozen=True)
class Problem:
    """One thing that does not hold: the check that found it, where (a file, a row) and what."""

    check: str
    where: str
    what: str

    def line(self) -> str:
        return f"{self.check}: {self.where}: {self.what}"


@dataclass(frozen=True)
class Table:
    """A committed table: its path, kind (``ablation``, ``runs``, ``eval``) and rows as text (empty cells ``""``)."""

    path: Path
    kind: str
    rows: pd.DataFrame

    def column(self, name: str) -> pd.Series:
        return self.rows[name] if name in self.rows.columns else pd.Series("", index=self.rows.index)


@dataclass
class Verification:
    """What ``kdlab verify`` found: its problems (exit 1 when any) and notes (tables checked, archived ones)."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the tables
def _text_rows(path: Path) -> pd.DataFrame:
    """Every cell as text: a commit such as ``1234e567`` must not be read as a number."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def committed_tables(results: Path) -> tuple[list[Table], list[Path]]:
    """The folder's tables (ablations/*.csv, runs.csv, eval*.csv) and the archived CSVs (archive/**), not checked."""
    tables = [Table(path, "ablation", _text_rows(path)) for path in sorted((results / "ablations").glob("*.csv"))]
    if (results / "runs.csv").is_file():
        tables.append(Table(results / "runs.csv", "runs", _text_rows(results / "runs.csv")))
    tables += [Table(path, "eval", _text_rows(path)) for path in sorted(results.glob("eval*.csv"))]
    return tables, sorted((results / ARCHIVE).rglob("*.csv"))


def _shown(path: Path, results: Path) -> str:
    try:
        return path.absolute().relative_to(results.absolute().parent).as_posix()
    except ValueError:
        return path.as_posix()


def _run_key(run_dir: str) -> str:
    return Path(run_dir.strip()).name if run_dir.strip() else ""


def runs_index(tables: list[Table]) -> dict[str, dict[str, str]]:
    """The runs table's rows by run key (the run directory's name), the last row of a key winning."""
    runs = next((table for table in tables if table.kind == "runs"), None)
    if runs is None:
        return {}
    return {_run_key(row.get("run_dir", "")): row for row in runs.rows.to_dict("records") if row.get("run_dir")}


def _where(table: Table, number: int, row: dict[str, str], results: Path) -> str:
    """``results/runs.csv row 3 (run <key>)``: data rows from 1, with what identifies the row."""
    if table.kind == "ablation":
        label = f"cell {row.get('cell', '')} seed {row.get('seed', '')}"
    elif table.kind == "runs":
        label = f"run {_run_key(row.get('run_dir', '')) or row.get('name', '')}"
    else:
        label = f"{row.get('model', '')} {row.get('attack', '')}".strip()
    return f"{_shown(table.path, results)} row {number} ({label})"


def _diverged(row: dict[str, str]) -> bool:
    """A run whose loss diverged (a tuning value, a declared study's seed): recorded as a flagged row with no run and
    no number (no runs.csv row)."""
    return row.get("flag", "") == "diverged" and not row.get("run_dir", "").strip()


def _cells(table: Table, teacher: bool = False) -> set[tuple[str, int]]:
    """The table's (cell, seed) set; the shared teacher's row only with ``teacher``."""
    return {(str(cell), int(float(seed))) for cell, seed in zip(table.column("cell"), table.column("seed"))
            if (teacher or str(cell) != TEACHER_CELL) and str(seed).strip()}


def _listed(pairs: set) -> str:
    ordered = [f"{cell} s{seed}" for cell, seed in sorted(pairs)]
    more = len(ordered) - SHOWN_CELLS
    return ", ".join(ordered[:SHOWN_CELLS]) + (f" and {more} more" if more > 0 else "")


def _difference(made: set, have: set) -> str:
    parts = [f"{len(made)} (cell, seed) pairs against the table's {len(have)}"]
    if made - have:
        parts.append(f"not in the table: {_listed(made - have)}")
    if have - made:
        parts.append(f"in the table only: {_listed(have - made)}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- a. provenance
def check_provenance(table: Table, runs: dict[str, dict[str, str]], results: Path) -> list[Problem]:
    """Every row names its commit (``git_commit``); a ``-dirty`` row names its patch (``git_diff_sha256``), which
    is ``<results>/diffs/<git_diff_sha256>.patch`` and hashes to it (:func:`kdlab.results.diff_digest`: the
    first 16 hex digits of the file's SHA-256).

    An ablation row written before ablation rows carried ``git_commit`` names its commit through its run's row in
    ``runs.csv`` (the same run directory). A diverged tuning row (no run, no number) is a result too (the tuning's
    next values depend on it), so it names its own commit."""
    problems = []
    for number, row in enumerate(table.rows.to_dict("records"), start=1):
        commit, digest = row.get("git_commit", "").strip(), row.get("git_diff_sha256", "").strip()
        if table.kind == "ablation" and not commit and not _diverged(row):
            run = runs.get(_run_key(row.get("run_dir", "")), {})
            commit, digest = run.get("git_commit", "").strip(), run.get("git_diff_sha256", "").strip()
        where = _where(table, number, row, results)
        if not commit or commit == "unknown":
            through = " (nor does its run's row in runs.csv)" if table.kind == "ablation" and not _diverged(row) else ""
            problems.append(Problem("provenance", where, f"names no commit (git_commit {commit or 'empty'}){through}"))
            continue
        if not commit.endswith("-dirty"):
            continue
        patch = results / DIFFS_FOLDER / f"{digest}.patch"
        if not digest:
            problems.append(Problem("provenance", where, f"{commit} names no git_diff_sha256: the uncommitted "
                                                         "code it ran cannot be recovered"))
        elif not patch.is_file():
            problems.append(Problem("provenance", where, f"{commit}: its patch {_shown(patch, results)} is missing"))
        elif (actual := hashlib.sha256(patch.read_bytes()).hexdigest()[:16]) != digest:
            problems.append(Problem("provenance", where, f"{_shown(patch, results)} hashes to {actual}, not its "
                                                         f"git_diff_sha256 {digest}"))
    return problems


# --------------------------------------------------------------------------- b. runs recorded
def check_runs_recorded(table: Table, runs: dict[str, dict[str, str]], results: Path) -> list[Problem]:
    """Every ablation row's run (its ``run_dir``, matched by the run directory's name) has a row in ``runs.csv``.
    A teacher given as a checkpoint file (``.pt``: not a kdlab run) and a diverged tuning row are exempt."""
    if table.kind != "ablation":
        return []
    problems = []
    for number, row in enumerate(table.rows.to_dict("records"), start=1):
        run_dir = row.get("run_dir", "").strip()
        if _diverged(row) or run_dir.endswith((".pt", ".pth")):
            continue
        where = _where(table, number, row, results)
        if not run_dir:
            problems.append(Problem("runs", where, "names no run (run_dir empty)"))
        elif _run_key(run_dir) not in runs:
            problems.append(Problem("runs", where, f"its run {_run_key(run_dir)} has no row in "
                                                   f"{_shown(results / 'runs.csv', results)}"))
    return problems


# --------------------------------------------------------------------------- c. declared study
StudyLoader = Callable[[Path], Any]


def load_declared_study(path: Path) -> Any:
    """:func:`kdlab.ablation.study.load_study` (a ``Study`` with ``name``, ``digest``, ``cells()`` and
    ``fingerprint()``)."""
    try:
        from kdlab.ablation.study import load_study
    except ImportError:
        raise KdlabError("this kdlab cannot read declared studies (no kdlab.ablation.study)") from None
    return load_study(path)


def study_name(table: Table) -> str:
    names = sorted({name.strip() for name in table.column("study") if name.strip()})
    return ",".join(names)


def check_study(table: Table, results: Path, load_study: StudyLoader = load_declared_study,
                notes: list[str] | None = None) -> list[Problem]:
    """A table that records a declared study (column ``study``): ``recipes/studies/<study>.yaml`` exists beside the
    results folder, its digest equals the table's ``study_sha256`` and every (cell, seed) of the table is one the
    study declares (``Study.cells()``, the shared teacher's row included where the preset records one). A table
    holding only part of them is a study in progress (long CPU studies span several sessions, each continuing from
    the committed table, docs/ablations.md): not a problem, but said in ``notes`` with what is left. The study's
    tuning grid (``<study>-val.csv``) grows by the declared tuning rounds, so its cells are not declared up front:
    its digest is checked, its cell set is not."""
    name = study_name(table)
    if table.kind != "ablation" or not name:
        return []
    where = _shown(table.path, results)
    if "," in name:
        return [Problem("study", where, f"its rows record several studies ({name}): one table, one study")]
    path = results.absolute().parent / "recipes" / "studies" / f"{name}.yaml"
    if not path.is_file():
        return [Problem("study", where, f"records study {name} but {_shown(path, results)} is missing")]
    try:
        study = load_study(path)
    except KdlabError as error:
        return [Problem("study", where, f"study {name}: {error}")]
    problems = []
    recorded = sorted({digest.strip() for digest in table.column("study_sha256")})
    if recorded != [str(study.digest)]:
        problems.append(Problem("study", where, f"records study_sha256 {', '.join(recorded) or 'none'} but "
                                                f"{_shown(path, results)} has {study.digest} (the study changed "
                                                "after the table was written: declare a new study)"))
    problems += _plan_problems(table, study, where)
    if table.path.stem.endswith("-val"):
        return problems
    declared = {(str(cell), int(seed)) for cell, seed in study.cells()}
    have = _cells(table, teacher=True)
    if have - declared:
        problems.append(Problem("study", where, f"study {name} declares " + _difference(declared, have)))
    elif declared - have and notes is not None:
        notes.append(f"in progress: {where} holds {len(have)} of the {len(declared)} runs study {name} declares "
                     f"(left: {_listed(declared - have)})")
    return problems


def _plan_problems(table: Table, study: Any, where: str) -> list[Problem]:
    """The rows' ``plan`` fingerprints against the one ``kdlab ablate`` computes for the study here
    (``study.fingerprint``): a row under another one is not recognised, so the study would train it again (a
    recipe or a default changed since the rows were written). A tuned study's final table is not checked (its
    cells come from the tuning grid's choice), nor a table without the column."""
    if "plan" not in table.rows.columns:
        return []
    expected = study.fingerprint("-val" if table.path.stem.endswith("-val") else "")
    recorded = sorted({plan.strip() for plan in table.column("plan")} - {expected, ""})
    if expected is None or not recorded:
        return []
    return [Problem("study", where, f"records plan {', '.join(recorded)} but study {study.name} plans "
                                    f"{expected} here: kdlab ablate would not recognise those rows and would "
                                    "train them again (a recipe or a default changed since they were written)")]


# --------------------------------------------------------------------------- d. regenerate command
def check_command(table: Table, results: Path, parse: AblateParser) -> list[Problem]:
    """A table without a declared study: the commands that regenerate it (those ``kdlab report`` prints: recorded
    in its rows, else the README's, else derived; :func:`kdlab.report.commands.regenerate_commands`) are planned
    without training, and together must make exactly the table's (cell, seed) set. A table with no command
    ("not recorded"), a command that is refused or that writes another table is a problem."""
    if table.kind != "ablation" or study_name(table):
        return []
    where = _shown(table.path, results)
    frame = pd.read_csv(table.path)
    made: set[tuple[str, int]] = set()
    problems = []
    for found in regenerate_commands(frame, table.path, results):
        if not found.commands:
            problems.append(Problem("command", where, f"no command regenerates it: {found.note}"))
        for command, _rows in found.commands:
            try:
                made |= planned_cells(command, table.path, results, parse)
            except KdlabError as error:
                problems.append(Problem("command", where, f"{found.source} command '{command}': {error}"))
    if not problems and made != _cells(table):
        problems.append(Problem("command", where, "its regenerate commands make " + _difference(made, _cells(table))))
    return problems


# --------------------------------------------------------------------------- e. the tables' Markdown, the report
def _first_difference(old: str, new: str) -> int:
    """The first line (1-based) where two texts differ."""
    return next((i for i, (a, b) in enumerate(zip(old.splitlines(), new.splitlines()), start=1) if a != b),
                min(len(old.splitlines()), len(new.splitlines())) + 1)


def check_markdown(table: Table, results: Path) -> list[Problem]:
    """An ablation table's committed ``.md`` is what ``kdlab table`` writes from its CSV now (its declaration,
    means, paired and Holm columns, marks and notes: :func:`kdlab.report.tables.render`, into a temporary folder,
    the Markdown alone). A CSV changed after its Markdown, or code that now renders it otherwise, fails."""
    from kdlab.report.tables import render

    if table.kind != "ablation":
        return []
    committed = table.path.with_suffix(".md")
    where = _shown(committed, results)
    command = f"kdlab table {_shown(table.path, results)}"
    if not committed.is_file():
        return [Problem("markdown", where, f"missing: run {command} and commit it")]
    with tempfile.TemporaryDirectory() as scratch:
        fresh = render(table.path, out_dir=Path(scratch), plot=False)[0].read_text()
    old = committed.read_text()
    if fresh == old:
        return []
    return [Problem("markdown", where, f"stale: {command} now writes another table (first difference on line "
                                       f"{_first_difference(old, fresh)}); rerun it and commit the .md and .png")]


def check_plots(table: Table, results: Path) -> list[Problem]:
    """An ablation table's committed PNGs (:func:`kdlab.report.tables.plot_inputs`: its bars, a method comparison's
    cost plot) record, as their ``Source``, the sha256 of what they draw (:func:`kdlab.report.tables.plot_source`),
    computed again here from the committed CSV: a plot that no longer shows what its CSV says fails. The picture
    itself is not compared (its bytes change with the matplotlib release)."""
    from kdlab.report.plots import png_source
    from kdlab.report.tables import plot_file, plot_inputs, plot_source
    from kdlab.results import read_table

    if table.kind != "ablation":
        return []
    command = f"kdlab table {_shown(table.path, results)}"
    problems = []
    for suffix, inputs in plot_inputs(read_table(table.path), table.path).items():
        png = plot_file(table.path.with_suffix(""), suffix)
        where = _shown(png, results)
        if not png.is_file():
            problems.append(Problem("plot", where, f"missing: run {command} and commit it"))
            continue
        recorded, expected = png_source(png), plot_source(table.path, inputs)
        if recorded != expected:
            drawn = "records no source (drawn before plots recorded one)" if recorded is None else \
                f"shows other numbers than its CSV now gives ({recorded.split()[-1][:12]}, now {expected.split()[-1][:12]})"
            problems.append(Problem("plot", where, f"stale: it {drawn}; rerun {command} and commit the .png"))
    return problems


def check_report(results: Path) -> list[Problem]:
    """``report.html`` is current: ``kdlab report`` of the folder, written into a temporary folder now, gives the
    same bytes (the page is a function of the committed files: :mod:`kdlab.report.html`)."""
    from kdlab.report.html import build_report

    ablations = sorted((results / "ablations").glob("*.csv"))
    committed = results / "report.html"
    where = _shown(committed, results)
    if not ablations:
        return []
    if not committed.is_file():
        return [Problem("report", where, f"missing: run kdlab report {_shown(results, results)} and commit it")]
    with tempfile.TemporaryDirectory() as scratch:
        fresh = build_report(results, Path(scratch) / "report.html").read_text()
    old = committed.read_text()
    if fresh == old:
        return []
    return [Problem("report", where, f"stale: kdlab report {_shown(results, results)} now writes another page "
                                     f"(first difference on line {_first_difference(old, fresh)}); rerun it and "
                                     "commit the page")]


# --------------------------------------------------------------------------- f. index
def _folder_files(results: Path) -> list[Path]:
    """The folder's files that git tracks or would (not ignored: no run directory, checkpoint or lock); outside
    a git checkout every file but locks and temporary files."""
    done = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "."],
                          cwd=results, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return sorted({results / name for name in done.stdout.split("\0") if name})
    return sorted(path for path in results.rglob("*") if path.is_file()
                  and not path.name.endswith((".lock", ".tmp")) and "runs" not in path.relative_to(results).parts)


def check_index(results: Path) -> list[Problem]:
    """``README.md`` of the folder names every file in it: by its path, its name or its table's name (a table's
    ``.csv``, ``.md`` and ``.png`` are one entry). Files under ``diffs/`` are indexed by that folder's README."""
    readme = results / "README.md"
    files = [path for path in _folder_files(results) if path.resolve() != readme.resolve()
             and path.relative_to(results).parts[0] != DIFFS_FOLDER]
    if not files:
        return []
    if not readme.is_file():
        return [Problem("index", _shown(readme, results), "missing: it indexes every committed file of the folder")]
    text = readme.read_text()
    problems = []
    for path in files:
        names = {path.relative_to(results).as_posix(), path.name, path.stem, re.sub(r"-cost$", "", path.stem)}
        if not any(name in text for name in names):
            problems.append(Problem("index", _shown(readme, results), f"does not name {_shown(path, results)}"))
    return problems


# --------------------------------------------------------------------------- all of them
def verify_results(results: Path, parse: AblateParser, load_study: StudyLoader = load_declared_study,
                   report: bool = True) -> Verification:
    """Every check on the results folder ``results``; ``parse`` reads a ``kdlab ablate`` command's flags (the
    CLI's parser), ``load_study`` reads a declared study. ``report=False`` leaves out :func:`check_report`."""
    results = Path(results)
    if not results.is_dir():
        raise KdlabError(f"results folder '{results}' not found: pass the folder kdlab writes its tables to, "
                         "e.g. kdlab verify results")
    tables, archived = committed_tables(results)
    if not tables:
        raise KdlabError(f"{results} holds no table (ablations/*.csv, runs.csv, eval*.csv): pass a results folder")
    found = Verification()
    runs = runs_index(tables)
    for table in tables:
        found.problems += check_provenance(table, runs, results)
        found.problems += check_runs_recorded(table, runs, results)
        found.problems += check_study(table, results, load_study, found.notes)
        found.problems += check_command(table, results, parse)
        found.problems += check_markdown(table, results)
        found.problems += check_plots(table, results)
    if report:
        found.problems += check_report(results)
    found.problems += check_index(results)
    found.notes.append(f"checked {len(tables)} tables ({sum(len(t.rows) for t in tables)} rows) in "
                       f"{_shown(results, results)}")
    found.notes += [f"archived, not verified: {_shown(path, results)}" for path in archived]
    return found
