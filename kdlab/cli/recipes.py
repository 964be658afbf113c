"""``kdlab recipes`` (list the shipped recipes), ``kdlab recipes copy`` (write an editable copy of one) and
``kdlab schema`` (every recipe key): what a recipe can be."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlab.cli.command import friendly


@friendly
def recipes(ctx: typer.Context) -> None:
    """List the shipped recipes (run one by name: kdlab distill quickstart); `kdlab recipes copy` edits one."""
    if ctx.invoked_subcommand is not None:
        return
    from kdlab.config.shipped import shipped_dir, shipped_recipes

    found = shipped_recipes()
    width = max(len(r.name) for r in found)
    typer.echo(f"shipped recipes in {shipped_dir()} (run one by name: kdlab distill quickstart):")
    for r in found:
        typer.echo(f"  {r.name:<{width}}  {r.kind:<7}  {r.summary}")


@friendly
def recipes_copy(
    name: str = typer.Argument(..., help="A shipped recipe's name (kdlab recipes lists them)."),
    dest: Path = typer.Argument(Path("."), help="A folder (default: here) or a .yaml file name for the copy."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Write an editable copy of a shipped recipe, with its teacher's training recipe beside it."""
    from kdlab.config.shipped import copy_recipe
    from kdlab.runs.console import console

    written, notes = copy_recipe(name, dest, force=force)
    for note in notes:
        console.print(f"[bold yellow]note:[/] {note}", highlight=False)
    kind = "distill" if len(written) > 1 else "train"
    console.print(f"wrote {', '.join(str(p) for p in written)}; run it with `kdlab {kind} {written[0]}`",
                  highlight=False)


@friendly
def schema(
    section: str | None = typer.Argument(
        None, help="A section, e.g. data, train, train.adversarial, eval (default: every key)."),
) -> None:
    """Every recipe key: type, default, allowed values and description (from the schema the validator uses)."""
    from kdlab.config.schema_doc import render

    typer.echo(render(section))
