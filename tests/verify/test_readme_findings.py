"""Every figure of the README's findings comes from a committed table: each decimal number in a verdict appears
(up to its sign: the README states some differences the other way round, e.g. MixACM − RSLAD where the table
shows RSLAD − MixACM) in the Markdown that `kdlab table` wrote for the study the row names (a row naming "same"
reads the study above it). A figure typed by hand, or left behind when a table was regenerated, fails."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"\d+\.\d+")


def findings_rows() -> list[tuple[str, str, list[str]]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Findings"):]
    section = section[:section.index("\n## ", 1)]
    rows, studies = [], []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) < 3 or cells[0] == "claim":
            continue
        claim, verdict, study = cells[:3]
        studies = re.findall(r"`([a-z0-9_]+)`", study) or studies  # "same": the study of the row above
        rows.append((claim, verdict, studies))
    return rows


def test_every_figure_of_a_findings_verdict_is_in_its_studys_table():
    rows = findings_rows()
    assert len(rows) >= 8, "the README's findings table was not found"
    for claim, verdict, studies in rows:
        tables = [ROOT / "results" / "ablations" / f"{study}.md" for study in studies]
        shown = "".join(table.read_text() for table in tables if table.is_file())
        if not shown:
            assert not NUMBER.search(verdict), f"{claim}: figures without a committed table"
            continue
        missing = [number for number in NUMBER.findall(verdict) if number not in shown]
        assert not missing, f"{claim}: {missing} are in no table of {', '.join(studies)}"
