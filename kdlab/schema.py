"""The base of every recipe section (torch-free, so method settings can share it without importing recipes)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# A feature tap: a block index (1 = stem, 2.. = stages) or a module path (see ``kdlab.taps``).
BlockKey = int | str


class Section(BaseModel):
    """A frozen recipe section that refuses unknown keys (a typo fails at load time with the closest key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
