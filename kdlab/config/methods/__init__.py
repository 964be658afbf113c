"""Method settings: the ``method:`` section of a recipe, one module per method, chosen by ``method.name``.

The recipe's ``method`` section is a union discriminated by ``name`` over :data:`SETTINGS`. A method's settings
live in the module of this package named after it (``kdlab/config/methods/mixacm.py``; ``pgd-at`` in
``pgd_at.py``), beside its step's module of the same name in :mod:`kdlab.methods`; the pieces several methods
share sit in :mod:`~kdlab.config.methods.base` (every method) and :mod:`~kdlab.config.methods.adversarial` (the
inner maximisation). Importing this package imports every module of it and registers each settings class it
defines that names its method (a ``name`` with a default: ``name: Literal["mine"] = "mine"``), so writing the
module is all that adds a method's settings: its one registration line is its step's, in
:data:`kdlab.methods.registry.METHODS`. A method defined elsewhere (a plug-in, a test) registers its settings
with its step through ``kdlab.methods.registry.register_method``.

Each class holds only its own method's settings, so a setting of another method (``method: {name: kd, acm:
...}``) is an unknown key at load time, and declares the tasks it fits (``tasks``). Nothing here imports torch,
:mod:`kdlab.methods` or :mod:`kdlab.config.recipe` (which builds the union from it), so loading a recipe stays fast
and free of import cycles.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from kdlab.config.methods.base import MethodSettings
from kdlab.config.schema import tap_fields

# The method a recipe gets when it names none: what each task trained before methods became plug-ins.
DEFAULT_METHOD = {"classification": "mixacm", "detection": "skd"}

SETTINGS: dict[str, type[MethodSettings]] = {}


def register_settings(cls: type[MethodSettings]) -> type[MethodSettings]:
    """Add a settings class to the union under its ``name`` default (its tap fields' declarations checked)."""
    name = cls.model_fields["name"].default
    if not isinstance(name, str):
        raise TypeError(f"{cls.__name__}.name needs a default, e.g. name: Literal['mine'] = 'mine'")
    tap_fields(cls)  # raises when a Taps declaration names a teacher field the section lacks
    if SETTINGS.get(name, cls) is not cls:
        raise ValueError(f"method '{name}' is already registered with {SETTINGS[name].__name__}")
    SETTINGS[name] = cls
    return cls


def methods_for(task: str) -> list[str]:
    return sorted(name for name, cls in SETTINGS.items() if task in cls.tasks)


def settings_class(name: object, task: str) -> type[MethodSettings]:
    """The settings class registered as ``name``; ``ValueError`` (one line) when unknown or not for ``task``."""
    names = methods_for(task)
    if not isinstance(name, str) or name not in SETTINGS:
        match = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f"did you mean '{match[0]}'? " if match else ""
        raise ValueError(f"unknown method.name '{name}': {hint}methods for {task}: {', '.join(names)}")
    cls = SETTINGS[name]
    if task not in cls.tasks:
        raise ValueError(f"method '{name}' is for {' and '.join(cls.tasks)} recipes, not {task}: set method.name: "
                         f"{DEFAULT_METHOD.get(task, names[0] if names else '?')} (methods for {task}: "
                         f"{', '.join(names)})")
    return cls


def owner_of(key: str) -> list[str]:
    """The registered methods that have a setting called ``key`` (for 'belongs to another method' errors)."""
    return sorted(name for name, cls in SETTINGS.items() if key in cls.model_fields and key != "name")


def _names_a_method(value: object, module: str) -> bool:
    """A settings class defined in ``module`` with a ``name`` default (a shared base class has none)."""
    return (isinstance(value, type) and issubclass(value, MethodSettings) and value.__module__ == module
            and isinstance(value.model_fields["name"].default, str))


def _register_the_package() -> None:
    """Register the settings of every method module of this package (in the order of the module names)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if _names_a_method(value, module.__name__):
                register_settings(value)


_register_the_package()
