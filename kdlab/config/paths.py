"""Paths inside a recipe: relative values are read from the recipe file's folder, not the current directory.

``teacher.recipe``, ``teacher.checkpoint``, ``teacher.model_dir`` and ``data.root`` may be relative; :func:`resolve_paths` makes them
absolute against the folder of the file that wrote them, so a recipe works from any directory (``--set``
values are command-line paths: they are read from the current directory). COCO ``data.annotations`` and
``data.test_annotations`` stay relative to ``data.root``, as documented there. :func:`check_paths` refuses a
teacher recipe or checkpoint that does not exist, naming the key, at load time; a missing ``data.root`` is
refused by the data loaders (which name ``data.root``) before any teacher is trained.

The run key (:meth:`kdlab.config.recipe.Recipe.key`) does not hash these absolute paths, which differ between
machines: a teacher enters a student's key by its own identity (its run key, or its checkpoint's digest) and
data by the dataset's name and the last component of ``data.root`` (the dataset folder's name). An ablation's
plan fingerprint sees each path by its last component alike (:func:`location_free`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from kdlab.config.zoo import existing_checkpoint
from kdlab.errors import KdlabError

# (section, key) of every recipe value that is a filesystem path.
PATH_KEYS = (("data", "root"), ("teacher", "recipe"), ("teacher", "checkpoint"), ("teacher", "model_dir"))


def _map_paths(raw: Any, change: Any) -> Any:
    """A copy of the raw recipe mapping with ``change(path)`` in place of every non-empty path key's value."""
    if not isinstance(raw, dict):
        return raw
    changed = copy.deepcopy(raw)
    for section, key in PATH_KEYS:
        node = changed.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key].strip():
            node[key] = change(Path(node[key].strip()))
    return changed


def resolve_paths(raw: Any, folder: str | Path) -> Any:
    """A copy of the raw recipe mapping with every relative path key made absolute against ``folder``."""
    def absolute(path: Path) -> str:
        path = path.expanduser()
        return path.as_posix() if path.is_absolute() else os.path.abspath(Path(folder) / path)

    return _map_paths(raw, absolute)


def location_free(raw: Any) -> Any:
    """A copy of a resolved raw recipe mapping with every path key cut to its last component (the dataset folder's
    name, the teacher recipe's or checkpoint's file name), as the run key sees them: what an ablation's plan
    fingerprint hashes (:attr:`kdlab.ablation.grid.AblationPlan.fingerprint`), so a study's committed rows are
    recognised on a checkout that lives elsewhere."""
    return _map_paths(raw, lambda path: path.name)


def check_paths(recipe: Any, source: str) -> None:
    """Refuse a missing teacher recipe or checkpoint, naming its key (relative paths: the recipe's folder)."""
    where = f"relative paths in a recipe are read from its folder, {Path(source).parent.absolute()}"
    teacher = recipe.teacher
    if teacher is not None:
        for key in ("recipe", "checkpoint"):
            value = getattr(teacher, key)
            if value is not None and not Path(value).is_file():
                raise KdlabError(f"{source}: teacher.{key} '{value}' not found ({where}): fix teacher.{key}")
        if teacher.robustbench is not None:  # a one-line error naming where the file goes, before any work
            try:
                existing_checkpoint(teacher.robustbench, teacher.dataset, teacher.threat_model, teacher.model_dir)
            except KdlabError as error:
                raise KdlabError(f"{source}: teacher.robustbench: {error}") from None
