"""The grid of an ablation: its cells (a label and the ``--set`` overrides that define it), their presets, the plan.

An ablation is a list of *cells* crossed with seeds. ``--components``, ``--blocks`` and ``--methods`` are named
presets over that grid; ``--grid KEY=V1,V2`` builds the cartesian product over any recipe key.
:func:`plan_ablation` resolves and validates every cell's recipe up front into an :class:`AblationPlan`, which
also names the plan's table. Every cell is a normal run directory keyed by its resolved recipe, so rerunning an
ablation skips finished cells and resumes interrupted ones (:mod:`kdlab.ablation.execute` runs them;
:mod:`kdlab.ablation.table` records them).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

from kdlab.config.methods import SETTINGS, methods_for
from kdlab.config.paths import location_free
from kdlab.config.recipe import Recipe, apply_overrides, read_recipe_file, validate_recipe
from kdlab.errors import KdlabError
from kdlab.report.commands import plan_fingerprint
from kdlab.report.tables import TEACHER_CELL
from kdlab.runtime.distributed import refuse_multiprocess


@dataclass(frozen=True)
class Cell:
    label: str
    overrides: tuple[str, ...] = ()


@dataclass
class AblationPlan:
    name: str
    kind: str  # components | blocks | grid | methods
    base_raw: dict
    cells: list[Cell]
    seeds: list[int]
    attacks: list[str]
    recipe_path: str
    include_teacher: bool = False
    common_overrides: list[str] = field(default_factory=list)
    grid_keys: tuple[str, ...] = ()
    per_block_weight: bool = False
    # kdlab.ablation.tuning: appended to the title (``-val`` for the tuning grid, ``-tuned`` for its seeds), and per
    # cell the value chosen on validation (``weight=2``) with the tuning table it came from
    title_suffix: str = ""
    tuned: dict[str, str] = field(default_factory=dict)
    tuned_on: str | None = None
    # a tuning grid (kdlab.ablation.tuning) or a declared study (kdlab.ablation.study) records a run whose loss
    # diverges as a flagged row and goes on
    divergence_is_a_result: bool = False
    # the ``kdlab ablate`` command line that runs this plan, as typed: every cell's run.json and every table row
    # record it (not part of the fingerprint: the same cells under other --jobs or --threads are the same table)
    command: str = ""
    # a declared study (kdlab.ablation.study): the table's own name (``<study>.csv``, its tuning grid
    # ``<study>-val.csv``) and the columns every row records (study, study_sha256, study_declaration)
    table_name: str | None = None
    study: dict[str, str] = field(default_factory=dict)
    # a tuning grid that grows round by round (kdlab.ablation.tuning) keeps its first round's fingerprint, so the
    # rounds write one table; per tuning cell, the round that added its value and why (``tune_round``, ``tune_added``)
    fixed_fingerprint: str | None = None
    cell_notes: dict[str, dict] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The table's name; a grid names its full keys (``R-grid-method.kd.weight``), so two grids over one
        recipe never share a table, even when their keys end alike (``method.acm.weight``). A study's table is
        named by the study."""
        if self.table_name:
            return self.table_name + self.title_suffix
        if self.kind == "blocks" and self.per_block_weight:
            return f"{self.name}-blocks-per-block-weight{self.title_suffix}"
        if self.kind != "grid":
            return f"{self.name}-{self.kind}{self.title_suffix}"
        return f"{self.name}-grid-" + "-".join(self.grid_keys) + self.title_suffix

    @property
    def fingerprint(self) -> str:
        """A hash of what the table's numbers depend on: the base recipe with the common overrides, every
        cell's overrides and the attacks (not the seeds: adding a seed extends the same table). Paths enter by
        their last component (:func:`kdlab.config.paths.location_free`): the same study on a checkout elsewhere
        has the same fingerprint, so its committed rows are recognised there."""
        if self.fixed_fingerprint:
            return self.fixed_fingerprint
        base = location_free(apply_overrides(self.base_raw, self.common_overrides))
        return plan_fingerprint(base, [list(cell.overrides) for cell in self.cells], list(self.attacks))

    def table_path(self, out_dir: Path) -> Path:
        """``<title>.csv``, unless a table of that name holds another plan's cells (other values, another
        base recipe or ``--set``): then the first free or matching ``<title>-v2.csv``, ``-v3``, ... -- an
        ablation never overwrites another one's table. A study's table is always ``<study>.csv``: a table of
        another declaration is refused before any work (:func:`kdlab.ablation.study.refuse_changed`)."""
        if self.study:
            return out_dir / f"{self.title}.csv"
        for version in itertools.count(1):
            path = out_dir / (f"{self.title}.csv" if version == 1 else f"{self.title}-v{version}.csv")
            if not path.exists() or self._owns(path):
                return path
        raise AssertionError("unreachable")

    def _owns(self, path: Path) -> bool:
        """Whether the table at ``path`` was written by this plan (tables from before the ``plan`` column:
        whether their cells' settings are among this plan's)."""
        import csv

        with path.open(newline="") as stream:
            rows = [row for row in csv.DictReader(stream) if row.get("cell") != TEACHER_CELL]
        if not rows:
            return True
        if "plan" in rows[0]:
            return all(row["plan"] == self.fingerprint for row in rows)
        settings = {" ".join(cell.overrides) for cell in self.cells}
        return all(row.get("setting", "") in settings for row in rows)

    def cell_overrides(self, cell: Cell, seed: int) -> tuple[str, ...]:
        """Every override behind a cell's run (``--set``, the cell's, its seed): recorded in its runs row."""
        return (*self.common_overrides, *cell.overrides, f"seed={seed}")

    def recipe_for(self, cell: Cell, seed: int) -> Recipe:
        raw = apply_overrides(self.base_raw, self.common_overrides + list(cell.overrides))
        raw = apply_overrides(raw, [f"seed={seed}", f"name={self.name}-{_slug(cell.label)}-s{seed}"])
        raw.setdefault("eval", {})["attacks"] = ["clean", *[a for a in self.attacks if a != "clean"]]
        return validate_recipe(raw, source=f"{self.recipe_path} [cell {cell.label}, seed {seed}]")


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in label.replace("+", "_"))


# --------------------------------------------------------------------------- presets
def component_cells(base: Recipe) -> list[Cell]:
    """The paper's component ablation plus the student trained alone (CE): exactly these loss terms each."""
    kd_weight = base.method.kd.weight or 1.0
    acm_weight = base.method.acm.weight or 10.0
    on_kd, off_kd = f"method.kd.weight={kd_weight}", "method.kd.weight=0"
    on_acm, off_acm = f"method.acm.weight={acm_weight}", "method.acm.weight=0"
    mix, no_mix = "method.mixup.enabled=true", "method.mixup.enabled=false"
    return [
        Cell("student-ce", (no_mix, off_kd, off_acm)),
        Cell("kd-only", (no_mix, on_kd, off_acm)),
        Cell("acm", (no_mix, off_kd, on_acm)),
        Cell("acm+kd", (no_mix, on_kd, on_acm)),
        Cell("acm+mixup", (mix, off_kd, on_acm)),
        Cell("mixacm", (mix, on_kd, on_acm)),
    ]


def method_cells(text: str, base: Recipe, method_overrides: list[str], inner_steps: int | None,
                 inner_step: str | None = None) -> list[Cell]:
    """One cell per method named in ``text`` (``mixacm,rrm,kd,...``), over the recipe's teacher and student.

    Each cell REPLACES the recipe's whole ``method`` section with ``{name: X}`` (the method's defaults: a
    MixACM recipe's mixup/kd/acm keys belong to MixACM), except the recipe's own method, which keeps its
    section. ``method_overrides`` (``X.KEY=VALUE``, e.g. ``ard.alpha=0.9``) set a key of method X's cell only;
    ``inner_steps`` and ``inner_step`` set ``method.inner.steps`` and ``method.inner.step`` of every method
    with an inner maximisation (the same k and step size for all adversarially trained students).
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    known = methods_for(base.task)
    unknown = [name for name in names if name not in known]
    if not names or unknown:
        problem = f"unknown method {unknown[0]!r}" if unknown else "no method"
        raise KdlabError(f"--methods '{text}': {problem}; methods for {base.task}: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise KdlabError(f"--methods '{text}' lists a method twice")
    per_method: dict[str, list[str]] = {name: [] for name in names}
    for entry in method_overrides:
        target, dot, setting = entry.partition(".")
        if not dot or "=" not in setting or target not in per_method:
            raise KdlabError(f"--method-set '{entry}': expected METHOD.KEY=VALUE for a method of --methods "
                             f"({', '.join(names)}), e.g. --method-set ard.alpha=0.9")
        per_method[target].append(f"method.{setting}")
    cells = []
    for name in names:
        own = ["method.name=" + name] if name == base.method.name else ["method={name: " + name + "}"]
        if "inner" in SETTINGS[name].model_fields:
            own += [] if inner_steps is None else [f"method.inner.steps={inner_steps}"]
            own += [] if inner_step is None else [f"method.inner.step={inner_step}"]
        cells.append(Cell(name, tuple(own + per_method[name])))
    return cells


def parse_blocks(text: str, available: list[int], model_name: str) -> list[int]:
    listing = ", ".join(str(b) for b in available)
    blocks = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise KdlabError(f"--blocks '{text}': '{part}' is not a block index; {model_name} has blocks {listing}")
        if int(part) not in available:
            raise KdlabError(f"--blocks '{text}': block {part} does not exist; {model_name} has blocks {listing}")
        blocks.append(int(part))
    if len(set(blocks)) != len(blocks):
        raise KdlabError(f"--blocks '{text}' lists a block twice")
    return blocks


def acm_total_weight(recipe: Recipe) -> float:
    """The ACM weight summed over a recipe's blocks: acm.weight × Σ block_weights (ones when unset)."""
    acm = recipe.method.acm
    return acm.weight * sum(acm.block_weights or [1.0] * len(acm.blocks))


def block_cells(blocks: list[int], cumulative: bool, total: float | None = None, weight: float = 1.0,
                pairs: dict | None = None) -> list[Cell]:
    """One cell per block (or growing prefixes with ``cumulative``) plus one with every listed block.

    With ``total`` (the default of ``kdlab ablate --blocks``), every cell gets the same total ACM weight:
    a cell of k blocks gives each block weight total / (k · acm.weight), so a single-block cell is not
    confounded with a third of the loss weight of the three-block cell. Without it every block keeps weight 1
    and a cell's total grows with its block count (the behaviour before kdlab 0.2). With ``pairs`` (the
    recipe's ``acm.teacher_blocks``, student block -> teacher block) every cell keeps the recipe's pairing.
    """
    def cell(chosen: list[int]) -> Cell:
        label = "block" + "+".join(map(str, chosen)) if len(chosen) > 1 else f"block{chosen[0]}"
        per_block = 1.0 if total is None else total / (weight * len(chosen))
        # weights of 1 are written as null, so the cell is the same run as a recipe that leaves them unset
        weights = "null" if math.isclose(per_block, 1.0) else str([round(per_block, 6)] * len(chosen))
        overrides = [f"method.acm.blocks={chosen}", f"method.acm.block_weights={weights}"]
        if pairs is not None:
            overrides.append(f"method.acm.teacher_blocks={[pairs[block] for block in chosen]}")
        return Cell(label, tuple(overrides))

    if cumulative:
        return [cell(blocks[: i + 1]) for i in range(len(blocks))]
    cells = [cell([b]) for b in blocks]
    if len(blocks) > 1:
        cells.append(cell(blocks))
    return cells


def grid_keys(grid: list[str]) -> tuple[str, ...]:
    return tuple(entry.partition("=")[0].strip() for entry in grid)


def grid_cells(grid: list[str]) -> list[Cell]:
    axes = []
    for entry in grid:
        key, sep, values = entry.partition("=")
        if not sep or not values:
            raise KdlabError(f"--grid '{entry}': expected KEY=V1,V2,..., e.g. --grid method.kd.temperature=2,4,8")
        axes.append([(key.strip(), value.strip()) for value in split_values(values)])
    # a cell names each key by its last segment, or by its full path when two keys end alike
    last = [key.split(".")[-1] for key in grid_keys(grid)]
    names = {key: key if last.count(key.split(".")[-1]) > 1 else key.split(".")[-1]
             for key in grid_keys(grid)}
    cells = []
    for combination in itertools.product(*axes):
        label = ",".join(f"{names[key]}={value}" for key, value in combination)
        cells.append(Cell(label, tuple(f"{key}={value}" for key, value in combination)))
    return cells


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets so list values like [2,3] survive."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += ch
    values.append(current)
    return [v for v in values if v.strip()]


def model_blocks(recipe: Recipe) -> tuple[list[int], str]:
    from kdlab.models.factory import build_model

    spec = recipe.trained_model
    model = build_model("classification", spec.arch, 10, spec.build_options())
    return [block.index for block in model.blocks()], spec.arch


def plan_ablation(recipe_path: str, *, components: bool, blocks: str | None, cumulative: bool, grid: list[str],
                  seeds: list[int], attacks: list[str], overrides: list[str], name: str | None,
                  per_block_weight: bool = False, methods: str | None = None,
                  method_overrides: list[str] = (), inner_steps: int | None = None,
                  inner_step: str | None = None) -> AblationPlan:
    refuse_multiprocess("kdlab ablate")  # its cells run as separate jobs, not as one torchrun group
    raw = read_recipe_file(recipe_path)  # relative paths read from the recipe's folder
    if not isinstance(raw, dict):
        raise KdlabError(f"{recipe_path}: a recipe must be a YAML mapping")
    base = validate_recipe(apply_overrides(raw, overrides), source=recipe_path)
    chosen = sum([components, blocks is not None, bool(grid), methods is not None])
    if chosen != 1:
        raise KdlabError("choose exactly one of --components, --blocks 2,3,4, --grid KEY=V1,V2 or "
                         "--methods A,B")
    if (method_overrides or inner_steps is not None or inner_step is not None) and methods is None:
        raise KdlabError("--method-set, --inner-steps and --inner-step belong to --methods A,B,...: add it, "
                         "or use --set")
    if methods is not None and not base.is_distillation:
        raise KdlabError(f"{recipe_path} is a training recipe; --methods needs a distill recipe (student: + "
                         "teacher:), whose teacher every method shares")
    if (components or blocks is not None) and not base.is_distillation:
        raise KdlabError(f"{recipe_path} is a training recipe; --components and --blocks need a distill recipe")
    if (components or blocks is not None) and base.method.name != "mixacm":
        flag = "--components" if components else "--blocks"
        raise KdlabError(f"{flag} ablates MixACM's terms but {recipe_path} uses method {base.method.name}: use "
                         f"--grid KEY=V1,V2 (e.g. --grid method.weight=1,10)")
    if components:
        kind, cells, include_teacher = "components", component_cells(base), True
    elif blocks is not None:
        available, arch = model_blocks(base)
        kind, include_teacher = "blocks", False
        if base.method.acm.weight <= 0:
            raise KdlabError(f"{recipe_path}: method.acm.weight is 0, so a block ablation compares nothing; "
                             "set it, e.g. --set method.acm.weight=10")
        total = None if per_block_weight else acm_total_weight(base)
        chosen = parse_blocks(blocks, available, arch)
        acm = base.method.acm
        pairs = dict(acm.block_pairs) if acm.teacher_blocks is not None else None
        unpaired = [block for block in chosen if pairs is not None and block not in pairs]
        if unpaired:
            raise KdlabError(f"--blocks {blocks}: student block {unpaired[0]} has no teacher block in "
                             f"method.acm.teacher_blocks (pairs {acm.block_pairs}); add it to method.acm.blocks and "
                             "teacher_blocks, or --set method.acm.teacher_blocks=null to pair equal indices")
        cells = block_cells(chosen, cumulative, total, acm.weight, pairs)
    elif methods is not None:
        kind, include_teacher = "methods", True
        cells = method_cells(methods, base, list(method_overrides), inner_steps, inner_step)
    else:
        kind, cells, include_teacher = "grid", grid_cells(grid), False
    plan = AblationPlan(name=name or base.name, kind=kind, base_raw=raw, cells=cells, seeds=seeds,
                        attacks=attacks, recipe_path=recipe_path, include_teacher=include_teacher,
                        common_overrides=list(overrides), grid_keys=grid_keys(grid),
                        per_block_weight=per_block_weight and kind == "blocks")
    for cell in cells:  # validate every cell up front: a bad grid value fails before hours of training
        plan.recipe_for(cell, seeds[0])
    return plan

