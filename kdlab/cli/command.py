"""How every kdlab command behaves: its help layout (flags, defaults, nothing cut at 80 columns), ``-h`` beside ``--help``, user mistakes as one line on
stderr (exit code 2) and what Ctrl-C leaves behind."""

from __future__ import annotations

import contextvars
import functools
import os
import re
import shlex
from collections.abc import Callable

import typer
from rich.text import Text
from typer import rich_utils
from typer.core import TyperCommand, TyperGroup, TyperOption

from kdlab.errors import KdlabError, ReportedElsewhere

# Given to the app, to every command and to the recipes group: ``-h`` works wherever ``--help`` does, and every
# option with a default shows it as ``[default: ...]``.
CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}

# "(default 8/255)", "(default: one per core)" or "(repeatable; default student-ce)" in an option's help: a default
# told in words, for an option whose value in code is None (the command chooses). Shown as [default: ...].
_PROSE_DEFAULT = re.compile(r"\s*\((?P<kept>[^()]*?;\s*)?default:?\s+(?P<default>[^()]+)\)")


class _ToldDefault(TyperOption):
    """An option whose default is told in words: ``[default: one per core]`` (click would add parentheses)."""

    def _get_default_string(self, **kwargs) -> str:
        return str(self.show_default)


def _help_layout(params: list) -> list:
    """Flags without a ``<bool>`` value, arguments in capitals, defaults told in the help as ``[default: ...]``."""
    for param in params:
        if param.param_type_name == "option" and getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.param_type_name == "argument" and param.metavar is None:
            param.metavar = param.name.upper()
        if (isinstance(param, TyperOption) and not param.is_flag and param.default in (None, [], ())
                and not isinstance(param.show_default, str) and param.help):
            told = _PROSE_DEFAULT.search(param.help)
            if told is not None:
                kept = (told["kept"] or "").rstrip("; ")
                param.help = param.help[:told.start()] + (f" ({kept})" if kept else "") + param.help[told.end():]
                param.show_default = told["default"].strip()
                param.__class__ = _ToldDefault
    return params


def _whole_words(make_text: Callable) -> Callable:
    """Help text that folds a word longer than its column onto the next line instead of cutting it with "…"
    (rich's default in table cells): an example such as ``'method.feature.weight[kind=mgd]=2e-6'`` stays whole."""

    @functools.wraps(make_text)
    def wrapper(*args, **kwargs):
        text = make_text(*args, **kwargs)
        if isinstance(text, Text):
            text.overflow = "fold"
        return text

    return wrapper


rich_utils._make_rich_text = _whole_words(rich_utils._make_rich_text)


class KdlabCommand(TyperCommand):
    """Help that reads like the README: ``Usage: kdlab train [OPTIONS] RECIPE`` (not ``{recipe}``), on/off
    options such as ``--resume`` and ``--force`` shown as bare flags (no ``<bool>`` value), every default as
    ``[default: ...]`` and no word of the help cut at a narrow terminal."""

    def get_params(self, ctx):
        return _help_layout(super().get_params(ctx))

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [piece.replace("{", "").replace("}", "") for piece in super().collect_usage_pieces(ctx)]

    def make_context(self, info_name, args, parent=None, **extra):
        """Remember the command line as typed (before parsing consumes it): :func:`typed_command`."""
        names = []
        context = parent
        while context is not None and context.parent is not None:  # a group's name (recipes), not the program's
            names.insert(0, context.info_name)
            context = context.parent
        typed = shlex.join(["kdlab", *names, info_name or "", *args])
        _TYPED.set(typed)
        return super().make_context(info_name, list(args), parent=parent, **extra)


_TYPED: contextvars.ContextVar[str] = contextvars.ContextVar("kdlab_typed_command", default="")


def typed_command() -> str:
    """The running command's line as typed, shell-quoted (``shlex.join``), the program named ``kdlab`` however it
    was started (the console script, ``python -m kdlab``, under torchrun: its kdlab part); recorded with every run
    (run.json ``command``) and ablation row."""
    return _TYPED.get()


class KdlabGroup(TyperGroup):
    """The app and the ``recipes`` group: their ``--help`` and ``--version`` are flags, as on every command."""

    def get_params(self, ctx):
        return _help_layout(super().get_params(ctx))


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
