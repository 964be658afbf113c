"""kdlab report: the HTML page's numbers, commands, recipes and provenance, and the page in a real browser.

The numbers are computed by hand: cells kind=none (AP 10, 12) and kind=ssim (AP 12, 16) over seeds 0 and 1 give
11.00 ± 1.41 and 14.00 ± 2.83 (sample std), and paired differences [2, 4]: mean 3, std √2, 95 % half-width
t(0.975, 1) · √2 / √2 = 12.706, so [-9.71, +15.71], not separated.
The browser test opens the page from disk in Debian's chromium, driven by Playwright, records every request,
and checks every table and image is there and rendered. In CI (CI=true) a missing chromium fails the test; it is
marked ``browser``, so ``pytest -m "not browser"`` leaves it out.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kdlab.report.html import build_report
from tests.helpers.failfast import assert_one_line_error, invoke

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def results_folder(tmp_path: Path) -> Path:
    """A checkout-like folder: recipes/demo.yaml, results/ablations/*.csv, run directories and runs.csv."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "demo.yaml").write_text("name: demo\ntask: detection\n# the demo recipe\n")
    results = tmp_path / "results"
    runs = results / "runs"
    rows = []
    for cell, values in (("kind=none", (10.0, 12.0)), ("kind=ssim", (12.0, 16.0))):
        for seed, ap in enumerate(values):
            run_dir = runs / f"demo-{cell.replace('=', '_')}-s{seed}-key{seed}"
            rows.append({"ablation": "demo", "kind": "grid", "cell": cell, "setting": f"method.feature.{cell}",
                         "seed": seed, "AP": ap, "AP50": ap + 20, "run_dir": str(run_dir)})
    first = Path(rows[0]["run_dir"])  # kind=none seed 0: a run directory with summary.json and recipe.yaml
    first.mkdir(parents=True)
    (first / "summary.json").write_text(json.dumps({
        "git_commit": "abc1234", "seed": 0, "versions": {"torch": "2.14.1", "python": "3.11.2"},
        "finished_at": "2026-01-02T03:04:05+00:00"}))
    (first / "recipe.yaml").write_text("name: demo-kind_none-s0\nmethod: {name: skd, feature: {kind: none}}\n")
    # kind=ssim seed 1: only a runs.csv row
    pd.DataFrame([{"name": "demo-kind_ssim-s1", "run_dir": rows[3]["run_dir"], "seed": 1,
                   "git_commit": "def5678", "torch": "2.14.1", "finished_at": "2026-02-03T04:05:06+00:00"}]
                 ).to_csv(results / "runs.csv", index=False)
    (results / "ablations").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(results / "ablations" / "demo-grid-method.feature.kind.csv", index=False)
    second = [{**row, "ablation": "demo", "cell": row["cell"].replace("kind", "weight"),
               "setting": row["setting"].replace("kind=none", "weight=0").replace("kind=ssim", "weight=1"),
               "run_dir": ""} for row in rows]
    pd.DataFrame(second).to_csv(results / "ablations" / "demo-grid-method.feature.weight.csv", index=False)
    return results


def test_page_holds_tables_paired_intervals_commands_recipes_and_provenance(tmp_path):
    results = results_folder(tmp_path)
    page = build_report(results / "ablations" / "demo-grid-method.feature.kind.csv").read_text()
    assert "11.00 ± 1.41" in page and "14.00 ± 2.83" in page  # AP mean ± sample std
    assert "31.00 ± 1.41" in page  # AP50
    assert "+3.00 [-9.71, +15.71] not separated" in page
    # a table from before the command column: derived, with --name, and labelled as not checked
    assert "kdlab ablate recipes/demo.yaml --name demo --grid method.feature.kind=none,ssim --seeds 0,1" in page
    assert "<b>Derived</b>: not recorded in the table" in page and "not checked" in page
    assert "kdlab table " in page and "data:image/png;base64," in page
    assert "# the demo recipe" in page  # the recipe file under recipes/
    # run directories are not committed, so the page never reads them: the same commit gives the same page anywhere
    assert "name: demo-kind_none-s0" not in page and "abc1234" not in page and "summary.json" not in page
    assert "def5678" in page and "2026-02-03T04:05:06+00:00" in page  # from runs.csv
    assert page.count("<td>not recorded</td>") == 3  # the other three runs have no runs.csv row
    assert "kdlab report results/ablations/demo-grid-method.feature.kind.csv" in page  # as the checkout names it
    again = build_report(results / "ablations" / "demo-grid-method.feature.kind.csv", tmp_path / "again.html")
    assert again.read_text() == page  # deterministic
    assert not list((results / "ablations").glob("*.md"))  # the report writes nothing beside the tables


def test_readme_command_is_preferred_and_a_folder_gives_every_table(tmp_path):
    results = results_folder(tmp_path)
    (tmp_path / "README.md").write_text(
        "```bash\nkdlab ablate recipes/demo.yaml --grid method.feature.weight=0,1 \\\n    --seeds 0,1 --jobs 2\n"
        "kdlab ablate RECIPE --grid method.feature.kind=[...]\n```\n")
    page = build_report(results).read_text()
    assert (results / "report.html").is_file()
    assert "kdlab ablate recipes/demo.yaml --grid method.feature.weight=0,1 --seeds 0,1 --jobs 2" in page
    assert "<b>From README.md</b>" in page
    assert "kdlab ablate recipes/demo.yaml --name demo --grid method.feature.kind=none,ssim --seeds 0,1" in page
    assert page.count("<h2 ") == 2
    # no run directory: the recipe file the ablation names
    assert "# the demo recipe" in page


def commands_shown(page: str) -> dict[str, list[str]]:
    """Per label (Recorded, From README.md, Derived, Not recorded): the command lines shown under it."""
    shown = {}
    for label, block in re.findall(r"<b>([^<]+)</b>: [^<]*</p>(?:<pre>([^<]*)</pre>)?", page):
        shown[label] = html.unescape(block).splitlines()
    return shown


def rows_of(cells: dict[str, str], seeds=(0,), **columns) -> list[dict]:
    return [{"ablation": "demo", "kind": "grid", "cell": cell, "setting": setting, "seed": seed, "pgd_acc": 10.0 + seed,
             "clean_acc": 50.0, "run_dir": "", **columns} for cell, setting in cells.items() for seed in seeds]


def test_rows_that_record_their_command_show_each_command_with_its_row_count(tmp_path):
    results = results_folder(tmp_path)
    first = "kdlab ablate recipes/demo.yaml --grid 'method.feature.kind=none,ssim' --set train.epochs=1 --jobs 2"
    second = "kdlab ablate recipes/demo.yaml --grid method.feature.kind=none --seeds 5 --set train.epochs=1"
    rows = (rows_of({"kind=none": "method.feature.kind=none", "kind=ssim": "method.feature.kind=ssim"},
                    command=first, overrides="train.epochs=1")
            + rows_of({"kind=none": "method.feature.kind=none"}, seeds=(5,), command=second))
    csv = results / "ablations" / "demo-grid-method.feature.kind.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    (tmp_path / "README.md").write_text("kdlab ablate recipes/demo.yaml --grid method.feature.kind=a,b --seeds 0,5\n")
    shown = commands_shown(build_report(csv).read_text())
    assert shown == {"Recorded": ["# 2 of the 3 rows", first, "# 1 of the 3 rows", second]}  # no README, no derived


def test_old_rows_beside_recorded_ones_get_their_own_labelled_fallback(tmp_path):
    results = results_folder(tmp_path)
    recorded = "kdlab ablate recipes/demo.yaml --grid method.feature.kind=none --seeds 1"
    rows = (rows_of({"kind=none": "method.feature.kind=none"})
            + rows_of({"kind=none": "method.feature.kind=none"}, seeds=(1,), command=recorded))
    csv = results / "ablations" / "demo-grid-method.feature.kind.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    shown = commands_shown(build_report(csv).read_text())
    assert shown == {"Recorded": ["# 1 of the 2 rows", recorded],
                     "Derived": ["# 1 of the 2 rows",
                                 "kdlab ablate recipes/demo.yaml --name demo --grid method.feature.kind=none --seeds 0"]}


@pytest.mark.parametrize("cells, expected", [
    # a product of two keys in order: one command with one --grid per key
    ({"a=1,b=x": "method.a=1 method.b=x", "a=1,b=y": "method.a=1 method.b=y", "a=2,b=x": "method.a=2 method.b=x",
      "a=2,b=y": "method.a=2 method.b=y"}, ["--grid method.a=1,2 --grid method.b=x,y"]),
    # two cells that are not a product (a --grid of both would make 4): one command per cell
    ({"a=1,b=x": "method.a=1 method.b=x", "a=2,b=y": "method.a=2 method.b=y"},
     ["--grid method.a=1 --grid method.b=x", "--grid method.a=2 --grid method.b=y"]),
])
def test_a_derived_grid_command_makes_exactly_the_tables_cells(tmp_path, cells, expected):
    results = results_folder(tmp_path)
    csv = results / "ablations" / "demo-grid-method.a-method.b.csv"
    pd.DataFrame(rows_of(cells)).to_csv(csv, index=False)
    shown = [line for line in commands_shown(build_report(csv).read_text())["Derived"] if not line.startswith("#")]
    assert shown == [f"kdlab ablate recipes/demo.yaml --name demo {flags} --seeds 0" for flags in expected]


def test_a_derived_blocks_command_names_the_blocks_of_the_cells_and_the_table(tmp_path):
    results = results_folder(tmp_path)
    setting = "method.acm.blocks=[{}] method.acm.block_weights={}"
    cells = {"block2": setting.format("2", "[2.0]"), "block3": setting.format("3", "[2.0]"),
             "block2+3": setting.format("2, 3", "null")}
    rows = [{**row, "kind": "blocks", "ablation": "myqs"} for row in rows_of(cells, seeds=(0, 1))]
    (tmp_path / "recipes" / "qs.yaml").write_text("name: myqs\n")
    csv = results / "ablations" / "myqs-blocks.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    shown = commands_shown(build_report(csv).read_text())
    assert shown["Derived"] == ["kdlab ablate recipes/qs.yaml --name myqs --blocks 2,3 --seeds 0,1"]


def test_a_table_no_command_can_be_derived_for_says_not_recorded(tmp_path):
    results = results_folder(tmp_path)
    cells = {"kind=none": "method.feature.kind=none", "kind=ssim": "method.feature.kind=ssim"}
    csv = results / "ablations" / "other-grid-method.feature.kind.csv"
    pd.DataFrame([{**row, "ablation": "other"} for row in rows_of(cells)]).to_csv(csv, index=False)
    page = build_report(csv).read_text()
    assert commands_shown(page) == {"Not recorded": []} and "no recipe named other under recipes/" in page
    assert "RECIPE" not in page and "kdlab ablate" not in page

    # a plan hash the recipe without --set does not give: written with a --set that is not recorded
    csv = results / "ablations" / "demo-grid-method.feature.kind.csv"
    pd.DataFrame(rows_of(cells, plan="0123456789")).to_csv(csv, index=False)
    page = build_report(csv).read_text()
    assert commands_shown(page) == {"Not recorded": []} and "does not give the rows&#x27; plan hash" in page


def test_report_of_a_table_that_is_not_an_ablation_is_one_line(tmp_path):
    results = results_folder(tmp_path)
    assert_one_line_error(invoke("report", results / "runs.csv"), "not an ablation table")
    assert_one_line_error(invoke("report", tmp_path / "missing.csv"), "not found")


@pytest.mark.browser
def test_page_renders_in_headless_chromium_without_network(tmp_path):
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium, or leave this test out: "
                    "pytest -m 'not browser'); CI installs it and runs this test")
    results = results_folder(tmp_path)
    page_path = build_report(results)
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_path.as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight,"
                               " i.getBoundingClientRect().width])")
        tables = page.evaluate("Array.from(document.querySelectorAll('table')).map(t => [t.rows.length,"
                               " t.getBoundingClientRect().height, t.innerText])")
        headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.innerText)")
        browser.close()
    assert headings == ["demo-grid-method.feature.kind", "demo-grid-method.feature.weight"]
    assert len(images) == 2 and all(done and width > 0 and height > 0 and shown > 0
                                    for done, width, height, shown in images)
    assert len(tables) == 4  # per ablation: the summary table and the provenance table
    assert all(rows >= 3 and height > 0 for rows, height, _ in tables)
    assert "+3.00 [-9.71, +15.71] not separated" in tables[0][2]
    assert requests and all(url.startswith(("file://", "data:")) for url in requests), requests
    assert requests[0] == page_path.as_uri()


def test_provenance_of_a_run_retrained_on_another_processor_is_the_row_of_the_tables_processor():
    """runs.csv keeps one row per run and device (the same teacher key retrained on an Intel Xeon beside the AMD
    EPYC one): a table row is shown with the commit of the run that ran on its own processor."""
    from kdlab.report.html import provenance_rows

    runs = pd.DataFrame([{"run_dir": "results/runs/t-k", "device_name": "AMD EPYC", "git_commit": "aaa111"},
                         {"run_dir": "results/runs/t-k", "device_name": "Intel Xeon", "git_commit": "bbb222"}])
    frame = pd.DataFrame([{"cell": "teacher", "seed": 0, "run_dir": "results/runs/t-k", "device_name": "AMD EPYC"},
                          {"cell": "teacher", "seed": 0, "run_dir": "results/runs/t-k", "device_name": None}])
    assert [entry["commit"] for entry in provenance_rows(frame, runs)] == ["aaa111", "bbb222"]
