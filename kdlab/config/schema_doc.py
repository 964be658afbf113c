"""``kdlab schema [SECTION]``: every recipe key with its type, default, allowed values and description.

Generated from the pydantic models of :mod:`kdlab.config.recipe` -- the schema the validator enforces -- so the
listing cannot drift from what a recipe accepts: types and bounds come from the annotations and ``Field``
constraints, descriptions from ``Field(description=...)``, allowed values from ``Literal`` types.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kdlab.errors import KdlabError


@dataclass(frozen=True)
class KeyDoc:
    key: str  # dotted, e.g. train.adversarial.eps
    type: str
    default: str
    allowed: str
    description: str


PERTURBATION = "fraction <= 1 (8/255 or 0.031)"


def _is_perturbation(metadata: list[Any]) -> bool:
    """Sizes parsed by :func:`kdlab.config.recipe.parse_perturbation` (kdlab.config.units): fractions of the range."""
    names = [getattr(getattr(item, "func", None), "__name__", "") for item in metadata]
    return "parse_perturbation" in names


def _submodel(annotation: Any) -> type[BaseModel] | None:
    candidates = typing.get_args(annotation) or (annotation,)
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "str"
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        optional = type(None) in typing.get_args(annotation)
        return " | ".join(dict.fromkeys(parts)) + (" | null" if optional else "")
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return PERTURBATION if _is_perturbation(extra) else _type_name(base)
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"mapping of {_type_name(key)} to {_type_name(value)}"
    return getattr(annotation, "__name__", str(annotation))


def _allowed(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is Literal:
        return [str(v) for v in typing.get_args(annotation)]
    values: list[str] = []
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Literal:
            values += [str(v) for v in typing.get_args(arg)]
    return values


def _bounds(info: FieldInfo) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    shown = []
    for item in info.metadata:
        for name, symbol in symbols.items():
            value = getattr(item, name, None)
            if value is not None:
                shown.append(f"{symbol} {value}")
    return " ".join(shown)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default is PydanticUndefined else info.default  # type: ignore
    if value is None:
        return "null"
    if isinstance(value, float) and 0 < value < 1 and abs(value * 255 - round(value * 255)) < 1e-9:
        return f"{round(value * 255)}/255"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return str(value) if value else ("[]" if isinstance(value, list) else "{}")
    return str(value)


def _method_rows(key: str) -> list[KeyDoc]:
    """``method``: its name (every registered method), then each method's own settings, marked ``[name]``."""
    from kdlab.config.methods import SETTINGS

    rows = [KeyDoc(f"{key}.name", "str", "by task", ", ".join(sorted(SETTINGS)),
                   "the method; the other keys of method: belong to it (default: mixacm for classification, "
                   "skd for detection)")]
    for method, settings in sorted(SETTINGS.items()):
        for row in _walk(settings, f"{key}."):
            if row.key != f"{key}.name":
                rows.append(KeyDoc(row.key, row.type, row.default, row.allowed,
                                   f"[{method}] {row.description}".strip()))
    return rows


def _walk(model: type[BaseModel], prefix: str) -> list[KeyDoc]:
    from kdlab.config.methods.base import MethodSettings

    rows: list[KeyDoc] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if _submodel(info.annotation) is MethodSettings:
            rows += _method_rows(key)
            continue
        nested = _submodel(info.annotation)
        if nested is not None:
            rows += _walk(nested, f"{key}.")
            continue
        base = PERTURBATION if _is_perturbation(info.metadata) else _type_name(info.annotation)
        kind = " ".join(part for part in (base, _bounds(info)) if part)
        rows.append(KeyDoc(key, kind, _default(info), ", ".join(_allowed(info.annotation)),
                           " ".join((info.description or "").split())))
    return rows


def sections() -> list[str]:
    """Every section of a recipe: top-level sections and nested ones (train.adversarial)."""
    from kdlab.config.methods import SETTINGS
    from kdlab.config.methods.base import MethodSettings
    from kdlab.config.recipe import Recipe

    def names(model: type[BaseModel], prefix: str) -> list[str]:
        found = []
        for name, info in model.model_fields.items():
            nested = _submodel(info.annotation)
            if nested is MethodSettings:
                inner = {section for settings in SETTINGS.values() for section in names(settings, f"{prefix}{name}.")}
                found += [f"{prefix}{name}", *sorted(inner)]
            elif nested is not None:
                found += [f"{prefix}{name}", *names(nested, f"{prefix}{name}.")]
        return found

    return names(Recipe, "")


def key_docs(section: str | None = None) -> list[KeyDoc]:
    """The documentation rows of every recipe key, or of one section (``train``, ``train.adversarial``)."""
    from kdlab.config.recipe import Recipe, _closest

    rows = _walk(Recipe, "")
    if section is None:
        return rows
    section = section.strip().strip(".")
    known = sections()
    if section not in known:
        raise KdlabError(f"unknown recipe section '{section}'{_closest(section, known, 'sections')}")
    return [row for row in rows if row.key.startswith(section + ".")]


def render(section: str | None = None) -> str:
    """Plain text: one line per key (key, type, default, allowed values, description), aligned in columns."""
    rows = key_docs(section)
    width_key = max(len("key"), *(len(r.key) for r in rows))
    width_type = max(len("type"), *(len(r.type) for r in rows))
    width_default = max(len("default"), *(len(r.default) for r in rows))
    header = f"{'key':<{width_key}}  {'type':<{width_type}}  {'default':<{width_default}}"
    lines = [f"{header}  allowed values / description"]
    for r in rows:
        allowed = f"one of: {r.allowed}" if r.allowed else ""
        tail = "; ".join(part for part in (allowed, r.description) if part)
        cells = f"{r.key:<{width_key}}  {r.type:<{width_type}}  {r.default:<{width_default}}"
        lines.append(f"{cells}  {tail}".rstrip())
    return "\n".join(lines)
