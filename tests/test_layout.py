"""The layout shows the architecture: packages by concept, imports that only run downwards, no cycles.

Every import of a kdlab module is read from the source (function-level imports included, since they are
dependencies all the same), without importing anything. The layers, top to bottom; a package may import only
from packages below it (or from itself), and the packages of one layer never import each other:

    cli
    verify                    (checks a committed results folder: plans ablation commands, rebuilds the report)
    ablation
    check
    runs
    tasks
    methods
    train | robustness
    losses | models | data | report
    config | runtime
    results                   (run directories, provenance, locked CSV appends: a module of kdlab itself)
    errors                    (the one user-facing exception type: a module of kdlab itself)

``report`` sits low because its modules (tables, statistics, plots, the HTML page) read only result files:
tasks draw robustness curves with it and runs print tables with it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kdlab"
TESTS = Path(__file__).resolve().parent

LAYERS = [
    {"cli"},
    {"verify"},  # kdlab verify plans ablation commands (ablation) and rebuilds the report: above both, below cli
    {"ablation"},
    {"check"},
    {"runs"},
    {"tasks"},
    {"methods"},
    {"train", "robustness"},
    {"losses", "models", "data", "report"},
    {"config", "runtime"},
    {"results"},
    {"errors"},
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
TOP_LEVEL_LIMIT = 6  # modules directly in kdlab/ besides __init__ and __main__
# test folders that mirror no package: GPU-only tests, the benchmarks' smoke tests, the scripts' tests, shared data files
TEST_FOLDERS_OF_NO_PACKAGE = {"gpu", "benchmarks", "scripts", "fixtures", "helpers", "__pycache__"}

# Imports that still climb, each to be removed (the list only shrinks).
KNOWN_CLIMBS: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("kdlab", *path.relative_to(PACKAGE).with_suffix("").parts))
        modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported from it, line) for every kdlab import in the module, at any depth."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("kdlab")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdlab"):
            assert node.level == 0, f"{name}:{node.lineno}: relative import"
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def _dependencies(name: str) -> set[str]:
    """The modules ``name`` imports. ``from kdlab.cli import ablation_flags`` depends on the submodule and on the
    package itself, whose ``__init__`` Python runs first (a package ``__init__`` that imports the module doing
    this is a cycle)."""
    deps = set()
    for module, names, _ in _imports(name):
        submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
        targets = [*submodules, module] if submodules and module in MODULES else submodules or [module]
        for target in targets:
            while target not in MODULES:
                target = target.rsplit(".", 1)[0]
            if target != name and target != "kdlab":
                deps.add(target)
    return deps


GRAPH = {name: _dependencies(name) for name in MODULES}


def _area(name: str) -> str:
    """The package of kdlab a module belongs to (``kdlab.runs.run`` -> runs; ``kdlab.errors`` -> errors)."""
    return name.split(".")[1] if name.count(".") >= 1 else ""


def test_few_modules_sit_directly_in_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in {"__init__.py", "__main__.py"})
    assert len(top) <= TOP_LEVEL_LIMIT, top


def test_every_package_has_a_layer():
    areas = {_area(name) for name in MODULES if _area(name) not in {"", "__main__"}}
    assert areas <= set(RANK), sorted(areas - set(RANK))


def test_no_import_climbs():
    climbs = set()
    for name, deps in GRAPH.items():
        here = _area(name)
        if here in {"", "__main__"}:
            continue
        for dep in deps:
            there = _area(dep)
            if there != here and not RANK[there] > RANK[here]:
                climbs.add((name, dep))
    assert climbs == KNOWN_CLIMBS, sorted(climbs ^ KNOWN_CLIMBS)


def test_no_import_cycle():
    """Tarjan's strongly connected components over the module graph: every component is a single module."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in GRAPH[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert cycles == []


def _defined(name: str) -> set[str]:
    """Names a module defines at its top level (not those it imports)."""
    defined = set()
    for node in ast.parse(MODULES[name].read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try)):
            defined |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            defined |= {n.name for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return defined


def test_names_are_imported_from_the_module_that_defines_them():
    """No import through a re-export: ``from kdlab.config.recipe import TrainSpec`` would hide where TrainSpec
    lives (kdlab.config.sections). A package's ``__init__`` may gather its modules' names (kdlab.losses)."""
    wrong = []
    for path in [*PACKAGE.rglob("*.py"), *TESTS.rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module in MODULES and not _is_package(node.module)):
                continue
            defined = _defined(node.module)
            wrong += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {alias.name} from {node.module}"
                      for alias in node.names
                      if alias.name not in defined and f"{node.module}.{alias.name}" not in MODULES]
    assert wrong == []


def test_tests_mirror_the_packages():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir()}
    assert folders - TEST_FOLDERS_OF_NO_PACKAGE <= packages, sorted(folders - TEST_FOLDERS_OF_NO_PACKAGE - packages)
    # the checks of the whole repository: its layout (this module) and its style (test_style.py)
    loose = sorted(p.name for p in TESTS.glob("test_*.py") if p.name not in (Path(__file__).name, "test_style.py"))
    assert loose == [], f"test modules outside a package folder: {loose}"


def test_no_test_module_imports_another():
    """What test modules share lives in a ``conftest.py`` (fixtures, found by pytest) or in ``tests/helpers/`` (plain
    functions, classes and constants), never in a test module that another imports (or in a conftest imported by
    name): that would run the first module's code as part of the second and hide where a shared fixture lives."""
    wrong = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                parts = name.lstrip(".").split(".")
                ours = name.startswith(".") or parts[0] == "tests"
                if ours and any(part.startswith("test_") or part == "conftest" for part in parts):
                    wrong.append(f"{path.relative_to(TESTS.parent)}:{node.lineno}: {name}")
    assert wrong == []


@pytest.mark.parametrize("layer", range(len(LAYERS)))
def test_packages_of_one_layer_never_import_each_other(layer):
    crossing = sorted((name, dep) for name, deps in GRAPH.items() for dep in deps
                      if _area(name) in LAYERS[layer] and _area(dep) in LAYERS[layer] and _area(dep) != _area(name))
    assert crossing == []
