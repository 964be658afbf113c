"""``kdlab report``: ablation tables as one self-contained HTML page (inline CSS, plots as base64 PNG, no script).

For each ablation CSV (one given, or every ``ablations/*.csv`` of a results folder) the page shows what
``kdlab table`` shows, made by the same code: the Markdown table of :func:`kdlab.report.tables.render` (mean ± std
over seeds and the paired 95 % confidence intervals of :mod:`kdlab.report.stats` against the default baseline) and its
plot, then the commands that regenerate it (the ``kdlab ablate`` commands its rows record; for older tables,
labelled, the README's or one derived from the rows, or "not recorded": :mod:`kdlab.report.commands`), the recipe
file under ``recipes/`` and the provenance of every run (commit, torch, seed, finish time) from the ``runs.csv``
row with its ``run_dir``. The page opens from disk with no server and fetches nothing.

The page is a function of committed files alone (the tables, ``runs.csv``, ``recipes/``, the README) and names
paths relative to the checkout: run directories, which git does not hold, are not read, so the same commit gives
the same page on any machine and ``kdlab verify`` can check that the committed page is current.
"""

from __future__ import annotations

import base64
import html
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab.errors import KdlabError
from kdlab.report.commands import Regenerate, recipe_file, regenerate_commands
from kdlab.report.tables import csv_kind, render
from kdlab.results import read_table

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
h1{font-size:1.7em}h2{margin-top:2.2em;border-bottom:2px solid #ddd;padding-bottom:.2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
img{max-width:min(100%,860px);border:1px solid #eee}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
pre{background:#f6f8fa;padding:.7em;overflow-x:auto;border-radius:4px}
.wide{overflow-x:auto}.prov td{font-size:.85em}
.prov td:nth-child(4),.prov td:nth-child(5){word-break:break-all}
details{margin:.3em 0}summary{cursor:pointer}.note{color:#555;font-size:.9em}nav a{margin-right:1em}
"""


# --------------------------------------------------------------------------- inputs
def report_inputs(path: Path) -> tuple[list[Path], Path]:
    """The ablation CSVs a PATH names and the results folder around them (for runs.csv and recipes/)."""
    path = Path(path)
    if path.is_dir():
        folder = path / "ablations" if (path / "ablations").is_dir() else path
        tables = [csv for csv in sorted(folder.glob("*.csv")) if _is_ablation(csv)]
        if not tables:
            raise KdlabError(f"{path} holds no ablation table (ablations/*.csv): pass a results folder that "
                             "kdlab ablate wrote to, or one ablation CSV")
        return tables, path
    if not path.is_file():
        raise KdlabError(f"'{path}' not found: pass an ablation CSV (results/ablations/<table>.csv) or a "
                         "results folder (results/)")
    if csv_kind(path) != "ablation":
        raise KdlabError(f"{path} is not an ablation table: kdlab report takes results/ablations/<table>.csv "
                         "or a results folder")
    return [path], path.parent.parent if path.parent.name == "ablations" else path.parent


def _is_ablation(path: Path) -> bool:
    try:
        return csv_kind(path) == "ablation"
    except KdlabError:
        return False


# --------------------------------------------------------------------------- provenance
def provenance_rows(frame: pd.DataFrame, runs: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per row: cell, seed, run directory and, from its runs.csv row (committed; the run directory is not), commit
    and torch version."""
    rows = []
    for _, row in frame.iterrows():
        run_dir = "" if pd.isna(row.get("run_dir")) else str(row.get("run_dir"))
        entry = {"cell": row["cell"], "seed": row["seed"], "run_dir": run_dir, "source": "not recorded"}
        if runs is not None and run_dir and "run_dir" in runs.columns and (runs["run_dir"] == run_dir).any():
            matches = runs[runs["run_dir"] == run_dir]
            device = row.get("device_name")
            if "device_name" in matches.columns and not pd.isna(device) and (matches["device_name"] == device).any():
                matches = matches[matches["device_name"] == device]  # a run retrained on another processor
            match = matches.iloc[-1]
            torch = match.get("torch")
            entry.update(commit=match.get("git_commit"), seed=match.get("seed", row["seed"]),
                         versions="" if pd.isna(torch) else f"torch {torch}", finished=match.get("finished_at"),
                         source="runs.csv")
        rows.append(entry)
    return rows


# --------------------------------------------------------------------------- HTML
def _e(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and pd.isna(value)) else html.escape(str(value))


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def markdown_html(markdown: str) -> str:
    """The Markdown that :func:`kdlab.report.tables.render` writes (pipe tables, paragraphs) as HTML."""
    out, table = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-: ") for cell in cells):
                table.append(cells)
            continue
        if table:
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in table[0])
            body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in table[1:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            table = []
        if line.startswith("#") or not line.strip():
            continue  # the page gives the table's own heading
        out.append(f'<p class="note">{_inline(line)}</p>')
    return "\n".join(out)


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _shown(path: Path, results: Path) -> str:
    """A path as the checkout holding ``results`` names it (``results/ablations/t.csv``), however it was given."""
    try:
        return Path(path).absolute().relative_to(results.absolute().parent).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _section(csv_path: Path, results: Path, runs: pd.DataFrame | None) -> str:
    frame = read_table(csv_path)
    with tempfile.TemporaryDirectory() as scratch:  # the page embeds them: nothing is written into results
        markdown, plot = render(csv_path, out_dir=Path(scratch))
        table_html, image = markdown_html(markdown.read_text()), _png(plot)
    ablation = str(frame["ablation"].iloc[0])
    recipe = recipe_file(ablation, results)
    recipe_shown = f"recipes/{recipe.name}" if recipe is not None else ""
    parts = [f'<h2 id="{_e(csv_path.stem)}">{_e(csv_path.stem)}</h2>', table_html,
             f'<img alt="{_e(csv_path.stem)} plot" src="{image}">', "<h3>Commands that regenerate it</h3>",
             *[_commands_html(found, len(frame)) for found in regenerate_commands(frame, csv_path, results)],
             "<pre>" + _e(f"kdlab table {_shown(csv_path, results)}\nkdlab report {_shown(csv_path, results)}")
             + "</pre>", "<h3>Recipes</h3>"]
    if recipe is not None:  # each run directory's recipe.yaml is not committed: the recipe file, as it is now
        parts.append(f"<p class=\"note\">The recipe file named, with each cell's <code>setting</code> applied as "
                     f"<code>--set</code> (each run directory's <code>recipe.yaml</code> holds the resolved recipe):"
                     f"</p><details><summary><code>{_e(recipe_shown)}</code></summary><pre>{_e(recipe.read_text())}"
                     "</pre></details>")
    else:
        parts.append(f'<p class="note">No recipe named {_e(ablation)} found under recipes/.</p>')
    parts.append("<h3>Provenance of every run</h3>")
    header = ["cell", "seed", "setting", "run directory", "commit", "versions", "finished", "from"]
    settings = dict(zip(frame["cell"].astype(str), frame.get("setting", pd.Series("", index=frame.index))))
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(value)}</td>" for value in (
            entry["cell"], entry["seed"], settings.get(str(entry["cell"])), entry["run_dir"], entry.get("commit"),
            entry.get("versions"), entry.get("finished"), entry["source"])) + "</tr>"
        for entry in provenance_rows(frame, runs))
    parts.append('<div class="wide"><table class="prov"><thead><tr>' + "".join(f"<th>{h}</th>" for h in header)
                 + f"</tr></thead><tbody>{body}</tbody></table></div>")
    return "\n".join(parts)


def _commands_html(found: Regenerate, total: int) -> str:
    """One kind of regenerating command (recorded, the README's, derived, not recorded): its label and commands,
    each with the number of rows it wrote when the table's rows came from several."""
    label = {"recorded": "Recorded", "README.md": "From README.md", "derived": "Derived",
             "not recorded": "Not recorded"}[found.source]
    lines = []
    for command, rows in found.commands:
        if len(found.commands) > 1 or rows != total:
            lines.append(f"# {rows} of the {total} rows")
        lines.append(command)
    text = f'<p class="note"><b>{label}</b>: {_e(found.note)}.</p>'
    return text + ("<pre>" + _e("\n".join(lines)) + "</pre>" if lines else "")


def build_report(path: Path, out: Path | None = None) -> Path:
    """Write the HTML page for an ablation CSV or a results folder; return its path."""
    tables, results = report_inputs(Path(path))
    if out is None:
        out = tables[0].with_suffix(".html") if Path(path).is_file() else Path(path) / "report.html"
    runs_path = results / "runs.csv"
    runs = read_table(runs_path) if runs_path.is_file() else None
    sections = [_section(csv_path, results, runs) for csv_path in tables]
    path = _shown(Path(path), results)  # the same page whichever way the folder was named
    nav = "".join(f'<a href="#{_e(t.stem)}">{_e(t.stem)}</a>' for t in tables)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kdlab report: {_e(path)}"
            f"</title>\n<style>{CSS}</style></head><body>\n<h1>kdlab report: {_e(path)}</h1>\n<nav>{nav}</nav>\n"
            "<p class=\"note\">Mean ± sample standard deviation over seeds; paired columns: the mean over seeds of "
            "(cell − baseline) on the same seed with its two-sided 95 % Student-t interval. Regenerate this page "
            f"with <code>kdlab report {_e(path)}</code>.</p>\n" + "\n".join(sections) + "\n</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
