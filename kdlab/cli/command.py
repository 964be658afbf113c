"""How every kdlab command behaves: its help layout, ``-h`` beside ``--help``, user mistakes as one line on
stderr (exit code 2) and what Ctrl-C leaves behind."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import typer
from typer.core import TyperCommand

from kdlab.errors import KdlabError, ReportedElsewhere

# Given to the app, to every command and to the recipes group: ``-h`` works wherever ``--help`` does.
CONTEXT = {"help_option_names": ["-h", "--help"]}


class KdlabCommand(TyperCommand):
    """Help that reads like the README: ``Usage: kdlab train [OPTIONS] RECIPE`` (not ``{recipe}``), and on/off
    options such as ``--resume`` and ``--force`` shown as bare flags (no ``<bool>`` value)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if param.param_type_name == "option" and getattr(param, "is_flag", False):
                param.metavar = ""
            elif param.param_type_name == "argument" and param.metavar is None:
                param.metavar = param.name.upper()
        return params

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [piece.replace("{", "").replace("}", "") for piece in super().collect_usage_pieces(ctx)]


# What Ctrl-C leaves behind, per command (by its function's name), and how to go on.
INTERRUPTED = {
    # train and distill: the fallback, when no run had started; otherwise kdlab.check.launch.interrupted_advice
    # says which epochs are kept and which command continues (--resume for the run named, none for its teacher)
    "train": "interrupted before any training: rerun the same command",
    "distill": "interrupted before any training: rerun the same command",
    "ablate": "interrupted: finished cells and the last finished epoch of the others are kept; "
              "rerun the same command to continue",
    "eval_": "interrupted: no rows were appended; rerun the command to evaluate again",
}


def friendly(command: Callable) -> Callable:
    """Turn user mistakes (KdlabError) into one line on stderr and exit code 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KdlabError as error:
            from rich.markup import escape

            from kdlab.runs.console import error_console

            if isinstance(error, ReportedElsewhere):  # another process of a torchrun group printed it
                raise typer.Exit(2) from None
            for line in str(error).splitlines() or [""]:  # several problems (the plan check): one line each
                error_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as interrupt:
            from kdlab.runs.console import error_console

            if os.environ.get("RANK", "0") == "0":  # under torchrun every process is interrupted: rank 0 says so
                advice = getattr(interrupt, "kdlab_advice", None)  # what was kept, and how to go on
                error_console.print(advice or INTERRUPTED.get(command.__name__, "interrupted"), highlight=False,
                                    soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper
