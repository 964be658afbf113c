"""The ablation table's cost caption states the torch thread count the runs recorded, not an assumed one."""

import json

import pandas as pd

from kdlab.report.tables import markdown_table


def _frame(tmp_path, threads, kind="grid"):
    rows = []
    for i, (cell, count) in enumerate(zip(["kind=none", "kind=ssim"], threads, strict=True)):
        run_dir = tmp_path / f"run{i}"
        run_dir.mkdir()
        if count is not None:
            (run_dir / "run.json").write_text(json.dumps({"command": "kdlab ablate", "torch_threads": count}))
        rows.append({"ablation": "a", "kind": kind, "cell": cell, "seed": 0, "AP": 20.0 + i,
                     "wall_seconds": 60.0 + i, "run_dir": str(run_dir)})
    return pd.DataFrame(rows)


def _caption(table):
    return next(line for line in table.splitlines() if line.startswith("wall s:"))


def test_the_wall_time_caption_states_the_recorded_thread_count(tmp_path):
    caption = _caption(markdown_table(_frame(tmp_path, [2, 2])))
    assert "2 torch threads per run" in caption, caption
    assert "one torch thread" not in caption


def test_mixed_and_missing_thread_counts_are_said_so(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert "1-2 torch threads per run (differs between runs)" in _caption(markdown_table(_frame(tmp_path / "a", [1, 2])))
    assert "torch thread count not recorded" in _caption(markdown_table(_frame(tmp_path / "b", [None, None])))


def test_a_torch_threads_column_is_read_before_the_run_directories(tmp_path):
    frame = _frame(tmp_path, [None, None]).assign(torch_threads=[4, 4])
    assert "4 torch threads per run" in _caption(markdown_table(frame))


def _device_line(table):
    return [line for line in table.splitlines() if line.startswith("device:")]


def test_the_device_the_rows_ran_on_is_stated_and_a_mix_is_counted(tmp_path):
    """CPU training is reproducible on one processor type only (a teacher retrained on an Intel Xeon differed
    from the AMD EPYC one): the table says where its rows ran, and a mix row by row."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    one = _frame(tmp_path / "a", [1, 1]).assign(device_name=["AMD EPYC", "AMD EPYC"])
    assert _device_line(markdown_table(one)) == ["device: AMD EPYC (every row)."]
    mixed = _frame(tmp_path / "b", [1, 1]).assign(device_name=["AMD EPYC", "Intel(R) Xeon(R) Processor"])
    assert _device_line(markdown_table(mixed)) == [
        "device: AMD EPYC (1 row), Intel(R) Xeon(R) Processor (1 row); rows from different devices."]
    partly = _frame(tmp_path / "c", [1, 1]).assign(device_name=["AMD EPYC", None])
    assert _device_line(markdown_table(partly)) == ["device: AMD EPYC (1 row), not recorded (1 row)."]
    assert _device_line(markdown_table(_frame(tmp_path, [1, 1]))) == []  # an older table without the column
