"""Helpers for the fail-fast CLI tests: one-line errors with exit code 2, and nothing written."""

from pathlib import Path

from typer.testing import CliRunner

from kdlab.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = result.stderr.strip() if result.stderr else result.output.strip()
    assert text.count("\n") == 0, text
    assert text.startswith("error:"), text
    for fragment in fragments:
        assert fragment in text, text
    return text


def files_under(folder: Path) -> list[Path]:
    """Every file and folder under ``folder`` (nothing: an empty list)."""
    return sorted(folder.rglob("*")) if folder.exists() else []


def write_recipe(folder: Path, text: str, name: str = "r.yaml") -> Path:
    """A recipe whose outputs go to ``folder/out`` (so a test can check nothing was written)."""
    path = folder / name
    path.write_text(text + f"\noutput: {{dir: {folder / 'out' / 'runs'}, table: {folder / 'out' / 'runs.csv'}}}\n")
    return path
