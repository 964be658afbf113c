"""``kdlab table`` and ``kdlab report``: present results kdlab already wrote (an ablation's Markdown table and
plot, the evaluation rows, the runs table; the HTML page), from the CSVs alone. The ``--paper`` help lists the
entries of :data:`kdlab.report.paper.PAPER_NUMBERS`."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlab.cli.command import friendly
from kdlab.errors import KdlabError
from kdlab.report.paper import PAPER_NUMBERS


@friendly
def table(
    csv: Path = typer.Argument(..., help="A CSV kdlab wrote: an ablation table (results/ablations/*.csv), "
                                         "evaluation rows (results/eval.csv) or the runs table "
                                         "(results/runs.csv)."),
    paper: str | None = typer.Option(
        None, "--paper",
        help=f"Reference numbers to place beside kdlab's (kdlab.report.paper): {', '.join(PAPER_NUMBERS)}."),
    baseline: list[str] = typer.Option(
        [], "--baseline", help="Cell to compare with, seed by seed (repeatable: one column each; default "
                               "student-ce or kind=none when present), e.g. kind=l2."),
    with_eval: Path | None = typer.Option(
        None, "--with-eval", help="Ablation tables: first add the AutoAttack accuracy of each run that kdlab eval "
                                  "RUN_DIR --attack autoattack measured (e.g. results/eval.csv)."),
) -> None:
    """Regenerate an ablation's Markdown table (mean ± std over seeds) and PNG plot from its CSV alone; show
    the latest evaluation rows or the runs table as Markdown."""
    from kdlab.report.tables import csv_kind, merge_eval_column, render, rows_markdown
    from kdlab.runs.console import console

    kind = csv_kind(csv)
    if kind != "ablation":
        if paper is not None or baseline or with_eval is not None:
            raise KdlabError(f"--paper, --baseline and --with-eval apply to ablation tables; {csv} is a {kind} "
                             "table: drop them")
        console.print(rows_markdown(csv, kind), highlight=False, soft_wrap=True)
        return
    if paper is not None and paper not in PAPER_NUMBERS:
        raise KdlabError(f"--paper '{paper}' unknown: choose one of {', '.join(PAPER_NUMBERS)}")
    if with_eval is not None:
        merge_eval_column(csv, with_eval)
    markdown, plot = render(csv, paper=paper, baseline=baseline)
    console.print(markdown.read_text())
    console.print(f"wrote {markdown} and {plot}")


@friendly
def report(
    path: Path = typer.Argument(..., help="An ablation CSV (results/ablations/<table>.csv) or a results folder "
                                          "(results/: every ablations/*.csv)."),
    out: Path | None = typer.Option(None, "--out", help="The HTML file (default: the CSV's name with .html, or "
                                                         "<folder>/report.html)."),
) -> None:
    """One self-contained HTML page: tables with mean ± std and paired 95 % CIs, plots, the commands that
    regenerate them, recipes and every run's provenance; opens from disk with no server or network."""
    from kdlab.report.html import build_report

    typer.echo(f"wrote {build_report(path, out)}")
