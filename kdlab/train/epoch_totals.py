"""One epoch's running totals, kept on the training device and read back to the host only now and then.

Reading a tensor back (``.item()``, ``float()``, ``int()``, ``bool()``) waits for every queued GPU kernel: a
training loop that reads its loss, its accuracy count and its finiteness check every step stalls the GPU that
often. :class:`EpochTotals` adds each step's loss terms, correct count and a non-finite flag into device
tensors (a few tiny kernels, no wait) and reads them all at once, in one transfer, when the engine asks
(every ``train.log_every`` steps and at the end of the epoch).

Numbers are unchanged: each term is widened to float64 and summed in step order, the same IEEE additions as
summing Python floats (what the engine did when it read every step), so the epoch means in ``metrics.csv`` are
bit-identical. A non-finite loss is remembered with its step and its terms, so the error still names the
first bad step exactly, only up to ``log_every`` steps later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Reading:
    """What one read returns: epoch sums so far (loss terms, then ``loss``), the window's mean terms, the
    accuracy counts and, if any step's loss was not finite, the first such step with its terms."""

    sums: dict[str, float]
    window: dict[str, float]
    correct: int
    count: int
    bad_step: int | None = None
    bad_terms: dict[str, float] | None = None


def _as_float64(value: torch.Tensor | float) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    return torch.tensor(float(value), dtype=torch.float64)


class EpochTotals:
    """Device-side sums of one epoch; :meth:`add` never synchronises, :meth:`read` synchronises once."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.correct: torch.Tensor | int = 0
        self.count = 0  # a batch length: a host integer, never a device read
        self.steps = 0
        self._bad_step: torch.Tensor | None = None  # 0-d int64: the first non-finite step, 0 while none
        self._bad_terms: dict[str, torch.Tensor] = {}
        self._last_sums: dict[str, float] = {}
        self._last_steps = 0

    def add(self, step: int, loss: torch.Tensor, terms: dict[str, Any], correct: Any, count: Any) -> None:
        """Accumulate one step (``terms`` as the method named them; ``loss`` is added as ``loss``, last)."""
        values = {name: _as_float64(value) for name, value in terms.items()}
        values["loss"] = _as_float64(loss)
        for name, value in values.items():
            total = self.sums.get(name)
            if total is None:  # 0.0 + x, as the host sum started: keeps -0.0 -> 0.0 exactly as before
                total = torch.zeros((), dtype=torch.float64, device=value.device)
            self.sums[name] = total + value
        self.correct = self.correct + (correct.detach() if isinstance(correct, torch.Tensor) else int(correct))
        self.count += int(count)
        self.steps += 1
        bad = ~torch.isfinite(values["loss"])
        if self._bad_step is None:
            self._bad_step = torch.zeros((), dtype=torch.int64, device=values["loss"].device)
        first = bad & (self._bad_step == 0)
        self._bad_step = torch.where(first, torch.full_like(self._bad_step, step), self._bad_step)
        for name, value in values.items():
            held = self._bad_terms.get(name)
            self._bad_terms[name] = torch.where(first, value, value if held is None else held)

    def read(self) -> Reading:
        """Bring every total to the host in one transfer; ``window``: the means since the previous read."""
        names = list(self.sums)
        bad_names = list(self._bad_terms)
        parts: list[torch.Tensor] = [self.sums[name].reshape(1) for name in names]
        device = parts[0].device if parts else torch.device("cpu")
        for extra in (self.correct, self._bad_step if self._bad_step is not None else 0):
            parts.append(torch.as_tensor(extra, device=device).to(torch.float64).reshape(1))
        parts += [self._bad_terms[name].reshape(1) for name in bad_names]
        values = torch.cat(parts).tolist()  # the one host read
        sums = dict(zip(names, values[:len(names)]))
        correct, bad_step = int(values[len(names)]), int(values[len(names) + 1])
        bad_values = dict(zip(bad_names, values[len(names) + 2:]))
        steps = self.steps - self._last_steps
        window = {name: (total - self._last_sums.get(name, 0.0)) / max(1, steps) for name, total in sums.items()}
        self._last_sums, self._last_steps = sums, self.steps
        return Reading(sums=sums, window=window, correct=correct, count=self.count,
                       bad_step=bad_step or None, bad_terms=bad_values if bad_step else None)
