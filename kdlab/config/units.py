"""Perturbation sizes (eps and step sizes): the one parser and formatter for recipes, the CLI and tables.

Images are in [0, 1], so a perturbation size is a fraction of the pixel range, written as a fraction like
``8/255`` or a decimal such as ``0.031``. A value above 1 is refused, with the ``N/255`` it most likely meant:
``eps: 8`` read as 8 in [0, 1] units would allow any image at all and make the run meaningless. Recipes
(``train.adversarial.eps``/``alpha``, ``eval.eps``/``alpha``) and the command line (``--eps``, ``--alpha``,
``--eps-sweep``) all go through :func:`parse_eps`, so the two entry points accept exactly the same values.
Tables and rows show sizes in units of 1/255 (:func:`format_eps`, :func:`eps_255`).

Durations shown to the user (progress, expected times) are ``H:MM:SS``: :func:`format_clock`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from kdlab.errors import KdlabError

__all__ = ["EpsError", "eps_255", "format_clock", "format_eps", "parse_eps", "parse_eps_list"]


class EpsError(KdlabError, ValueError):
    """An unreadable or out-of-range perturbation size (a ``KdlabError`` and a ``ValueError``)."""


def _shown(value: object) -> str:
    return str(value).strip() if isinstance(value, str) else repr(value)


def parse_eps(value: str | float, name: str = "epsilon") -> float:
    """``"8/255" -> 0.0313...``; also ``"0.03"``, ``"0"``, ``"1e-2"`` or a number. Must lie in [0, 1].

    ``name`` starts the message (``"--eps"``, ``"epsilon"``; ``""`` for recipes, whose errors are prefixed by
    the key). Raises :class:`EpsError` on anything else, suggesting ``N/255`` for a value above 1.
    """
    prefix = f"{name} " if name else ""
    shown = _shown(value)
    if isinstance(value, bool) or value is None:
        raise EpsError(f"{prefix}{shown} is not a number: write it like 8/255 or 0.031")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            if "/" in text:
                numerator, denominator = (part.strip() for part in text.split("/", 1))
                number = float(Fraction(numerator) / Fraction(denominator))
            else:
                number = float(text)
        except (ValueError, ZeroDivisionError, ArithmeticError):
            raise EpsError(f"{prefix}{shown} is not a number: write it like 8/255 or 0.031") from None
    if not math.isfinite(number) or number < 0:
        raise EpsError(f"{prefix}{shown} must be a finite number >= 0: write it like 8/255 or 0.031")
    if number > 1:
        pixels = f"{number:g}"
        raise EpsError(f"{prefix}{shown} is in pixel units of 0-255? write {pixels}/255 "
                       "(images are in [0, 1], so sizes are fractions like 8/255 or decimals <= 1)")
    return number


def parse_eps_list(text: str | Sequence[str | float], name: str = "epsilon") -> list[float]:
    """``"0,2/255,4/255,8/255"`` (or a sequence) -> list of floats, in the given order."""
    parts = list(text.split(",")) if isinstance(text, str) else list(text)
    parts = [p for p in parts if not (isinstance(p, str) and not p.strip())]
    if not parts:
        raise EpsError(f"empty {name} list: give values like 0,2/255,4/255,8/255")
    return [parse_eps(p, name) for p in parts]


def format_eps(eps: float | None) -> str:
    """``0.0313... -> "8/255"``; other sizes in 255ths too (``0.5 -> "127.5/255"``); None -> ``"-"``."""
    if eps is None:
        return "-"
    k = float(eps) * 255
    if abs(k - round(k)) < 1e-6:
        return "0" if round(k) == 0 else f"{round(k)}/255"
    return f"{k:.4g}/255"


def eps_255(eps: float | None) -> float | None:
    """A size in units of 1/255 (the column tables and rows show), rounded to 4 decimals."""
    return None if eps is None else round(float(eps) * 255, 4)


def format_clock(seconds: float | None) -> str:
    """``H:MM:SS`` (hours past 24 stay hours), or ``-:--:--`` when unknown (None, infinite or NaN)."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
