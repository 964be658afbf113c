"""The vocabulary of recipe sections (torch-free, so method settings share it without importing recipes).

:class:`Section` (the base of every section), the value types sections share (:data:`Perturbation`,
:data:`BlockKey`), and the declaration of feature-tap fields (:class:`Taps`) with the walk that finds them
(:func:`tap_fields`, :func:`used_taps`), which the run key, the plan check and ``kdlab inspect`` read.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict

from kdlab.config.units import parse_eps

# A feature tap: a block index (1 = stem, 2.. = stages) or a module path (see ``kdlab.models.taps``).
BlockKey = int | str


@dataclass(frozen=True)
class Taps:
    """Declares a settings field as feature-tap keys of the student, whatever the field's name::

        layers: Annotated[list[BlockKey], Taps(teacher="teacher_layers")] = Field(...)
        teacher_layers: list[BlockKey] | None = None

    ``teacher`` names the field of the same section that holds the paired teacher keys (null there: the same
    keys as the student's). The field holds one :data:`BlockKey` or a list of them. Declared fields are what the
    run key canonicalises (a module path that names a numbered block becomes its index, ``kdlab.runs.run``), what
    the plan check resolves on both models before any work (``kdlab.check.models``) and what ``kdlab inspect``
    pairs. A section whose ``weight`` is 0 taps nothing: its fields are not checked or paired.
    """

    teacher: str


@dataclass(frozen=True)
class TapField:
    """A declared tap field: ``path``, the nested sections from the settings down to the one holding it
    (``("acm",)`` for ``method.acm.blocks``; empty at the top); ``student`` and ``teacher``, the two fields."""

    path: tuple[str, ...]
    student: str
    teacher: str

    def key(self, field: str, prefix: str = "method") -> str:
        """The recipe key of ``field`` (``student`` or ``teacher``): ``method.acm.teacher_blocks``."""
        return ".".join((prefix, *self.path, field))


def _sections_in(annotation: Any) -> list[type[BaseModel]]:
    """The section classes an annotation holds: itself, or the members of a union (``PKDSpec | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, types.UnionType):
        return [cls for arg in get_args(annotation) for cls in _sections_in(arg)]
    return []


def tap_fields(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[TapField]:
    """Every field of ``model`` and of its nested sections declared with :class:`Taps`, in field order;
    ``TypeError`` when a declaration names a teacher field its section lacks."""
    found = []
    for name, info in model.model_fields.items():
        for marker in (item for item in info.metadata if isinstance(item, Taps)):
            if marker.teacher not in model.model_fields:
                raise TypeError(f"{model.__name__}.{name} pairs with Taps(teacher={marker.teacher!r}), a field "
                                f"{model.__name__} does not have: add it (list[BlockKey] | None = None)")
            found.append(TapField(path, name, marker.teacher))
        for section in _sections_in(info.annotation):
            found += tap_fields(section, (*path, name))
    return found


def used_taps(settings: BaseModel) -> list[tuple[TapField, list[BlockKey], list[BlockKey] | None]]:
    """(field, student keys, teacher keys or None for "the same keys") of every declared tap field of
    ``settings`` whose sections are all set and in use (none of them, the settings included, has weight 0)."""
    found = []
    for tap in tap_fields(type(settings)):
        sections = [settings]
        for name in tap.path:
            sections.append(getattr(sections[-1], name))
            if sections[-1] is None:
                break
        if sections[-1] is None or any(getattr(section, "weight", 1) == 0 for section in sections):
            continue
        keys, teacher = getattr(sections[-1], tap.student), getattr(sections[-1], tap.teacher)
        found.append((tap, keys if isinstance(keys, list) else [keys],
                      None if teacher is None else teacher if isinstance(teacher, list) else [teacher]))
    return found


def section_at(data: dict, path: tuple[str, ...]) -> dict | None:
    """The nested dict at ``path`` of a dumped section (None when a section on the way is absent or null)."""
    for name in path:
        data = data.get(name) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else None


class Section(BaseModel):
    """A frozen recipe section that refuses unknown keys (a typo fails at load time with the closest key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_perturbation(value: Any) -> Any:
    """Perturbation sizes use the one parser of :mod:`kdlab.config.units` (``8/255`` or a decimal <= 1)."""
    return parse_eps(value, name="")


# An eps or step size in [0, 1] pixel units: 8/255 or 0.031; 8 is refused with "write 8/255". Recipes and method
# settings (the adversarial methods' inner maximisation) share it.
Perturbation = Annotated[float, BeforeValidator(parse_perturbation)]
