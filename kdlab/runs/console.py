"""Rich terminal output: training and evaluation progress with images/s and ETA, and result tables.

Progress lines fit an 80-column terminal: epoch, bar, done/total, images/s, ETA and elapsed time always show;
the loss terms take what width is left, whole terms dropped from the end first (metrics.csv keeps them all).
No logic lives here."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text
from typing_extensions import Self

from kdlab.train.reporter import Reporter

console = Console(stderr=False)
error_console = Console(stderr=True)


def _fixed(column_class, *args, **kwargs):
    """A progress column that never wraps: rich shrinks the wrappable columns (the loss terms) first."""
    return column_class(*args, table_column=Column(no_wrap=True), **kwargs)


def _progress_columns(bar_width: int = 16) -> tuple:
    """Name, bar, done/total, speed, ETA and elapsed: the columns every kdlab progress bar shows. Together
    they take about 70 characters, so they fit an 80-column terminal; anything after them gives way first."""
    return (_fixed(TextColumn, "[bold]{task.description}"), BarColumn(bar_width=bar_width),
            _fixed(MofNCompleteColumn), _fixed(TextColumn, "{task.fields[speed]}"), _fixed(TextColumn, "eta"),
            _fixed(TimeRemainingColumn), _fixed(TimeElapsedColumn))


class _Terms:
    """The latest loss terms, as many whole ``name=value`` pairs as fit the width rich leaves for them (none
    at all on a narrow terminal): the bar and the ETA never give way to them. Every term is in metrics.csv."""

    def __init__(self, terms: list[str]):
        self.terms = terms

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(0, len(" ".join(self.terms)))

    def __rich_console__(self, console: Console, options: ConsoleOptions):
        shown = ""
        for term in self.terms:
            longer = f"{shown} {term}".strip()
            if len(longer) > options.max_width:
                break
            shown = longer
        yield Text(shown, no_wrap=True, overflow="crop")


class TermsColumn(ProgressColumn):
    def __init__(self):
        super().__init__(table_column=Column(no_wrap=False, min_width=0))

    def render(self, task) -> _Terms:
        return _Terms(task.fields.get("terms") or [])


def _format_terms(terms: dict[str, float]) -> list[str]:
    """``name=value`` with three significant digits; a ``loss_`` prefix is dropped."""
    return [f"{name.removeprefix('loss_')}={value:.3g}" for name, value in terms.items()]


class RichReporter(Reporter):
    """One progress bar over the whole run (ETA covers all epochs), the latest loss terms beside it."""

    def __init__(self, title: str, out: Console | None = None):
        self.title = title
        self.console = out or console
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.images = 0
        self.elapsed_start = 0.0
        self.last_call = (0, 0)  # (epoch, step) of the previous step_done

    def fit_started(self, epochs: int, batches_per_epoch: int, start_epoch: int) -> None:
        self.epochs = epochs
        resuming = f", resuming at epoch {start_epoch}" if start_epoch > 1 else ""
        self.console.print(f"[bold]{self.title}[/]: {epochs} epochs of {batches_per_epoch} batches{resuming}",
                           highlight=False)
        self.progress = Progress(*_progress_columns(), TermsColumn(), console=self.console)
        self.progress.start()
        total = epochs * batches_per_epoch
        done = (start_epoch - 1) * batches_per_epoch
        self.task = self.progress.add_task(f"ep {start_epoch}/{epochs}", total=total, completed=done,
                                           speed="", terms=[])

    def step_done(self, epoch: int, step: int, terms: dict[str, float], images: int) -> None:
        assert self.progress is not None and self.task is not None
        self.images += images
        task = self.progress.tasks[0]
        rate = self.images / task.elapsed if task.elapsed else 0.0
        # called every train.log_every steps: advance by the steps since the previous call (steps count per epoch)
        last_epoch, last_step = self.last_call
        advance = step - last_step if epoch == last_epoch and step > last_step else step
        self.last_call = (epoch, step)
        self.progress.update(
            self.task,
            advance=advance,
            description=f"ep {epoch}/{self.epochs}",
            speed=f"{rate:,.0f} img/s",
            terms=_format_terms(terms),
        )

    def note(self, text: str) -> None:
        """One line above the progress bar (the run's expected time, :mod:`kdlab.runs.estimate`)."""
        (self.progress.console if self.progress is not None else self.console).print(f"  {text}", highlight=False)

    def epoch_done(self, epoch: int, metrics: dict[str, Any]) -> None:
        assert self.progress is not None
        shown = {k: v for k, v in metrics.items() if k not in {"epoch", "epoch_seconds", "images_per_s"}}
        self.progress.console.print(
            f"  epoch {epoch}: " + " ".join(f"{k}={v:.4g}" for k, v in shown.items() if isinstance(v, float))
        )

    def fit_finished(self) -> None:
        if self.progress is not None:
            self.progress.stop()

    def evaluation_progress(self, what: str) -> AttackProgress:
        """The progress of the evaluation after training (clean pass, then each attack): its own bars."""
        self.console.print(f"[bold]{self.title}[/]: evaluating {what}", highlight=False)
        return AttackProgress(self.console)


def results_table(title: str, rows: Iterable[dict[str, Any]], columns: list[str]) -> Table:
    rows = list(rows)
    table = Table(title=title, title_justify="left")
    for column in columns:
        numeric = all(isinstance(row.get(column), (int, float)) or row.get(column) is None for row in rows)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*[_cell(row.get(column)) for column in columns])
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _clock(seconds: float | None) -> str:
    """``H:MM:SS``, or ``-:--:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _attack_columns(bar_width: int = 16) -> tuple:
    """The evaluation bar: name, bar, done/total, images/s, ETA and elapsed time -- both measured from the
    attack's start, which the bar is told (it is created at the attack's first report)."""
    return (_fixed(TextColumn, "[bold]{task.description}"), BarColumn(bar_width=bar_width),
            _fixed(MofNCompleteColumn), _fixed(TextColumn, "{task.fields[speed]}"),
            _fixed(TextColumn, "eta {task.fields[eta]}"), _fixed(TimeElapsedColumn))


class AttackProgress:
    """``progress(name, done, total)`` callback for evaluations (called after every batch).

    On a terminal: one bar per attack with images/s, ETA and elapsed time. Elsewhere (output to a log file or a
    pipe, where a live bar shows nothing until it ends): a plain line -- attack, images done/total, images/s,
    elapsed, ETA -- every ``interval`` seconds and when an attack (or an AutoAttack component) ends. Each pass
    reports ``done = 0`` as it starts: each is timed from there (a caller that does not is timed from the previous
    report, or ``__enter__``: attacks run one after another), so its first batch counts.
    ``clock``: seconds (default the bar's clock); ``plain``: force either form (default: not a terminal)."""

    def __init__(self, out: Console | None = None, *, interval: float = 30.0, clock: Any = None,
                 plain: bool | None = None):
        self.console = out or console
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.interval = interval
        self.clock = clock
        self.progress = Progress(*_attack_columns(), console=self.console)
        self.tasks: dict[str, TaskID] = {}
        self.started: dict[str, float] = {}
        self.previous: float | None = None  # the time of the previous report: the next attack starts there
        self.printed: float | None = None  # the time of the last plain line

    def _now(self) -> float:
        return self.clock() if self.clock is not None else self.progress.get_time()

    def __enter__(self) -> Self:
        self.previous = self.printed = self._now()
        if not self.plain:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self.plain:
            self.progress.stop()

    def note(self, text: str) -> None:
        """One line for the user (above the bars on a terminal): a skipped attack, an expected time."""
        self.console.print(text, highlight=False, soft_wrap=True)

    def __call__(self, name: str, done: int, total: int) -> None:
        now = self._now()
        fresh = done == 0 or name not in self.started  # a pass starts (0) or reports without having said so
        if fresh:
            self.started[name] = now if done == 0 or self.previous is None else self.previous
        since = self.started[name]
        self.previous = now
        rate = done / (now - since) if now > since and done > 0 else None
        eta = (total - done) / rate if rate else (0.0 if done >= total else None)
        speed = f"{rate:,.1f} img/s" if rate is not None else ""
        if self.plain:
            if done == 0:
                return
            if done >= total or self.printed is None or now - self.printed >= self.interval:
                self.printed = now
                self.console.print(f"{name}: {done}/{total} images, {speed or '- img/s'}, elapsed "
                                   f"{_clock(now - since)}, eta {_clock(eta)}", highlight=False, soft_wrap=True)
            return
        if fresh:  # each pass its own bar (the clean pass runs again for AutoAttack's timed first images)
            self.tasks[name] = self.progress.add_task(name, total=total, speed="", eta="")
            for task in self.progress.tasks:
                if task.id == self.tasks[name]:
                    task.start_time = since  # elapsed and ETA from the attack's start, not its first report
        self.progress.update(self.tasks[name], completed=done, total=total, speed=speed, eta=_clock(eta))
