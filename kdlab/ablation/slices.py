"""An ablation in time slices (``kdlab ablate --time-limit 9m``): stop cleanly before the limit, say what is left.

GPU time often comes in short slices (pre-emptible jobs, time-limited queues). With a :class:`TimeSlice` the
ablation (:func:`kdlab.ablation.execute.run_ablation`):

* starts a cell only when it fits in the time left: its estimate is the longest cell that trained in this slice
  (measured on the slice's clock), else the longest ``wall_seconds`` a reused cell recorded; a cell longer than a
  whole slice starts when one of its epochs fits, since it can only progress in pieces; with no measurement yet
  the cell starts and the training loop guards it;
* passes a deadline to the training loop (:func:`kdlab.train.engine.deadline`), which stops a running cell (or the
  shared teacher) at an epoch boundary when its next epoch would pass the limit (``last.pt`` keeps its epochs);
* then raises :class:`SliceStopped`, which lists the cells finished, stopped and not started and the command
  that continues (the same one); ``kdlab ablate`` prints it and exits with :data:`STOPPED_EXIT` (3).

The limit bounds when training stops, not the final evaluation of a cell's last epoch: the cell estimate, taken
from whole cells, includes it. A study's declared final evaluation (``final:``) runs with each cell, so the estimate
of a cell trained here includes it too (a reused cell adds its recorded ``final_eval_seconds``); after training, a
cell's final evaluation starts only when its expected time is left
(:data:`kdlab.ablation.execute.FIRST_EVAL_SHARE` before any was measured), else the cell is reported as stopped
and the next slice evaluates it. Rerunning the same command reuses finished cells and resumes stopped ones;
:mod:`kdlab.ablation.pack` carries the state to another machine.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kdlab.errors import KdlabError
from kdlab.results import blank
from kdlab.results import now as iso_now

STOPPED_EXIT = 3  # kdlab ablate's exit code when --time-limit stopped it (scripts test it to loop)

def clock() -> float:
    """The slices' clock (seconds since the epoch: a deadline passed to worker processes means the same there)."""
    return time.time()


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str, option: str = "--time-limit") -> float:
    """Seconds of ``90s``, ``9m``, ``1h30m`` (hours, minutes, seconds in that order, each optional)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise KdlabError(f"{option} '{text}': expected a duration such as 90s, 9m or 1h30m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise KdlabError(f"{option} '{text}': the limit must be longer than 0 s, e.g. {option} 9m")
    return float(total)


@dataclass
class TimeSlice:
    """``limit`` seconds from its creation, on the clock ``now`` (default :func:`clock`)."""

    limit: float
    text: str = ""  # as typed, for the messages
    now: Callable[[], float] | None = None
    started: float = field(init=False)
    started_iso: str = field(init=False)  # a cell whose summary finished before this was reused, not trained
    trained: list[float] = field(default_factory=list)  # cells trained (or resumed) in this slice, on its clock
    reused: list[float] = field(default_factory=list)  # recorded wall_seconds of reused cells

    def __post_init__(self) -> None:
        self.now = self.now or clock
        self.started, self.started_iso = self.now(), iso_now()

    def deadline(self):
        """The training loop's :class:`kdlab.train.engine.Deadline` (torch is imported only when one runs)."""
        from kdlab.train.engine import Deadline

        return Deadline(self.started + self.limit, self.now)

    def left(self) -> float:
        return self.started + self.limit - self.now()

    def measured(self, summary: dict, seconds: float) -> None:
        """Count a finished cell: ``seconds`` on this slice's clock if it trained here, else its recorded time."""
        if str(summary.get("finished_at") or "") < self.started_iso:
            if isinstance(summary.get("wall_seconds"), (int, float)) and not blank(summary["wall_seconds"]):
                final = summary.get("final_eval_seconds")  # a study's final evaluation, run with its cell
                final = float(final) if isinstance(final, (int, float)) and not blank(final) else 0.0
                self.reused.append(float(summary["wall_seconds"]) + final)
        else:
            self.trained.append(seconds)

    def estimate(self) -> float | None:
        """A cell's expected seconds: the longest trained here, else the longest reused; None before any."""
        if self.trained:
            return max(self.trained)
        return max(self.reused) if self.reused else None

    def fits(self, epochs: int) -> bool:
        """Whether a cell of ``epochs`` epochs may start now (the module docstring says when)."""
        left, needed = self.left(), self.estimate()
        if left <= 0:
            return False
        if needed is None or needed <= left:
            return True
        return needed > self.limit and needed / max(1, epochs) <= left


@dataclass
class SliceStopped(Exception):
    """``kdlab ablate --time-limit`` stopped before every cell finished: what is done and what remains."""

    limit: str
    finished: list[str]
    stopped: list[str]  # "label seed N (epoch k of n kept)"
    not_started: list[str]
    command: str
    tables: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        lines = [(f"stopped for time (--time-limit {self.limit}): {len(self.finished)} finished, "
                  f"{len(self.stopped)} stopped at an epoch boundary, {len(self.not_started)} not started")]
        for title, cells in (("finished", self.finished), ("stopped (last.pt kept, resumes)", self.stopped),
                             ("not started", self.not_started)):
            if cells:
                lines.append(f"  {title}: {', '.join(cells)}")
        if self.command:
            lines.append(f"continue with the same command: {self.command}")
        if self.tables:
            lines.append("carry the state to another machine: kdlab pack " + " ".join(self.tables)
                         + " --out kdlab-state  (there: kdlab unpack kdlab-state, then the same command)")
        return lines
