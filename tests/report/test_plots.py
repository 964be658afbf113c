"""The PNG figures: titles inside the figure, flagged ablation cells marked as the Markdown marks them."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

import kdlab.report.plots
from kdlab.report.plots import plot_ablation_bars, plot_robustness_curve
from kdlab.report.tables import render

ROOT = Path(__file__).resolve().parents[2]
# the tables committed before the declared-study protocol (issue #24), kept as fixtures of real kdlab output
ARCHIVE = ROOT / "results" / "archive" / "2026-11"
# the title kdlab eval --eps-sweep gives its plot (kdlab.tasks.classification_eval.sweep_title), at its longest
LONG_TITLE = ("robustbench:Carmon2019Unlabeled (WRN-28-10) on imagefolder:../shared/data/cifar10-jpeg: accuracy vs "
              "eps, n = 1000 test images, seed 0; pgd 20 steps, alpha eps/4, 1 restart; fgsm; autoattack standard")


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, kept to be read back."""
    saved = []
    original = kdlab.report.plots._save

    def keep(fig, path, source=None):
        saved.append(fig)
        return original(fig, path, source)

    monkeypatch.setattr(kdlab.report.plots, "_save", keep)
    return saved


def assert_title_inside(fig):
    fig.canvas.draw()
    title = fig.axes[0].title
    box, frame = title.get_window_extent(), fig.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, (box, frame)


def test_a_long_robustness_title_lies_inside_the_figure(tmp_path, figures):
    rows = pd.DataFrame({"attack": ["pgd", "pgd", "fgsm", "fgsm"], "eps_255": [0, 8, 0, 8],
                         "accuracy": [90.0, 40.0, 90.0, 50.0]})
    plot_robustness_curve(rows, tmp_path / "curve.png", title=LONG_TITLE)
    (fig,) = figures
    assert_title_inside(fig)
    # every word of the title is shown (wrapped between words, never cut)
    assert fig.axes[0].title.get_text().split() == LONG_TITLE.split()


def test_a_long_ablation_title_lies_inside_the_figure(tmp_path, figures):
    table = pd.DataFrame({"cell": ["a", "b"], "clean_acc": [50.0, 60.0]})
    plot_ablation_bars(table, tmp_path / "bars.png", ["clean_acc"], label_column="cell", title=LONG_TITLE)
    assert_title_inside(figures[0])


def test_collapsed_cells_are_hatched_and_flagged_in_their_tick_label(tmp_path, figures):
    csv = tmp_path / "mixacm_cifar10_cpu-components.csv"
    shutil.copy(ARCHIVE / "ablations" / csv.name, csv)
    frame = pd.read_csv(csv)
    frame["flag"] = frame["flag"].astype(object) if "flag" in frame.columns else None
    frame.loc[frame["cell"] == "acm", "flag"] = "collapsed: robust accuracy meaningless (predicts class 3 for 90%)"
    frame.to_csv(csv, index=False)
    markdown, _ = render(csv)
    assert "acm ⚠ collapsed" in markdown.read_text()  # what the plot must agree with
    ax = figures[0].axes[0]
    ticks = {label.get_text().split("\n")[0]: label.get_text() for label in ax.get_xticklabels()}
    assert ticks["acm"] == "acm\n⚠ collapsed"
    assert all("⚠" not in text for cell, text in ticks.items() if cell != "acm")
    order = list(ticks)
    hatched = {order[round(bar.get_x() + bar.get_width() / 2)] for bar in ax.patches if bar.get_hatch()}
    assert hatched == {"acm"}
