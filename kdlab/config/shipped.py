"""The recipes shipped with kdlab: listed by name, run by name, copied out to be edited.

One copy of each recipe exists: the repository's ``recipes/`` folder. ``setup.py`` installs that folder inside
the package as ``kdlab/recipes`` (package data), so ``kdlab distill quickstart`` works after a plain
``pip install`` with no checkout; from a checkout (editable install, or ``PYTHONPATH``) the folder is read where
it is. A recipe argument that is an existing file is always that file; a bare name (``quickstart``, or
``quickstart.yaml`` that is not a file here) is a shipped recipe.

``kdlab recipes copy NAME [DEST]`` writes an editable copy of a shipped recipe together with the training recipe
of its teacher (``teacher.recipe``), so the copy's relative ``teacher.recipe`` still points at a file. Relative
``data.root`` and ``teacher.checkpoint`` values are read from the recipe's folder (:mod:`kdlab.config.paths`);
in the copy they are rewritten as absolute paths when they exist, and reported when they do not (datasets are
not shipped, except the embedded CIFAR-10 subset and the synthetic shapes, which need no path).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from kdlab.errors import KdlabError

PACKAGE = Path(__file__).resolve().parents[1]  # the kdlab package folder


def shipped_dir() -> Path:
    """The folder of the shipped recipes: ``kdlab/recipes`` in an installed wheel, ``recipes/`` in a checkout."""
    for folder in (PACKAGE / "recipes", PACKAGE.parent / "recipes"):
        if folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
    raise KdlabError(f"no shipped recipes found under {PACKAGE}: reinstall kdlab (pip install kdlab)")


@dataclass(frozen=True)
class ShippedRecipe:
    name: str
    path: Path
    kind: str       # distill or train
    data: str       # what the recipe reads: embedded, synthetic or a data.root
    summary: str    # the recipe's first comment line


def _summary(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def shipped_recipes() -> list[ShippedRecipe]:
    """Every shipped recipe, sorted by name."""
    found = []
    for path in sorted(shipped_dir().glob("*.yaml")):
        text = path.read_text()
        raw = yaml.safe_load(text) or {}
        data = raw.get("data") or {}
        source = data.get("root") or data.get("dataset") or ("synthetic" if raw.get("task") == "detection" else "")
        kind = "distill" if "student" in raw else "train"
        found.append(ShippedRecipe(path.stem, path, kind, str(source), _summary(text)))
    return found


def _bare_name(text: str) -> str | None:
    """``quickstart`` or ``quickstart.yaml`` (no folder part): the name of a shipped recipe, else None."""
    if "/" in text or "\\" in text:
        return None
    return text[:-len(".yaml")] if text.endswith(".yaml") else (None if "." in text else text)


def find_shipped(name: str) -> Path:
    """The shipped recipe called ``name``; unknown names are a one-line error with the closest names."""
    by_name = {recipe.name: recipe.path for recipe in shipped_recipes()}
    if name in by_name:
        return by_name[name]
    close = difflib.get_close_matches(name, list(by_name), n=3)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise KdlabError(f"recipe '{name}' is not a file here nor a shipped recipe: {hint}"
                     "`kdlab recipes` lists the shipped ones")


def resolve_recipe(argument: str | Path) -> Path:
    """A recipe argument as a file: an existing path as given, a bare name as the shipped recipe."""
    path = Path(argument)
    if path.is_file():
        return path
    name = _bare_name(str(argument))
    return find_shipped(name) if name is not None else path


def _absolute_paths(text: str, raw: dict, folder: Path, notes: list[str]) -> str:
    """``text`` with the relative ``data.root`` and ``teacher.checkpoint`` written as absolute paths."""
    for section, key in (("data", "root"), ("teacher", "checkpoint")):
        value = (raw.get(section) or {}).get(key)
        if not isinstance(value, str) or Path(value).expanduser().is_absolute():
            continue
        target = Path(os.path.abspath(folder / Path(value).expanduser()))
        if not target.exists():
            notes.append(f"{section}.{key} '{value}' does not exist from {folder}: set it in the copy")
            continue
        pattern = re.compile(rf"^(\s*{key}:\s*)(['\"]?){re.escape(value)}\2", re.MULTILINE)
        text = pattern.sub(lambda match, target=target: f"{match.group(1)}{target.as_posix()}", text, count=1)
    return text


def copy_recipe(name: str, dest: str | Path, force: bool = False) -> tuple[list[Path], list[str]]:
    """Copy the shipped recipe ``name`` (and its teacher's training recipe) to ``dest``.

    ``dest`` is a folder (made if needed; the files keep their names) or a ``.yaml`` file name for the recipe
    (its teacher recipe goes beside it, under its own name). Returns the files written and notes about paths
    the copy cannot resolve. Existing files are refused unless ``force``."""
    source = find_shipped(name)
    dest = Path(dest)
    target = dest if dest.suffix in (".yaml", ".yml") else dest / source.name
    plan = [(source, target)]
    raw = yaml.safe_load(source.read_text()) or {}
    teacher = (raw.get("teacher") or {}).get("recipe")
    if isinstance(teacher, str) and not Path(teacher).is_absolute():
        plan.append((source.parent / teacher, target.parent / teacher))
    existing = [str(to) for _, to in plan if to.exists()]
    if existing and not force:
        raise KdlabError(f"{', '.join(existing)} already exists: choose another destination or add --force")
    written, notes = [], []
    for origin, to in plan:
        text = origin.read_text()
        text = _absolute_paths(text, yaml.safe_load(text) or {}, origin.parent, notes)
        to.parent.mkdir(parents=True, exist_ok=True)
        to.write_text(text)
        written.append(to)
    return written, notes
