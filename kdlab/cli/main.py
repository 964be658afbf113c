"""The kdlab app: builds the Typer ``app`` (with ``--version`` and ``-h``) and registers every command of the
command-group modules of :mod:`kdlab.cli`, in the order ``kdlab --help`` lists them. ``kdlab.cli.main:app`` is
the console script (pyproject.toml) and what ``python -m kdlab`` runs; the package's ``__init__`` imports nothing,
so the command modules can import their siblings (``kdlab.cli.ablation_flags``) without a cycle.

A new command: its function (wrapped by :func:`kdlab.cli.command.friendly`) in the module of its group, and one
registration line here."""

from __future__ import annotations

import typer

from kdlab.cli.ablate import ablate
from kdlab.cli.check import check, inspect
from kdlab.cli.command import CONTEXT, KdlabCommand, KdlabGroup
from kdlab.cli.evaluate import eval_
from kdlab.cli.pack import pack, unpack
from kdlab.cli.recipes import recipes, recipes_copy, schema
from kdlab.cli.report import report, table
from kdlab.cli.run import distill, train
from kdlab.cli.verify import verify

app = typer.Typer(
    cls=KdlabGroup,
    help="kdlab: knowledge-distillation experiments from YAML recipes — MixACM robustness transfer, "
    "structural KD for detection, and trustworthy robustness evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings=CONTEXT,
)


def version() -> str:
    """The installed package's version; in a checkout that is not installed, ``kdlab.__version__``."""
    from importlib import metadata

    try:
        return metadata.version("kdlab")
    except metadata.PackageNotFoundError:
        from kdlab import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kdlab {version()}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                      help="Print kdlab's version and exit."),
) -> None:
    pass


app.command(cls=KdlabCommand, context_settings=CONTEXT)(distill)
app.command(cls=KdlabCommand, context_settings=CONTEXT)(train)
app.command(cls=KdlabCommand, context_settings=CONTEXT)(inspect)
app.command("eval", cls=KdlabCommand, context_settings=CONTEXT)(eval_)
app.command(cls=KdlabCommand, context_settings=CONTEXT)(ablate)
app.command(cls=KdlabCommand, context_settings=CONTEXT)(check)
app.command(cls=KdlabCommand, context_settings=CONTEXT)(pack)
app.command(cls=KdlabCommand, context_settings=CONTEXT)(unpack)
app.command(cls=KdlabCommand, context_settings=CONTEXT)(table)
app.command(cls=KdlabCommand, context_settings=CONTEXT)(report)
app.command(cls=KdlabCommand, context_settings=CONTEXT)(verify)

recipes_app = typer.Typer(help="The recipes shipped with kdlab: list them, or copy one out to edit it.",
                          cls=KdlabGroup, no_args_is_help=False, add_completion=False, pretty_exceptions_enable=False,
                          context_settings=CONTEXT)
recipes_app.callback(invoke_without_command=True)(recipes)
recipes_app.command("copy", cls=KdlabCommand, context_settings=CONTEXT)(recipes_copy)
app.add_typer(recipes_app, name="recipes")

app.command(cls=KdlabCommand, context_settings=CONTEXT)(schema)
