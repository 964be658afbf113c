"""The base of every recipe section (torch-free, so method settings can share it without importing recipes)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# A feature tap: a block index (1 = stem, 2.. = stages) or a module path (see ``kdlab.taps``).
BlockKey = int | str


class Section(BaseModel):
    """A frozen recipe section that refuses unknown keys (a typo fails at load time with the closest key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_fraction(value: Any) -> Any:
    """Accept ``8/255`` as well as ``0.0314`` for perturbation sizes; leave other types to pydantic."""
    if isinstance(value, str) and "/" in value:
        numerator, _, denominator = value.partition("/")
        try:
            return float(numerator) / float(denominator)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"'{value}' is not a number or a fraction like 8/255") from None
    return value


# A perturbation size (eps, step size): 8/255 or 0.0314; recipes and method settings share it.
Fraction = Annotated[float, BeforeValidator(parse_fraction), Field(ge=0)]
