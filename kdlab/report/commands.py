"""The commands that regenerate an ablation table (``kdlab report``'s "Commands that regenerate it"), and the
plan hash that ``kdlab ablate`` writes in every row (:func:`plan_fingerprint`).

A table's rows record the ``kdlab ablate`` command that wrote them (``command``, as typed: every flag): those
commands are shown, each with the number of rows it wrote. Rows written before that column existed fall back,
labelled as such, to a ``kdlab ablate`` command of the README beside the results folder that writes the table, else
to a command derived from the rows (:func:`derived_commands`): the recipe under ``recipes/`` named like the
ablation, ``--name``, the cells' flags, the seeds, the attacks and ``--out``; one command per distinct cell set
when one command cannot write them all. A derived command is checked against the rows' plan hash where they have
one; a table it cannot be derived for, or whose hash it does not match, says "not recorded".
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from kdlab.report.tables import TEACHER_CELL


def plan_fingerprint(base: dict, cells: list[list[str]], attacks: list[str]) -> str:
    """The hash of what an ablation table's numbers depend on: the base recipe with the common overrides applied,
    every cell's overrides in order, and the attacks (not the seeds: a seed extends the same table)."""
    payload = json.dumps([base, cells, list(attacks)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Regenerate:
    """Commands of one kind for some of a table's rows: ``source`` is ``recorded`` (the rows' own ``command``),
    ``README.md``, ``derived`` or ``not recorded``; ``commands`` pairs each command with the rows it wrote."""

    source: str
    commands: tuple[tuple[str, int], ...]
    note: str


def split_setting(setting: str) -> list[str]:
    """A row's ``setting`` (the cell's overrides joined by spaces) back into its overrides: one starts at each
    space followed by ``KEY=``, so values such as ``[2, 3]`` or ``{name: kd}`` keep their spaces."""
    return [part for part in re.split(r" (?=[A-Za-z_][\w.]*=)", setting.strip()) if part]


def regenerate_commands(frame: pd.DataFrame, csv_path: Path, results: Path) -> list[Regenerate]:
    """What regenerates the table at ``csv_path`` (its rows ``frame``): the commands its rows record, and for rows
    that record none (tables written before the ``command`` column) the README's command, a derived one or
    "not recorded"."""
    recorded = frame["command"] if "command" in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    has = recorded.notna() & (recorded.astype(str).str.strip() != "")
    found = []
    if has.any():
        counts = recorded[has].astype(str).value_counts(sort=False)
        commands = tuple((command, int(counts[command])) for command in dict.fromkeys(recorded[has].astype(str)))
        found.append(Regenerate("recorded", commands, "recorded by kdlab ablate in the rows it wrote (column "
                                "command): rerun it to reuse every finished run and train the missing ones"))
    old = frame[~has]
    if len(old):
        found.append(_unrecorded(old, csv_path, results))
    return found


def _unrecorded(frame: pd.DataFrame, csv_path: Path, results: Path) -> Regenerate:
    rows = len(frame)
    stem = re.sub(r"-v\d+$", "", csv_path.stem)
    documented = readme_command(stem, _seeds(frame), results)
    if documented:
        return Regenerate("README.md", ((documented, rows),), "not recorded in the table (it predates the command "
                          "column): the README's command that writes a table of this name")
    derived, problem = derived_commands(frame, csv_path, results)
    if not derived:
        return Regenerate("not recorded", (), f"not recorded in the table (it predates the command column), and "
                          f"no command can be derived that writes exactly its cells: {problem}")
    return Regenerate("derived", tuple(derived), f"not recorded in the table (it predates the command column): "
                      f"derived from its rows (cells, settings, seeds, attacks); {problem}")


def _seeds(frame: pd.DataFrame) -> list[int]:
    return sorted({int(seed) for seed in frame.loc[frame["cell"].astype(str) != TEACHER_CELL, "seed"]})


def recipe_file(ablation: str, results: Path) -> Path | None:
    """The recipe under ``recipes/`` (beside the results folder, or in the current one) named ``ablation``."""
    for folder in (results.absolute().parent / "recipes", Path.cwd() / "recipes"):
        for candidate in sorted(folder.glob("*.yaml")):
            try:
                name = (yaml.safe_load(candidate.read_text()) or {}).get("name")
            except (yaml.YAMLError, AttributeError):
                continue
            if name == ablation or candidate.stem == ablation:
                return candidate
    return None


# --------------------------------------------------------------------------- derived from the rows
def _shown(path: Path, root: Path) -> str:
    """A path as a command run from the checkout ``root`` names it."""
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return path.absolute().as_posix()


def _cell_flags(kind: str, cells: list[tuple[str, list[str]]], per_block_weight: bool) -> list[list[str]] | None:
    """The flags of the commands that make exactly these cells (label, overrides), one list per command;
    None when no command makes them."""
    labels = [label for label, _ in cells]
    if kind == "components":
        return [["--components"]]
    if kind == "methods":
        flags = ["--methods", ",".join(labels)]
        for label, overrides in cells:
            flags += [token for extra in overrides[1:] for token in ("--method-set", f"{label}.{extra[7:]}")
                      if extra.startswith("method.")]
            if any(not extra.startswith("method.") for extra in overrides[1:]):
                return None
        return [flags]
    if kind == "blocks":
        chosen = [[int(b) for b in label.removeprefix("block").split("+")] for label in labels]
        weight = ["--per-block-weight"] if per_block_weight else []
        last = chosen[-1]
        singles = [c[0] for c in chosen if len(c) == 1]
        if chosen == [[b] for b in singles] + ([singles] if len(singles) > 1 else []):
            return [["--blocks", ",".join(map(str, singles)), *weight]]
        if chosen == [last[: i + 1] for i in range(len(last))]:
            return [["--blocks", ",".join(map(str, last)), "--cumulative", *weight]]
        return None
    # a grid: one --grid per key when the cells are the product of their values in order, else one command a cell
    keys = [[item.partition("=")[0] for item in overrides] for _, overrides in cells]
    if not keys or any(k != keys[0] for k in keys) or not keys[0]:
        return None
    axes: dict[str, list[str]] = {key: [] for key in keys[0]}
    for _, overrides in cells:
        for item in overrides:
            key, _, value = item.partition("=")
            if value not in axes[key]:
                axes[key].append(value)
    if [list(c) for c in itertools.product(*axes.values())] == [[i.partition("=")[2] for i in o] for _, o in cells]:
        return [[token for key, values in axes.items() for token in ("--grid", f"{key}={','.join(values)}")]]
    return [[token for item in overrides for token in ("--grid", item)] for _, overrides in cells]


def _attacks(frame: pd.DataFrame) -> list[str]:
    """The ``--attack`` list behind the table's accuracy columns (columns merged by ``kdlab table --with-eval``,
    which have an ``_n`` column beside them, came from ``kdlab eval``, not from the ablation)."""
    merged = {column[:-2] for column in frame.columns if column.endswith("_n")}
    extra = [column.removesuffix("_acc") for column in frame.columns
             if column.endswith("_acc") and column not in ("clean_acc", "pgd_acc")
             and not column.startswith(("val_", "teacher_")) and column.removesuffix("_acc") not in merged]
    return ["pgd", *extra]


def derived_commands(frame: pd.DataFrame, csv_path: Path, results: Path) -> tuple[list[tuple[str, int]], str]:
    """Commands that write exactly the table's cells and seeds (each with the rows it writes) and a note on how
    far they were checked; or no command and the reason."""
    ablation, kind = str(frame["ablation"].iloc[0]), str(frame["kind"].iloc[0])
    stem = re.sub(r"-v\d+$", "", csv_path.stem)
    if "tuned" in frame.columns or stem.endswith(("-val", "-tuned")):
        return [], "a --tune table, whose tuning values the rows do not record"
    recipe = recipe_file(ablation, results)
    if recipe is None:
        return [], f"no recipe named {ablation} under recipes/"
    students = frame[frame["cell"].astype(str) != TEACHER_CELL]
    if "setting" not in students.columns or not len(students):
        return [], "the rows record no cell settings"
    cells = {str(cell): split_setting("" if pd.isna(setting) else str(setting))
             for cell, setting in zip(students["cell"], students["setting"])}
    seeds = {cell: tuple(sorted(int(s) for s in students.loc[students["cell"].astype(str) == cell, "seed"]))
             for cell in cells}
    root = results.absolute().parent
    out = csv_path.parent
    out_flag = [] if out.absolute() == (root / "results" / "ablations") else ["--out", _shown(out, root)]
    attacks = _attacks(frame)
    attack_flags = [token for name in attacks for token in ("--attack", name)] if attacks != ["pgd"] else []
    commands = []
    for seed_set in dict.fromkeys(seeds.values()):  # cells run with other seeds: a command per seed set
        group = [(cell, overrides) for cell, overrides in cells.items() if seeds[cell] == seed_set]
        flags = _cell_flags(kind, group, stem.endswith("-per-block-weight"))
        if flags is None:
            return [], f"its {kind} cells ({', '.join(c for c, _ in group)}) are not what any flag of kdlab ablate makes"
        for cell_flags in flags:
            tokens = ["kdlab", "ablate", _shown(recipe, root), "--name", ablation, *cell_flags,
                      "--seeds", ",".join(map(str, seed_set)), *attack_flags, *out_flag]
            runs = len(seed_set) * (len(group) if len(flags) == 1 else 1)
            commands.append((shlex.join(tokens), runs))
    if "plan" not in frame.columns or frame["plan"].isna().all():
        return commands, ("not checked: the table predates the plan hash, so a --set it was written with is not "
                          "known; run it from the checkout's root through kdlab check first")
    from kdlab.config.recipe import read_recipe_file

    base = read_recipe_file(recipe)
    expected = plan_fingerprint(base, list(cells.values()), attacks)
    if str(students["plan"].dropna().iloc[0]) != expected:
        return [], (f"{_shown(recipe, root)} as it is here, without --set, does not give the rows' plan hash (the "
                    "--set, recipe version or checkout path it was written with is not recorded)")
    return commands, (f"checked: {_shown(recipe, root)} without --set gives the rows' plan hash (the same recipe, "
                      "cells and attacks); run from the checkout's root")


# --------------------------------------------------------------------------- the README's commands
def _table_title(tokens: list[str], root: Path) -> str | None:
    """The table a ``kdlab ablate`` command line writes (:attr:`kdlab.ablation.grid.AblationPlan.title`), or None."""
    if len(tokens) < 3:
        return None
    flags = {token: tokens[i + 1] if i + 1 < len(tokens) else "" for i, token in enumerate(tokens)}
    name = flags.get("--name")
    if name is None:
        try:
            name = (yaml.safe_load((root / tokens[2]).read_text()) or {}).get("name")
        except (OSError, yaml.YAMLError, AttributeError):
            return None
    keys = [tokens[i + 1].partition("=")[0] for i, token in enumerate(tokens[:-1]) if token == "--grid"]
    if keys:
        return f"{name}-grid-" + "-".join(keys)
    kinds = {"--components": "components", "--methods": "methods", "--blocks": "blocks"}
    kind = next((kinds[token] for token in tokens if token in kinds), None)
    if kind == "blocks" and "--per-block-weight" in tokens:
        kind = "blocks-per-block-weight"
    return f"{name}-{kind}" if kind else None


def readme_command(table: str, seeds: list[int], results: Path) -> str | None:
    """The ``kdlab ablate`` command of the README beside the results folder that writes ``table`` (a table
    name without ``-vN``), preferring one with the table's seeds; None when the README has none."""
    readme = results.absolute().parent / "README.md"
    if not readme.is_file():
        return None
    text = re.sub(r"\\\n\s*", " ", readme.read_text())  # continuation lines joined
    found = []
    for match in re.findall(r"kdlab ablate [^`\n#]*", text):
        line = " ".join(match.split())
        if "[" in line.replace("=[", "") or "RECIPE" in line or "..." in line:
            continue  # a usage pattern, not a command
        try:
            tokens = shlex.split(line)
        except ValueError:
            continue
        if _table_title(tokens, results.absolute().parent) == table:
            given = tokens[tokens.index("--seeds") + 1] if "--seeds" in tokens[:-1] else "0"
            found.append((given == ",".join(map(str, seeds)), line))
    return max(found, key=lambda item: item[0])[1] if found else None
