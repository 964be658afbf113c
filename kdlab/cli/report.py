"""``kdlab table`` and ``kdlab report``: present results kdlab already wrote (an ablation's Markdown table and
plot, the evaluation rows, the runs table; the HTML page), from the CSVs alone. The ``--paper`` help lists the
entries of :data:`kdlab.report.paper.PAPER_NUMBERS`."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlab.cli.command import friendly
from kdlab.config.names import CORRECTIONS
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
                                  "RUN_DIR --attack autoattack measured (e.g. results/eval.csv). The final "
                                  "evaluation of a whole table is kdlab eval TABLE.csv (docs/evaluation.md)."),
    metric: list[str] = typer.Option(
        [], "--metric", help="Metric the paired columns compare (repeatable; the first decides), e.g. pgd_acc, "
                             "autoattack_acc.",
        show_default="a study's declared metric, else the headline metric; plus autoattack_acc where every row has it"),
    correction: str | None = typer.Option(
        None, "--correction", help=f"One of {', '.join(CORRECTIONS)}: holm adds beside each paired interval its "
                                     "t-test p-value and the Holm-adjusted one over the table's comparisons; none "
                                     "shows the uncorrected intervals alone (default: a study's declared one, else holm)."),
) -> None:
    """Regenerate an ablation's Markdown table (mean ± std over seeds) and PNG plot from its CSV alone; show
    the latest evaluation rows or the runs table as Markdown."""
    from kdlab.report import tables
    from kdlab.results import read_table
    from kdlab.runs.console import console, print_markdown

    kind = tables.csv_kind(csv)
    if kind != "ablation":
        if paper is not None or baseline or with_eval is not None or correction is not None or metric:
            raise KdlabError(f"--paper, --baseline, --with-eval, --metric and --correction apply to ablation tables; "
                             f"{csv} is "
                             f"a {kind} table: drop them")
        print_markdown(console, tables.rows_markdown(csv, kind))
        return
    if correction is not None:
        tables.check_correction(correction)  # before --with-eval rewrites the CSV
    if paper is not None:
        tables.check_paper_fits(read_table(csv), paper)
    if with_eval is not None:
        tables.merge_eval_column(csv, with_eval)
    markdown, plot = tables.render(csv, paper=paper, baseline=baseline, correction=correction, metrics=metric or None)
    print_markdown(console, markdown.read_text())
    console.print(f"wrote {markdown} and {plot}", highlight=False, soft_wrap=True)


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
