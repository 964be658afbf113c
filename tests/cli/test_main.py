"""The app (kdlab.cli.main): --version, -h beside --help everywhere, help texts generated from the name lists,
and the ablation flags of kdlab ablate and kdlab check declared once."""

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import kdlab
import kdlab.cli.evaluate
from kdlab.cli.main import app
from kdlab.config import names
from kdlab.config.methods import SETTINGS
from kdlab.report.paper import PAPER_NUMBERS

ROOT = Path(__file__).resolve().parents[2]
WIDE = {"COLUMNS": "200"}
PYPROJECT = (ROOT / "pyproject.toml").read_text()
PYPROJECT_VERSION = re.search(r'^version = "([^"]+)"$', PYPROJECT, re.MULTILINE).group(1)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=WIDE)


def _commands(group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``group``, as the words that name it on the command line."""
    found = [path]
    for name, command in group.commands.items():
        found += _commands(command, (*path, name)) if hasattr(command, "commands") else [(*path, name)]
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _option(command: str, flag: str):
    params = typer.main.get_command(app).commands[command].params
    return next(p for p in params if flag in p.opts)


def test_version_prints_the_pyproject_version():
    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.output == f"kdlab {PYPROJECT_VERSION}\n"
    assert kdlab.__version__ == PYPROJECT_VERSION  # the fallback when kdlab is not installed


def test_version_of_a_checkout_that_is_not_installed(monkeypatch):
    from importlib import metadata

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    result = invoke("--version")
    assert result.exit_code == 0 and result.output == f"kdlab {kdlab.__version__}\n"


def test_python_dash_m_kdlab_runs_the_app():
    result = subprocess.run([sys.executable, "-m", "kdlab", "--version"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"kdlab {PYPROJECT_VERSION}\n"


def test_every_command_is_reached():
    assert {c for c in COMMANDS if c} >= {("train",), ("distill",), ("eval",), ("ablate",), ("check",),
                                          ("inspect",), ("table",), ("report",), ("schema",), ("recipes",),
                                          ("recipes", "copy")}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "kdlab")
def test_short_help_is_long_help(command):
    long = invoke(*command, "--help")
    assert long.exit_code == 0, long.output
    assert "-h" in long.output
    short = invoke(*command, "-h")
    assert short.exit_code == 0, short.output
    assert short.output == long.output


@pytest.mark.parametrize(("command", "flag", "listed"), [
    ("eval", "--attack", names.ATTACKS),
    ("eval", "--data", names.DATASETS),
    ("ablate", "--executor", names.EXECUTORS),
    ("ablate", "--slurm", names.SLURM_SETTINGS),
    ("ablate", "--methods", tuple(SETTINGS)),
    ("check", "--methods", tuple(SETTINGS)),
    ("table", "--paper", tuple(PAPER_NUMBERS)),
])
def test_help_names_every_entry_of_its_name_list(command, flag, listed):
    assert listed
    help_text = _option(command, flag).help
    for name in listed:
        assert name in help_text, (flag, name)
    rendered = invoke(command, "--help").output
    assert all(name in rendered for name in listed)


def test_the_attack_and_data_help_follow_the_name_lists(monkeypatch):
    """A name added to the list appears in the help with no other edit: the help is built from the list."""
    monkeypatch.setattr(names, "ATTACKS", (*names.ATTACKS, "new-attack"))
    monkeypatch.setattr(names, "DATASETS", (*names.DATASETS, "new-dataset"))
    try:
        parameters = inspect.signature(importlib.reload(kdlab.cli.evaluate).eval_).parameters
        assert "new-attack" in parameters["attack"].default.help
        assert "new-dataset" in parameters["data"].default.help
    finally:
        monkeypatch.undo()
        importlib.reload(kdlab.cli.evaluate)


def _declaration(option) -> tuple:
    return (option.opts, option.name, option.default, option.help, option.bare_type(), option.multiple, option.min,
            option.is_flag)


ABLATION_FLAGS = ["--components", "--blocks", "--cumulative", "--per-block-weight", "--grid", "--methods",
                  "--method-set", "--inner-steps", "--inner-step", "--seeds", "--attack", "--name", "--out"]


@pytest.mark.parametrize("flag", ABLATION_FLAGS)
def test_ablate_and_check_share_the_ablation_flags(flag):
    ablate, check = _option("ablate", flag), _option("check", flag)
    assert _declaration(ablate) == _declaration(check)


@pytest.mark.parametrize("flag", ["--set", "--resume", "--force", "--threads"])
def test_train_and_distill_share_their_options(flag):
    assert _declaration(_option("train", flag)) == _declaration(_option("distill", flag))
