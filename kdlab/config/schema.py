"""The base of every recipe section (torch-free, so method settings can share it without importing recipes)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from kdlab.config.units import parse_eps

# A feature tap: a block index (1 = stem, 2.. = stages) or a module path (see ``kdlab.models.taps``).
BlockKey = int | str


class Section(BaseModel):
    """A frozen recipe section that refuses unknown keys (a typo fails at load time with the closest key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_perturbation(value: Any) -> Any:
    """Perturbation sizes use the one parser of :mod:`kdlab.config.units` (``8/255`` or a decimal <= 1)."""
    return parse_eps(value, name="")


# An eps or step size in [0, 1] pixel units: 8/255 or 0.031; 8 is refused with "write 8/255". Recipes and method
# settings (the adversarial methods' inner maximisation) share it.
Perturbation = Annotated[float, BeforeValidator(parse_perturbation)]
