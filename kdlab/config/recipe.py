"""Recipes: the typed, validated description of one run.

A recipe is a YAML file (read with ``yaml.safe_load``, never anything that can run code)
parsed into frozen pydantic models. Every section forbids unknown keys, so a typo such as
``train.lrr`` fails at load time with the key, where it is, and the closest valid key.
``--set a.b=c`` overrides are applied to the raw mapping *before* validation, so they are
type-checked exactly like the file.

Two kinds of recipe share one schema:

* a *training* recipe has ``model:`` (``kdlab train``: standard or adversarial training);
* a *distillation* recipe has ``student:`` and ``teacher:`` (``kdlab distill``).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    SerializeAsAny,
    ValidationError,
    model_validator,
)

from kdlab.config.datasets import key_marker
from kdlab.config.methods import DEFAULT_METHOD, SETTINGS, owner_of, settings_class
from kdlab.config.methods.base import MethodSettings
from kdlab.config.paths import check_paths, resolve_paths
from kdlab.config.schema import Section
from kdlab.config.sections import (
    DataSpec,
    EvalSpec,
    ModelSpec,
    OutputSpec,
    TeacherSpec,
    TrainSpec,
)
from kdlab.errors import KdlabError

# Bump when the meaning of a recipe changes without its text changing (a default, a loss's form): every run
# key changes with it, so no cached run made under the old meaning is reused. 2: full-recipe keys, PGD
# model selection, reference optimizer defaults.
SCHEMA_VERSION = 2

# Options added after runs were recorded: at the value that keeps the earlier behaviour they are left out of the
# run key, so a recipe at that value keeps the key (and cached runs) it had; any other value enters the key, since
# it changes the numbers. section -> option -> the value left out. Usually the option's default; not where a
# default changed later, so the old behaviour, written out, keeps its old key: train.rng (default sample since
# issue #24: keys of classification runs that do not write it changed; rng: batch written out keeps the old key)
# and iad's bn_update_pass (true since issue #24: keys of default iad runs changed).
# "method" applies to whichever method has the option.
KEYED_ONLY_WHEN_SET: dict[str, dict[str, Any]] = {
    "train": {"precision": "fp32", "channels_last": False, "compile": False, "rng": "batch", "sync_bn": False},
    "eval": {"precision": "fp32"},
    # the classification options (bn_update_pass, kl_scale) and the detection reference defaults
    # (kdlab.config.methods.skd) at the value that gives what every run did before them
    "method": {"bn_update_pass": False, "kl_scale": 1.0, "feature.levels": "all", "feature.init_from_teacher": False},
}
# Options that never change the numbers (how often the engine reads its totals, how many processes read the
# images): never in a key. section -> options.
NEVER_KEYED: dict[str, set[str]] = {"data": {"workers"}, "train": {"log_every"}}


def _drop_defaults(dump: dict[str, Any], name: str) -> None:
    """Remove from the dumped section ``name`` the :data:`KEYED_ONLY_WHEN_SET` options at their defaults (a dotted
    option names a nested one: ``feature.levels``)."""
    for option, default in KEYED_ONLY_WHEN_SET.get(name, {}).items():
        *path, last = option.split(".")
        node: Any = dump
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(last, default) == default:
            node.pop(last, None)


def keyed_settings(section: BaseModel, name: str) -> dict[str, Any]:
    """``section`` (the recipe's section ``name``) as a cache key sees it: its settings without the
    :data:`NEVER_KEYED` options and without the :data:`KEYED_ONLY_WHEN_SET` options at their defaults, so
    caches keyed before those options existed keep their names."""
    dump = section.model_dump(mode="json")
    for option in NEVER_KEYED.get(name, ()):
        dump.pop(option, None)
    _drop_defaults(dump, name)
    return dump


# --------------------------------------------------------------------------- method
def _method_settings(value: Any) -> Any:
    """Validate ``method:`` with the settings class its ``name`` selects (the name is filled in by the recipe)."""
    if isinstance(value, MethodSettings) or not isinstance(value, dict):
        return value
    if value.get("name") not in SETTINGS:
        settings_class(value.get("name"), "classification")  # raises: unknown name, with the choices
    return SETTINGS[value["name"]].model_validate(value)


def _resolve_references(data: dict) -> dict:
    """The raw recipe with every ``reference`` default resolved for its model, in one place: the method's
    (``MethodSettings.with_references``; detection: ``kdlab.config.methods.skd.resolve_references``) and
    ``train.grad_clip`` (``MethodSettings.reference_grad_clip``). The recipe then holds, and its run's
    ``recipe.yaml`` records, the values used. A section that does not validate is left to its field's error."""
    method = data["method"]
    try:
        settings = method if isinstance(method, MethodSettings) else SETTINGS[method["name"]].model_validate(method)
    except ValidationError:
        return data
    spec = data.get("student") if data.get("student") is not None else data.get("model")
    arch = spec.get("arch") if isinstance(spec, dict) else getattr(spec, "arch", None)
    backbone = spec.get("backbone") if isinstance(spec, dict) else getattr(spec, "backbone", None)
    distills = data.get("student") is not None
    if data.get("task", "classification") == "detection" and arch in ("fasterrcnn", "retinanet"):
        settings = settings.with_references(arch, backbone or "resnet50", distills)
    train = data.get("train", {})
    if isinstance(train, TrainSpec):
        train = train.model_dump()
    if isinstance(train, dict) and train.get("grad_clip", "reference") == "reference":
        train = {**train, "grad_clip": settings.reference_grad_clip(distills)}
    return {**data, "method": settings, "train": train}


# A union discriminated by method.name over the registry (kdlab.config.methods), so a method registered
# after this module is imported (a plug-in, a test) validates like a built-in one.
MethodSection = Annotated[SerializeAsAny[MethodSettings], BeforeValidator(_method_settings)]


class Recipe(Section):
    name: str = Field(
        "run", description="label of the run directory (default: the file name); not in the key")
    task: Literal["classification", "detection"] = "classification"
    seed: int = Field(0, description="run seed (initialisation, batch order, augmentation)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu")
    data: DataSpec = DataSpec()
    model: ModelSpec | None = None
    student: ModelSpec | None = None
    teacher: TeacherSpec | None = None
    method: MethodSection = Field(default_factory=lambda: SETTINGS[DEFAULT_METHOD["classification"]]())
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()
    output: OutputSpec = OutputSpec()

    @model_validator(mode="before")
    @classmethod
    def _name_the_method(cls, data: Any) -> Any:
        """Fill in ``method.name`` (the task's default method) and refuse a method that does not fit the task."""
        if not isinstance(data, dict):
            return data
        task = data.get("task", "classification")
        if task not in DEFAULT_METHOD:
            return data  # the task field reports it
        method = data.get("method")
        if method is None:
            method = {}
        if isinstance(method, MethodSettings):
            settings_class(method.name, task)
            return _resolve_references(data)
        if not isinstance(method, dict):
            # pydantic reports ValueError as a validation error (a TypeError would escape as a traceback)
            raise ValueError("method: must be a mapping with name: and the method's settings")  # noqa: TRY004
        if "name" in method and method["name"] != DEFAULT_METHOD[task] and data.get("model") is not None:
            raise ValueError(f"method.name: {method['name']} needs a distillation recipe (student: + teacher:); "
                             f"a training recipe (model:) trains with train.adversarial: drop method")
        name = method.get("name", DEFAULT_METHOD[task])
        settings_class(name, task)
        return _resolve_references({**data, "method": {**method, "name": name}})

    @model_validator(mode="after")
    def _one_kind_of_recipe(self) -> Recipe:
        if (self.model is None) == (self.student is None):
            raise ValueError(
                "a recipe has either model: (a training recipe) or student: + teacher: (a distillation recipe)"
            )
        if self.student is not None and self.teacher is None:
            raise ValueError("a distillation recipe needs teacher: with checkpoint: or recipe:")
        if self.model is not None and self.teacher is not None:
            raise ValueError("teacher: belongs to distillation recipes; rename model: to student: or drop teacher:")
        if self.train.select in ("pgd", "clean") and self.data.val_size == 0:
            raise ValueError(f"train.select: {self.train.select} chooses the epoch on a validation split: set "
                             "data.val_size (e.g. 500), or train.select: last")
        data = self.data
        if self.task == "classification" and data.subset is not None and data.subset < data.batch_size:
            raise ValueError(f"data.subset ({self.data.subset}) is smaller than one batch (data.batch_size "
                             f"{data.batch_size}), so no training step would run: set data.batch_size to "
                             f"at most {data.subset}, or raise data.subset")
        if self.task == "detection" and self.train.select in ("pgd", "clean"):
            raise ValueError(f"train.select: {self.train.select} is for classification; detection runs select on "
                             "validation AP50 (auto) or the last epoch (last)")
        return self

    @property
    def is_distillation(self) -> bool:
        return self.student is not None

    @property
    def trained_model(self) -> ModelSpec:
        """The network this recipe trains: the student, or the model of a training recipe."""
        return self.student if self.student is not None else self.model  # type: ignore[return-value]

    def torch_device(self):
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise KdlabError("device: cuda but no CUDA GPU is visible; set device: cpu (or auto)")
        return torch.device(self.device)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def key(self, *extra: str) -> str:
        """A content hash of everything that changes the result (not the name or output paths).

        The whole resolved recipe enters the hash, defaults included, together with
        :data:`SCHEMA_VERSION`: when a default changes, runs and teachers cached under the old default
        are not silently reused, since their key changes too. Writing a default explicitly names the
        same run as leaving it out. A distillation recipe's key needs its teacher's identity in ``extra``.
        Exceptions: options that never change the numbers (``train.log_every``, ``data.workers``, the device)
        are left out, and those of :data:`KEYED_ONLY_WHEN_SET` enter only when set to something else than the
        value that keeps the earlier behaviour, so adding them kept every earlier key.
        """
        # Where the images live (memory or disk) and which device runs it do not change the numbers; unset
        # options (null) are left out, so adding an option whose null default keeps today's behaviour does not
        # rename every run. The method section holds only its own method's settings. The teacher enters by its
        # identity (``extra``: its run key or checkpoint digest), data.root by the dataset folder's name:
        # absolute paths differ between machines (kdlab.config.paths).
        # Nor do the NEVER_KEYED options; the other speed options do, so they enter the key, but only when set.
        excluded = {"name": True, "output": True, "device": True, "teacher": True,
                    "data": {"in_memory", *NEVER_KEYED["data"]}, "train": NEVER_KEYED["train"]}
        identity = self.model_dump(mode="json", exclude=excluded, exclude_none=True)
        for section in KEYED_ONLY_WHEN_SET:
            _drop_defaults(identity[section], section)
        if self.task == "classification" and not self.is_distillation:
            # A classification training recipe (a teacher, a PGD-AT baseline) uses no method: its method section
            # holds the default method's settings, which must not rename (and so retrain) every teacher when a
            # distillation default changes.
            identity.pop("method", None)
        if self.task == "detection":
            # train.rng changes nothing in detection (no per-sample draws: its augmentation and every draw are
            # batch-level from the epoch generator, which sample seeds like batch), so the change of its default
            # (issue #24) renamed no detection run.
            identity["train"].pop("rng", None)
        if self.task == "detection" and not self.is_distillation:
            # Before methods were a union, a detection training recipe carried the classification default's
            # name (mixacm) beside its feature settings: kept, so cached detection teachers keep their keys.
            identity["method"]["name"] = "mixacm"
        if self.data.root is not None:
            identity["data"]["root"] = Path(self.data.root).name
        marker = key_marker(self.data.dataset)  # statistics from the data (not the old CIFAR-10 default)
        model = self.trained_model
        if self.task == "classification" and marker and (model.mean is None or model.std is None):
            identity["normalization"] = marker
        payload = json.dumps([SCHEMA_VERSION, identity, list(extra)], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- loading and overrides
def _closest(name: str, candidates: list[str], noun: str = "keys") -> str:
    """`` (did you mean 'lr'?)`` for a close guess; with a weak guess or none, also every valid name."""
    scored = sorted(((difflib.SequenceMatcher(None, name.lower(), c.lower()).ratio(), c) for c in candidates),
                    key=lambda pair: -pair[0])
    guesses = [f"'{c}'" for ratio, c in scored[:2] if ratio >= 0.6]
    hint = f" (did you mean {' or '.join(guesses)}?)" if guesses else ""
    if not scored or scored[0][0] < 0.8:
        hint += f"; valid {noun}: {', '.join(candidates)}"
    return hint


def _section_model(location: tuple, method_name: Any = None) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``location`` (for did-you-mean suggestions); under ``method`` the
    settings class of the recipe's method."""
    model: Any = Recipe
    for index, part in enumerate(location[:-1]):
        if index == 0 and part == "method":
            model = SETTINGS.get(method_name)
            if model is None:
                return None
            continue
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _describe(error: dict, method_name: Any = None) -> str:
    location = tuple(part for part in error["loc"] if not str(part).startswith("function-after"))
    path = ".".join(str(part) for part in location)
    if error["type"] == "extra_forbidden":
        owner = _section_model(location, method_name)
        key = location[-1]
        where = ".".join(str(p) for p in location[:-1]) or "the top level"
        others = owner_of(str(key)) if location[:-1] == ("method",) else []
        if others and method_name not in others:
            return (f"unknown key '{key}' in method: '{key}' is a setting of {' and '.join(others)}, not of "
                    f"{method_name}; drop it or set method.name")
        hint = _closest(str(key), [k for k in owner.model_fields]) if owner else ""
        return f"unknown key '{key}' in {where}{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        given = error.get("input")
        return f"{path}: unknown value {given!r}{_closest(str(given), choices, 'values')}"
    if error["type"] == "missing":
        return f"missing required key '{path}'"
    got = error.get("input")
    shown = f" (got {got!r})" if got is not None and not isinstance(got, (dict, list)) else ""
    if error["type"] == "value_error" and message.startswith(str(got).strip()):
        shown = ""  # the message already starts with the value (perturbation sizes)
    return f"{path or 'recipe'}: {message}{shown}"


def _method_name(raw: dict) -> Any:
    method = raw.get("method")
    if isinstance(method, dict) and "name" in method:
        return method["name"]
    return DEFAULT_METHOD.get(raw.get("task", "classification"))


def validate_recipe(raw: Any, source: str = "recipe") -> Recipe:
    if not isinstance(raw, dict):
        raise KdlabError(f"{source}: a recipe must be a YAML mapping of sections (data:, train:, ...)")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as error:  # every problem, one line each (the CLI prints each as an error line)
        name = _method_name(raw)
        lines = list(dict.fromkeys(f"{source}: {_describe(item, name)}" for item in error.errors()))
        raise KdlabError("\n".join(lines)) from None


def apply_overrides(raw: dict, overrides: list[str], notes: list[str] | None = None) -> dict:
    """Apply ``a.b=c`` overrides to a raw recipe mapping; values are parsed as YAML scalars/lists.

    A ``method.name=X`` that changes the method drops the old method's settings that X does not take (those
    given by another ``--set method.KEY=...`` stay, so a wrong one is still refused); the line saying what was
    dropped is appended to ``notes`` for the command to print."""
    updated = _apply(raw, overrides)
    _drop_other_methods_settings(raw, updated, overrides, notes)
    return updated


def _drop_other_methods_settings(raw: dict, updated: dict, overrides: list[str], notes: list[str] | None) -> None:
    paths = [override.partition("=")[0].strip() for override in overrides]
    method = updated.get("method")
    if "method.name" not in paths or not isinstance(method, dict) or method.get("name") not in SETTINGS:
        return
    before = raw.get("method") if isinstance(raw.get("method"), dict) else {}
    old = before.get("name", DEFAULT_METHOD.get(raw.get("task", "classification")))
    new = method["name"]
    if old == new:
        return
    explicit = {path.split(".")[1] for path in paths if path.startswith("method.") and path.count(".") >= 1}
    takes = set(SETTINGS[new].model_fields)
    dropped = [key for key in before if key in method and key not in takes and key not in explicit]
    for key in dropped:
        del method[key]
    if dropped and notes is not None:
        notes.append(f"method.name={new}: dropped {', '.join(f'method.{key}' for key in dropped)} ({old} settings "
                     f"{new} does not take)")


def _apply(raw: dict, overrides: list[str]) -> dict:
    updated = copy.deepcopy(raw)
    for override in overrides:
        path, sep, text = override.partition("=")
        if not sep or not path.strip():
            raise KdlabError(f"--set '{override}': expected KEY=VALUE, e.g. --set train.epochs=5")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        keys = path.strip().split(".")
        node = updated
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise KdlabError(f"--set '{override}': '{key}' is not a section")
            node = child
        node[keys[-1]] = value
    return updated


def read_yaml(path: str | Path) -> Any:
    file = Path(path)
    if not file.is_file():
        raise KdlabError(f"recipe file '{path}' not found: check the path (recipes live in recipes/)")
    text = file.read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        tabbed = next((number for number, line in enumerate(text.splitlines(), 1)
                       if "\t" in line[:len(line) - len(line.lstrip())]), None)
        if tabbed is not None:
            raise KdlabError(f"{path}: line {tabbed} is indented with a tab; YAML indents with spaces: "
                             "replace the tabs with spaces") from None
        where = f" at line {mark.line + 1}" if mark else ""
        raise KdlabError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None


def read_recipe_file(path: str | Path) -> Any:
    """The raw mapping of a recipe file: ``name`` defaults to the file's stem, relative paths are made
    absolute against the file's folder (:mod:`kdlab.config.paths`)."""
    raw = read_yaml(path)
    if isinstance(raw, dict):
        raw.setdefault("name", Path(path).stem)
    return resolve_paths(raw, Path(path).parent)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override (``--set`` paths: from the current directory), validate and check a recipe file."""
    raw = read_recipe_file(path)
    if isinstance(raw, dict):
        raw = resolve_paths(apply_overrides(raw, overrides or []), Path.cwd())
    recipe = validate_recipe(raw, source=str(path))
    check_paths(recipe, str(path))
    return recipe
