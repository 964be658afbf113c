"""Rich terminal output: training and evaluation progress with images/s and ETA, and result tables that fit
the terminal (never a cut number or name).

Progress lines fit an 80-column terminal: epoch, bar, done/total, images/s, ETA and elapsed time always show;
the loss terms take what width is left, whole terms dropped from the end first (metrics.csv keeps them all).
No logic lives here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group
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

from kdlab.config.units import format_clock
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


# --------------------------------------------------------------------------- tables that fit the terminal
# A table never cuts a number or a name: each column is at least as wide as its longest word, cells wrap
# between words, headers longer than their column's words are abbreviated (a legend under the table gives
# the full name), and a table that still does not fit is split into several, each repeating the key column.
_BORDER = 3  # per column: one space of padding on each side and one vertical line (plus one closing line)


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def _abbreviation(header: str, width: int, taken: set[str]) -> str:
    """``header`` cut to ``width`` characters ending in a dot (``clean_accuracy`` -> ``clea.``), unique."""
    for size in range(max(width, 3), cell_len(header)):
        short = header[:size - 1].rstrip("_- ") + "."
        if short not in taken:
            return short
    return header


@dataclass
class _Layout:
    headers: list[str]
    blocks: list[list[int]]       # column indices per printed table (the key columns repeated)
    widths: list[list[int]]       # content widths per block
    legend: dict[str, str]        # abbreviation -> full header


def _need(widths: list[int]) -> int:
    return sum(widths) + _BORDER * len(widths) + 1


def _shrink(natural: list[int], minimum: list[int], width: int) -> list[int]:
    """Narrow the widest columns first, never below their longest word; below it only if nothing else fits."""
    widths = list(natural)
    while _need(widths) > width:
        shrinkable = [i for i in range(len(widths)) if widths[i] > minimum[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    while _need(widths) > width and max(widths) > 1:  # a single word wider than the terminal: folded
        widths[widths.index(max(widths))] -= 1
    return widths


def fit_columns(headers: list[str], cells: list[list[str]], width: int, short: dict[str, str] | None = None,
                key_columns: int = 1, whole: list[bool] | None = None) -> _Layout:
    """How a table of ``cells`` (rows of strings) under ``headers`` fits ``width`` terminal columns: wrapped
    between words (never inside a cell marked ``whole``, e.g. ``28.90 ± 4.28``), else with abbreviated headers,
    else split into several tables that repeat the first ``key_columns``."""
    headers = list(headers)
    whole = whole or [False] * len(headers)

    def words(i: int) -> int:  # the narrowest the cells of column i can wrap to
        return max(((cell_len(row[i]) if whole[i] else _longest_word(row[i])) for row in cells), default=0)

    def natural(i: int) -> int:
        return max([cell_len(headers[i]), *(cell_len(row[i]) for row in cells)])

    def minimum(i: int) -> int:
        return max(_longest_word(headers[i]), words(i), 1)

    def abbreviate(columns: list[int]) -> dict[str, str]:
        """Abbreviate the headers of ``columns`` whose words are wider than their cells (the most saving first)
        until those columns fit; the legend of what was abbreviated."""
        legend: dict[str, str] = {}
        for i in sorted(columns, key=lambda i: words(i) - _longest_word(headers[i])):
            if _need([minimum(j) for j in columns]) <= width or _longest_word(headers[i]) <= words(i):
                continue
            full, label = headers[i], (short or {}).get(headers[i])
            if label is None or _longest_word(label) >= _longest_word(full) or label in headers:
                label = _abbreviation(full, words(i), set(headers) | set(legend))
            if label != full:
                headers[i], legend[label] = label, full
        return legend

    def fits(columns: list[int]) -> bool:
        return _need([minimum(i) for i in columns]) <= width

    every = list(range(len(headers)))
    keys = every[:key_columns]
    legend: dict[str, str] = {}
    if not fits(every):
        original = list(headers)
        legend = abbreviate(every)
        if not fits(every):  # abbreviations alone do not make it fit: several tables, full headers where they fit
            headers[:], legend = original, {}
    blocks: list[list[int]] = []
    block: list[int] = []
    for i in every[len(keys):]:
        if block and fits([*block, i]):
            block.append(i)
            continue
        if block:
            blocks.append(block)
        block = [*keys, i] if fits([*keys, i]) else [i]  # a column too wide to share with the keys: alone
    blocks.append(block or keys)
    for block in blocks:
        if not fits(block):
            legend.update(abbreviate(block))
    ordered = {headers[i]: legend[headers[i]] for i in every if headers[i] in legend}
    widths = [_shrink([natural(i) for i in b], [minimum(i) for i in b], width) for b in blocks]
    return _Layout(headers, blocks, widths, ordered)


class FittedTable:
    """A titled table (``rows`` are dicts keyed by ``columns``) laid out for the width it is printed at: nothing
    is cut (see :func:`fit_columns`). ``short`` offers abbreviations for long headers (``clean_acc`` -> ``clean``);
    ``notes`` are printed under the table."""

    def __init__(self, title: str | None, rows: Iterable[dict[str, Any]], columns: list[str],
                 short: dict[str, str] | None = None, notes: Iterable[str] = (), key_columns: int = 1):
        rows = list(rows)
        self.title, self.columns, self.short, self.key_columns = title, list(columns), short, key_columns
        self.numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows)
                        for c in self.columns]
        self.cells = [[_cell(row.get(c)) for c in self.columns] for row in rows]
        self.notes = list(notes)

    @classmethod
    def from_strings(cls, title: str | None, header: list[str], cells: list[list[str]], notes: Iterable[str] = (),
                     numeric: list[bool] | None = None) -> FittedTable:
        table = cls(title, [], header, notes=notes)
        table.cells = [list(row) + [""] * (len(header) - len(row)) for row in cells]
        table.numeric = numeric or [False] * len(header)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions):
        layout = fit_columns(self.columns, self.cells, options.max_width, self.short, self.key_columns,
                             whole=self.numeric)
        for n, (block, widths) in enumerate(zip(layout.blocks, layout.widths)):
            title = self.title if n == 0 else None
            if len(layout.blocks) > 1:  # one table in several: the title once, then "(2/3)"
                title = f"{title or ''} ({n + 1}/{len(layout.blocks)})".strip()
            table = Table(title=title, title_justify="left")
            for i, width in zip(block, widths):
                table.add_column(layout.headers[i], justify="right" if self.numeric[i] else "left", width=width,
                                 overflow="fold")
            for row in self.cells:
                table.add_row(*[row[i] for i in block])
            yield table
        for note in [*(f"{short} = {full}" for short, full in layout.legend.items()), *self.notes]:
            yield Text(note)


def results_table(title: str, rows: Iterable[dict[str, Any]], columns: list[str],
                  short: dict[str, str] | None = None, notes: Iterable[str] = ()) -> FittedTable:
    """A result table that fits the terminal it is printed on (:class:`FittedTable`)."""
    return FittedTable(title, rows, columns, short=short, notes=notes)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _markdown_cells(line: str) -> list[str]:
    inner = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def markdown_view(text: str) -> Group:
    """A Markdown page kdlab writes (a ``# title``, prose, one pipe table, notes) as a fitted table with its prose
    around it: what the terminal shows of an ablation's ``.md``, an evaluation table or the runs table."""
    lines = text.splitlines()
    table_at = [i for i, line in enumerate(lines) if line.lstrip().startswith("|")]
    if len(table_at) < 2:
        return Group(Text(text))
    first, last = table_at[0], table_at[-1]
    title = next((line.lstrip("# ").strip() for line in lines[:first] if line.startswith("#")), None)
    before = [line for line in lines[:first] if line.strip() and not line.startswith("#")]
    header = _markdown_cells(lines[first])
    body = [_markdown_cells(line) for line in lines[first + 1:last + 1] if not set(line.strip()) <= set("|-: ")]
    numeric = [all(re.fullmatch(r"[-+]?[\d.]+( ± [\d.]+)?|—|-|", row[i] if i < len(row) else "") is not None
                   for row in body) for i in range(len(header))]
    notes = [line for line in lines[last + 1:] if line.strip()]
    return Group(*([Text(title, style="bold")] if title else []), *(Text(line) for line in before),
                 FittedTable.from_strings(None, header, body, notes=notes, numeric=numeric))


def print_markdown(out: Console, text: str) -> None:
    """A Markdown page kdlab wrote: on a terminal as a table that fits it (:func:`markdown_view`); into a file or
    a pipe as the Markdown itself, each line whole."""
    if out.is_terminal:
        out.print(markdown_view(text))
    else:
        out.print(text, soft_wrap=True, highlight=False, markup=False)


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
                                   f"{format_clock(now - since)}, eta {format_clock(eta)}",
                                   highlight=False, soft_wrap=True)
            return
        if fresh:  # each pass its own bar (the ensemble's own clean pass, the sanity checks' timed first images)
            self.tasks[name] = self.progress.add_task(name, total=total, speed="", eta="")
            for task in self.progress.tasks:
                if task.id == self.tasks[name]:
                    task.start_time = since  # elapsed and ETA from the attack's start, not its first report
        self.progress.update(self.tasks[name], completed=done, total=total, speed=speed, eta=format_clock(eta))
