"""PNG figures for robustness curves and ablation tables (matplotlib's Agg canvas: no display, no pyplot state).
Every title is wrapped (and if need be shrunk) to lie inside its figure.

- :func:`plot_robustness_curve`: accuracy vs eps (x axis in units of 1/255), one line per attack, from the rows
  of :meth:`kdlab.robustness.accuracy.AttackResult.row` (columns ``attack``, ``eps`` or ``eps_255``, ``accuracy``).
- :func:`plot_cost_robustness`: one point per method, robust accuracy against training cost, seed error bars.
- :func:`plot_ablation_bars`: grouped bars with mean +- std error bars, one group per row label, one bar per
  value column; rows repeated per seed are averaged (std over seeds) when no error columns are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kdlab.errors import KdlabError

__all__ = ["plot_ablation_bars", "plot_cost_robustness", "plot_robustness_curve", "png_source"]


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise KdlabError(f"{what}: the table has no column(s) {', '.join(missing)} "
                         f"(it has {', '.join(map(str, table.columns)) or 'none'}): pass a table with them")


def _fit_title(fig: Figure, ax, title: str, fontsize: float = 10.0) -> None:
    """Set ``ax``'s title wrapped to the figure's width (long words are never split), shrinking its font down to
    6 pt if wrapping is not enough, so the title's text lies inside the figure; call once the layout is set."""
    import textwrap

    FigureCanvasAgg(fig)
    width_pt = fig.get_figwidth() * 72 * 0.92
    lines = title.splitlines() or [""]
    size = fontsize
    while True:
        chars = max(20, int(width_pt / (0.55 * size)))  # about 0.55 em per character of the default sans font
        wrapped = "\n".join(textwrap.fill(line, chars, break_long_words=False) for line in lines)
        text = ax.set_title(wrapped, fontsize=size)
        fig.canvas.draw()
        box, frame = text.get_window_extent(), fig.bbox
        if (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1) or size <= 6:
            return
        size -= 0.5


def _save(fig: Figure, path: str | Path, source: str | None = None) -> Path:
    """Write the PNG; ``source`` (what it was drawn from) goes into its ``Source`` text chunk (:func:`png_source`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=150, format="png", metadata={"Source": source} if source else None)
    return path


def png_source(path: str | Path) -> str | None:
    """The ``Source`` text a PNG was saved with (``source=`` of the plot functions), None when it has none. Read
    with Pillow (matplotlib's own image library)."""
    from PIL import Image

    with Image.open(path) as image:
        return getattr(image, "text", {}).get("Source")


def plot_robustness_curve(rows: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Accuracy (%) vs eps in units of 1/255, one line per attack; saves a PNG at ``path`` and returns it.

    ``rows`` needs ``attack``, ``accuracy`` and ``eps_255`` or ``eps`` (in [0, 1]). Several rows for the same
    (attack, eps) -- e.g. seeds -- are averaged.
    """
    rows = pd.DataFrame(rows)
    _require(rows, ["attack", "accuracy"], "robustness curve")
    if "eps_255" not in rows.columns:
        _require(rows, ["eps"], "robustness curve")
        rows = rows.assign(eps_255=rows["eps"].astype(float) * 255)
    if rows.empty:
        raise KdlabError("robustness curve: no rows to plot: run an eps sweep first")
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for attack, group in rows.groupby("attack", sort=False):
        curve = group.groupby("eps_255", as_index=False)["accuracy"].mean().sort_values("eps_255")
        ax.plot(curve["eps_255"], curve["accuracy"], marker="o", linewidth=1.8, label=str(attack))
    ax.set_xlabel("ε (L∞, ×1/255)")
    ax.set_ylabel("Accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    ax.legend(title="attack", fontsize=9)
    _fit_title(fig, ax, title or "Robust accuracy vs ε", fontsize=12)
    return _save(fig, path)


def plot_ablation_bars(
    table: pd.DataFrame,
    path: str | Path,
    value_columns: Sequence[str],
    error_columns: Sequence[str] | None = None,
    label_column: str = "name",
    title: str | None = None,
    ylabel: str = "Accuracy (%)",
    series_labels: Sequence[str] | None = None,
    ylim: tuple[float, float] | None = (0.0, 100.0),
    flags: dict[str, list[str]] | None = None,
    source: str | None = None,
) -> Path:
    """Grouped bars: one group per ``label_column`` value, one bar per ``value_columns`` entry; saves a PNG.

    ``error_columns`` (same length as ``value_columns``) give the error bar of each bar, e.g. the std over
    seeds. Without them, rows that repeat a label (one row per seed) are averaged and their sample std
    (ddof=1; 0 for a single seed) is drawn. The value axis spans ``ylim`` (0-100 %, so two plots compare at a
    glance; ``None``: fitted to the data); the legend (``series_labels``, default the column names) sits
    outside the axes, so it never hides a bar. ``flags`` (label -> marks such as ``collapsed``) hatch that group's
    bars and add ``⚠ mark`` to its tick label, as the Markdown table marks the cell. ``source``: recorded in the
    PNG (:func:`png_source`), e.g. the table it was drawn from.
    """
    table = pd.DataFrame(table)
    value_columns = list(value_columns)
    if not value_columns:
        raise KdlabError("ablation bars: no value columns given: name the metric columns to plot")
    _require(table, [label_column, *value_columns], "ablation bars")
    if table.empty:
        raise KdlabError("ablation bars: the table is empty: run the ablation first")
    if error_columns is not None:
        error_columns = list(error_columns)
        if len(error_columns) != len(value_columns):
            raise KdlabError(f"ablation bars: {len(error_columns)} error columns for {len(value_columns)} value "
                             "columns: give one error column per value column")
        _require(table, error_columns, "ablation bars")
        means = table[[label_column, *value_columns]].set_index(label_column)
        errors = table[[label_column, *error_columns]].set_index(label_column)
        errors.columns = value_columns
    else:
        grouped = table.groupby(label_column, sort=False)[value_columns]
        means = grouped.mean()
        errors = grouped.std(ddof=1).fillna(0.0)

    labels = [str(v) for v in means.index]
    flags = {str(k): list(v) for k, v in (flags or {}).items() if v}
    ticks = [label + "".join(f"\n⚠ {mark}" for mark in flags.get(label, [])) for label in labels]
    x = np.arange(len(labels))
    width = 0.8 / len(value_columns)
    names = list(series_labels) if series_labels is not None else value_columns
    if len(names) != len(value_columns):
        raise KdlabError(f"ablation bars: {len(names)} series labels for {len(value_columns)} value columns: "
                         "give one label per value column")
    fig = Figure(figsize=(max(5.0, 1.1 * len(labels) * max(1, len(value_columns)) ** 0.5 + 2), 4.2),
                 layout="constrained")
    ax = fig.add_subplot()
    for k, column in enumerate(value_columns):
        offset = (k - (len(value_columns) - 1) / 2) * width
        bars = ax.bar(x + offset, means[column].to_numpy(dtype=float), width, label=names[k],
                      yerr=errors[column].to_numpy(dtype=float), capsize=3, error_kw={"linewidth": 1})
        for bar, label in zip(bars, labels):
            if label in flags:
                bar.set_hatch("xx")
                bar.set_edgecolor("#b00020")
    long = max(map(len, labels)) > 8
    ax.set_xticks(x, ticks, rotation=20 if long else 0, ha="right" if long else "center")
    for tick, label in zip(ax.get_xticklabels(), labels):
        if label in flags:
            tick.set_color("#b00020")
    marks = sorted({mark for cell_marks in flags.values() for mark in cell_marks})
    ax.set_xlabel(label_column + (f"   (hatched, ⚠: {', '.join(marks)}; see the table's notes)" if marks else ""))
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(True, axis="y", alpha=0.3)
    if len(value_columns) > 1:
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    _fit_title(fig, ax, title or "Ablation (mean ± std over seeds)")
    return _save(fig, path, source)


def plot_cost_robustness(
    table: pd.DataFrame,
    path: str | Path,
    cost_column: str,
    metric_column: str,
    label_column: str = "cell",
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str = "Robust accuracy (%)",
    source: str | None = None,
) -> Path:
    """Robustness against training cost: one point per ``label_column`` value at the mean over its rows (one row
    per seed) of ``cost_column`` (x) and ``metric_column`` (y), with the sample standard deviation over seeds
    (ddof=1; none for a single seed) as error bars on both axes, each point labelled. ``source``: as
    :func:`plot_ablation_bars`."""
    table = pd.DataFrame(table)
    _require(table, [label_column, cost_column, metric_column], "cost plot")
    table = table.dropna(subset=[cost_column, metric_column])
    if table.empty:
        raise KdlabError(f"cost plot: no row has both {cost_column} and {metric_column}: run the ablation first")
    grouped = table.groupby(label_column, sort=False)[[cost_column, metric_column]]
    means, errors = grouped.mean(), grouped.std(ddof=1)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for label, row in means.iterrows():
        ax.errorbar(row[cost_column], row[metric_column], xerr=errors.loc[label, cost_column],
                    yerr=errors.loc[label, metric_column], fmt="o", capsize=3, linewidth=1)
        ax.annotate(str(label), (row[cost_column], row[metric_column]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xlabel(xlabel or cost_column)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    _fit_title(fig, ax, title or f"{metric_column} against {cost_column} (mean ± std over seeds)")
    return _save(fig, path, source)
