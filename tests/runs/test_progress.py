"""Progress that fits: at 80 columns the epoch, bar, images/s and ETA stay visible; loss terms give way."""

import io
import re

import pytest
from rich.console import Console

from kdlab.runs.console import AttackProgress, RichReporter

TERMS = {"mixup_ce": 2.30258, "kd": 0.81234, "acm2": 0.0123456, "acm3": 0.0234567, "acm4": 0.0345678,
         "loss_feature_level_p5_ssim": 0.5}
ETA = re.compile(r"eta \d+:\d\d:\d\d")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def rendered(progress, width):
    """The progress display as it would be drawn on a terminal of ``width`` columns."""
    out = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    for renderable in progress.get_renderables():
        out.print(renderable)
    return out.file.getvalue()


def run_steps(width, terms=TERMS, title="mixacm_cifar10_cpu-block2+3+4-s0-ablation-cell-with-a-long-name", every=1):
    reporter = RichReporter(title, out=Console(file=io.StringIO(), width=width, color_system=None))
    clock = Clock()
    reporter.fit_started(epochs=10, batches_per_epoch=40, start_epoch=1)
    reporter.progress.get_time = reporter.progress.tasks[0]._get_time = clock
    reporter.progress.tasks[0].start_time = 0.0
    for step in range(every, 61, every):  # the engine counts steps from 1 in every epoch
        clock.now = step * 0.5
        reporter.step_done(epoch=2 if step > 40 else 1, step=step - 40 if step > 40 else step, terms=terms,
                           images=128 * every)
    text = rendered(reporter.progress, width)
    reporter.fit_finished()
    return text


@pytest.mark.parametrize("width", [80, 100])
def test_the_training_bar_keeps_epoch_speed_and_eta_at_narrow_widths(width):
    text = run_steps(width)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == 1 and len(lines[0]) <= width, text  # one line, nothing wrapped
    line = lines[0]
    assert "ep 2/10" in line and "━" in line and "60/400" in line and "256 img/s" in line, line
    assert ETA.search(line), line
    # 340 steps left at 2 steps/s: about 2:50
    assert re.search(r"eta 0:02:[45]\d", line), line
    assert "mixup_ce=2.3" in line  # the first terms fit beside them...
    assert "feature_level_p5_ssim" not in line or width > 100  # ...the later ones are dropped whole, not cut
    assert not re.search(r"\w=\d*\.?\d*…", line)


def test_the_bar_advances_by_the_steps_between_reads():
    """The engine reports every train.log_every steps (here 20, epochs of 40 steps): the bar still counts steps."""
    line = run_steps(100, every=20).rstrip("\n").split("\n")[0]
    assert "ep 2/10" in line and "60/400" in line and "256 img/s" in line, line


def test_a_very_narrow_terminal_drops_the_terms_before_the_eta():
    line = run_steps(64).rstrip("\n").split("\n")[0]
    assert ETA.search(line) and "img/s" in line, line
    assert "mixup_ce" not in line


def test_the_evaluation_progress_shows_images_per_second_and_eta_at_80_columns():
    progress = AttackProgress(Console(file=io.StringIO(), width=80, color_system=None), plain=False)
    clock = Clock()
    progress.progress.get_time = clock
    with progress:
        for done in range(50, 251, 50):
            clock.now = done / 25  # 25 images/s
            progress("autoattack@8/255:apgd-t", done, 1000)
        text = rendered(progress.progress, 80)
    line = text.rstrip("\n").split("\n")[0]
    assert "autoattack@8/255:apgd-t" in line and "250/1000" in line and "25.0 img/s" in line, line
    assert ETA.search(line) and len(line) <= 80, line


def test_the_evaluation_after_training_reports_its_own_progress(tmp_path):
    import contextlib

    import yaml

    from kdlab.config.recipe import load_recipe
    from kdlab.runs.run import run_recipe
    from kdlab.train.reporter import Reporter

    calls, announced = [], []

    class Recorder(Reporter):
        def evaluation_progress(self, what):
            announced.append(what)
            return contextlib.nullcontext(lambda name, done, total: calls.append((name, done, total)))

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"dataset": "embedded", "subset": 64, "test_subset": 30, "batch_size": 32},
        "model": {"arch": "resnet_small", "width": 4}, "train": {"epochs": 1},
        "eval": {"n": 30, "steps": 1, "batch_size": 16},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")}}))
    run_recipe(load_recipe(path), reporter_factory=lambda name: Recorder())
    assert announced == ["best.pt on 30 test images (accuracy: clean, pgd-1)"]
    assert calls == [("clean", 0, 30), ("clean", 16, 30), ("clean", 30, 30),
                     ("pgd@8/255", 0, 30), ("pgd@8/255", 16, 30), ("pgd@8/255", 30, 30)]


# --------------------------------------------------------------------------- plots
def test_ablation_bars_use_a_0_to_100_axis_and_a_legend_that_hides_no_bar(tmp_path, monkeypatch):
    import pandas as pd

    import kdlab.report.plots

    figures = []
    real_save = kdlab.report.plots._save
    monkeypatch.setattr(kdlab.report.plots, "_save", lambda fig, path, source=None: figures.append(fig) or real_save(fig, path, source))
    table = pd.DataFrame({"cell": [f"cell{i}" for i in range(6)], "clean_mean": [96.0, 97, 95, 98, 96, 97],
                          "pgd_mean": [91.0, 94, 92, 93, 95, 90]})
    kdlab.report.plots.plot_ablation_bars(table, tmp_path / "bars.png", ["clean_mean", "pgd_mean"],
                                   label_column="cell", series_labels=["clean", "PGD"])
    fig = figures[0]
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 100.0)
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["clean", "PGD"]
    bars = [patch.get_window_extent(renderer) for patch in ax.patches]
    assert len(bars) == 12 and not any(legend.overlaps(bar) for bar in bars)


def test_ablation_plot_title_names_model_n_and_attack(tmp_path, monkeypatch):
    import pandas as pd

    import kdlab.report.plots
    from kdlab.report.tables import render

    titles = []
    real = kdlab.report.plots.plot_ablation_bars
    monkeypatch.setattr(kdlab.report.plots, "plot_ablation_bars",
                        lambda *a, **k: titles.append(k["title"]) or real(*a, **k))
    csv = tmp_path / "R-grid-train.lr.csv"
    pd.DataFrame({"cell": ["lr=0.1", "lr=0.2"], "seed": [0, 0], "clean_acc": [50.0, 55.0],
                  "pgd_acc": [20.0, 25.0],
                  "arch": ["resnet_small"] * 2, "eval_n": [500] * 2, "eval_eps": [8 / 255] * 2,
                  "eval_steps": [20] * 2}).to_csv(csv, index=False)
    render(csv)
    assert titles == ["R-grid-train.lr\nresnet_small, n = 500, PGD-20 at ε = 8/255 (mean ± std over seeds)"]


def test_the_evaluation_progress_in_a_log_file_is_plain_lines_every_interval():
    """Output to a file (not a terminal): no live bar (it would show nothing until the end), a plain line every
    30 s and when an attack ends, with images done/total, images/s, elapsed time and ETA."""
    out = io.StringIO()
    clock = Clock()
    with AttackProgress(Console(file=out, width=200), interval=30.0, clock=clock) as progress:
        for now, done in [(0, 0), (10, 10), (20, 20), (32, 40), (40, 60), (50, 100)]:
            clock.now = now
            progress("pgd@8/255", done, 100)
    # at 32 s: 40 images at 1.25 img/s, 60 left: 48 s; at 50 s: done (printed although 18 s after the last line)
    assert out.getvalue().splitlines() == [
        "pgd@8/255: 40/100 images, 1.2 img/s, elapsed 0:00:32, eta 0:00:48",
        "pgd@8/255: 100/100 images, 2.0 img/s, elapsed 0:00:50, eta 0:00:00",
    ]


def test_the_evaluation_bar_times_an_attack_from_its_start_not_its_first_batch():
    """A one-batch attack (n <= batch size) reported 0:00:00 elapsed: its bar began at its only report. Here the
    model's every forward pass takes one (fake) second."""
    from torch import nn

    from kdlab.robustness.accuracy import evaluate_robustness
    from tests.helpers.prototype_net import eval_data

    clock = Clock()

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 8 * 8, 5)

        def forward(self, x):
            clock.now += 1.0
            return self.fc(x.flatten(1))

    images, labels = eval_data(8)
    progress = AttackProgress(Console(file=io.StringIO(), width=100, color_system=None, force_terminal=True))
    progress.progress.get_time = clock
    with progress:
        evaluate_robustness(Slow(), images, labels, ["fgsm"], batch_size=8, progress=progress)
        text = rendered(progress.progress, 100)
    fgsm = next(line for line in text.splitlines() if line.startswith("fgsm@8/255"))
    assert re.search(r"0:00:0[2-9]$", fgsm.rstrip()), fgsm  # its forward passes: at least attack + prediction
