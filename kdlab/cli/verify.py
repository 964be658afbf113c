"""``kdlab verify``: check a committed results folder (:mod:`kdlab.verify.checks`); exit 0 when everything holds,
1 with one line per problem, 2 for a usage error. The ``kdlab ablate`` commands of its tables are read with
``kdlab ablate``'s own parser (:func:`ablate_flags`), so a flag means there what it means here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kdlab.cli.command import friendly
from kdlab.errors import KdlabError


def ablate_flags(arguments: list[str]) -> dict[str, Any]:
    """The parameters ``kdlab ablate ARGUMENTS`` would be called with (parsed, not run)."""
    import click

    from kdlab.cli.ablate import ablate

    app = typer.Typer()
    app.command()(ablate)
    command = typer.main.get_command(app)
    try:
        return dict(command.make_context("ablate", list(arguments)).params)
    except click.ClickException as error:
        raise KdlabError(f"kdlab ablate refuses its arguments: {error.format_message()}") from None
    except click.exceptions.Exit:
        raise KdlabError("kdlab ablate --help is not a command that writes a table") from None


@friendly
def verify(
    results: Path = typer.Argument(Path("results"), help="The results folder to check (its ablations/*.csv, "
                                                         "runs.csv, eval*.csv, diffs/, report.html, README.md)."),
    report: bool = typer.Option(True, "--report/--no-report",
                                help="Check that report.html is current (regenerates the page into a temporary "
                                     "folder: seconds per table)."),
) -> None:
    """Check a committed results folder: every row names its commit (a dirty row's patch in diffs/), every run
    has its runs.csv row, each table's declared study or regenerate command gives exactly its cells, its Markdown
    and the report are current, README.md indexes every file. Exit 1 with one line per problem (docs/commands.md)."""
    from kdlab.verify.checks import verify_results

    found = verify_results(results, parse=ablate_flags, report=report)
    for note in found.notes:
        typer.echo(note)
    for problem in found.problems:
        typer.echo(problem.line())
    if found.problems:
        typer.echo(f"{len(found.problems)} problem{'s' if len(found.problems) != 1 else ''}", err=True)
        raise typer.Exit(1)
    typer.echo("verified: every check holds")
