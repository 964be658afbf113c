"""Every install command kdlab shows names an extra that pyproject.toml defines (``pip install -e ".[X]"``,
``kdlab[X]``): in its messages and schema descriptions (the package's source) and in its docs."""

import re
from pathlib import Path

from kdlab.config.schema_doc import key_docs

ROOT = Path(__file__).resolve().parents[2]
# ".[X]" / '.[X,Y]' (an editable or local install) and kdlab[X] (an install from the index)
EXTRA = re.compile(r"""(?:["'`]\.|kdlab)\[([A-Za-z0-9_,\- ]+)\]""")


def _extras() -> set[str]:
    """The names of pyproject.toml's [project.optional-dependencies] (read as text: tomllib is 3.11+)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=\s*\[", section, flags=re.MULTILINE))


def _named(text: str) -> set[str]:
    return {name.strip() for group in EXTRA.findall(text) for name in group.split(",")}


def test_the_pattern_finds_the_extras_a_command_names():
    assert _named('pip install -e ".[tensorboard]" or \'.[wandb,slurm]\' or "kdlab[test]"') == \
        {"tensorboard", "wandb", "slurm", "test"}


def test_every_extra_named_in_the_source_docs_and_schema_exists():
    files = [*ROOT.joinpath("kdlab").rglob("*.py"), *ROOT.joinpath("docs").glob("*.md"), ROOT / "README.md",
             *ROOT.joinpath("recipes").glob("*.yaml")]
    texts = {str(path.relative_to(ROOT)): path.read_text() for path in files}
    texts["kdlab schema"] = "\n".join(row.description for row in key_docs())  # as kdlab schema prints it
    extras = _extras()
    assert {"tensorboard", "wandb", "slurm", "test"} <= extras
    missing = {where: sorted(_named(text) - extras) for where, text in texts.items() if _named(text) - extras}
    assert not missing, f"install commands that name no extra of pyproject.toml: {missing}"
