"""benchmarks/gpu_throughput.py in its CPU smoke mode: one ratio row per case and precision, the CSV alike.

Timings are not checked (they are noise on a loaded 2-core machine); the rows, their ratios (recomputed from
the CSV's seconds) and the recorded environment are.
"""

import csv
import importlib.util
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("gpu_throughput", REPO / "benchmarks" / "gpu_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_smoke_mode_prints_a_ratio_row_per_case_and_writes_the_csv(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "bench" / "gpu_throughput.csv"
    _benchmark_module().main(["--smoke", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "device: CPU" in printed and f"torch {torch.__version__}" in printed
    table = [line.strip("|").split("|") for line in printed.splitlines() if line.startswith("| ")]
    header, rows = [cell.strip() for cell in table[0]], [[cell.strip() for cell in row] for row in table[1:]]
    assert header[:6] == ["case", "precision", "batch", "kdlab img/s", "floor img/s", "kdlab/floor time"]
    cases = [(row[0].split(" (")[0], row[1]) for row in rows]
    assert cases == [("MixACM distill step", "fp32"), ("PGD-10 AT step", "fp32"), ("MixACM distill step", "bf16"),
                     ("PGD-10 AT step", "bf16"), ("PGD-20 evaluation", "fp32")]
    with out.open() as stream:
        recorded = list(csv.DictReader(stream))
    assert [(r["precision"], r["batch"]) for r in recorded] == [(p, b) for (_, p), b in
                                                                zip(cases, ["16"] * 5)]
    for row, entry in zip(rows, recorded):
        assert entry["device"].startswith("CPU") and entry["torch"] == torch.__version__
        assert row[6] == row[7] == "n/a"  # no peak GPU memory on a CPU
        assert float(entry["floor_seconds"]) > 0
        ratio = float(entry["kdlab_seconds"]) / float(entry["floor_seconds"])
        assert ratio > 0 and math.isclose(float(row[5]), ratio, abs_tol=0.006)
        images = int(entry["images"])
        assert math.isclose(float(row[3].replace(",", "")), images / float(entry["kdlab_seconds"]), rel_tol=0.01,
                            abs_tol=0.6)
