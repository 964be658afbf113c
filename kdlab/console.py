"""Rich terminal output: training progress with ETA, and result tables. No logic lives here."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typing_extensions import Self

from kdlab.engine import Reporter

console = Console(stderr=False)
error_console = Console(stderr=True)


def _progress_columns() -> tuple:
    """Name, bar, done/total, speed, elapsed and ETA: the columns every kdlab progress bar shows."""
    return (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())


def _format_terms(terms: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.3f}" for name, value in terms.items())


class RichReporter(Reporter):
    """One progress bar over the whole run (ETA covers all epochs), the latest loss terms beside it."""

    def __init__(self, title: str, out: Console | None = None):
        self.title = title
        self.console = out or console
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.images = 0
        self.elapsed_start = 0.0

    def fit_started(self, epochs: int, batches_per_epoch: int, start_epoch: int) -> None:
        self.epochs = epochs
        self.progress = Progress(*_progress_columns(), TextColumn("{task.fields[terms]}"), console=self.console)
        self.progress.start()
        total = epochs * batches_per_epoch
        done = (start_epoch - 1) * batches_per_epoch
        self.task = self.progress.add_task(
            f"{self.title} epoch {start_epoch}/{epochs}", total=total, completed=done, speed="", terms=""
        )

    def step_done(self, epoch: int, step: int, terms: dict[str, float], images: int) -> None:
        assert self.progress is not None and self.task is not None
        self.images += images
        task = self.progress.tasks[0]
        rate = self.images / task.elapsed if task.elapsed else 0.0
        self.progress.update(
            self.task,
            advance=1,
            description=f"{self.title} epoch {epoch}/{self.epochs}",
            speed=f"{rate:,.0f} img/s",
            terms=_format_terms(terms),
        )

    def epoch_done(self, epoch: int, metrics: dict[str, Any]) -> None:
        assert self.progress is not None
        shown = {k: v for k, v in metrics.items() if k not in {"epoch", "epoch_seconds", "images_per_s"}}
        self.progress.console.print(
            f"  epoch {epoch}: " + " ".join(f"{k}={v:.4g}" for k, v in shown.items() if isinstance(v, float))
        )

    def fit_finished(self) -> None:
        if self.progress is not None:
            self.progress.stop()


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


class AttackProgress:
    """``progress(name, done, total)`` callback for evaluations: one bar per attack with images/s and ETA."""

    def __init__(self, out: Console | None = None):
        self.progress = Progress(*_progress_columns(), console=out or console)
        self.tasks: dict[str, TaskID] = {}
        self.first: dict[str, tuple[float, int]] = {}

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, name: str, done: int, total: int) -> None:
        # Called after each batch: the rate is measured from the first report on, so the first batch's
        # duration (unknown here) never inflates it.
        now = time.perf_counter()
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, speed="")
            self.first[name] = (now, done)
        started, first_done = self.first[name]
        rate = (done - first_done) / (now - started) if now > started and done > first_done else None
        speed = f"{rate:,.1f} img/s" if rate is not None else ""
        self.progress.update(self.tasks[name], completed=done, total=total, speed=speed)
