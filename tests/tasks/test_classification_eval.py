"""``kdlab eval`` of a classifier never loses what it computed: its outputs are checked before any work, each
attack's row is appended as it finishes (Ctrl-C keeps them), and a rerun skips what is already recorded.

The checkpoint is a tiny untrained resnet_small made here; the test set is the embedded CIFAR-10 subset, --n 20.
The attacks are counted or interrupted by wrapping ``run_attack``, the one call every batch of every attack makes.
"""

import csv
import os

import pytest
import torch
from typer.testing import CliRunner

from kdlab.cli.main import app
from tests.helpers.ctrl_c import interrupt_at
from tests.helpers.failfast import assert_one_line_error


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from kdlab.models.files import save_model
    from kdlab.models.registry import build_classifier

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "m.pt"
    save_model(path, build_classifier("resnet_small", 10, width=4), task="classification", arch="resnet_small",
               options={"width": 4}, num_classes=10)
    return path


def run_eval(checkpoint, out, *args):
    return CliRunner().invoke(app, ["eval", str(checkpoint), "--data", "embedded", "--n", "20", "--steps", "2",
                                    "--batch-size", "32", "--out", str(out), *map(str, args)],
                              env={"COLUMNS": "200"})


def rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def nothing_loaded(monkeypatch):
    """Loading the test set or the checkpoint fails the test: the refusal must come first."""
    import kdlab.data.loaders
    import kdlab.models.files

    def loaded(*args, **kwargs):
        raise AssertionError("loaded before the output path was checked")

    monkeypatch.setattr(kdlab.models.files, "load_model", loaded)
    monkeypatch.setattr(kdlab.data.loaders, "load_data_spec", loaded)


def test_an_out_under_a_regular_file_is_refused_before_any_work(checkpoint, tmp_path, monkeypatch):
    # The unwritable case made without permissions (the tests may run as root): the folder's place is a file.
    nothing_loaded(monkeypatch)
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "eval.csv"
    text = assert_one_line_error(run_eval(checkpoint, out, "--attack", "pgd"), str(tmp_path / "afile"),
                                 "not a folder", "--out")
    assert "choose another --out" in text


def test_a_read_only_folder_is_refused_before_any_work(checkpoint, tmp_path, monkeypatch):
    # Read-only made by monkeypatching os.access (root may write into a chmod'd folder): the folder itself.
    nothing_loaded(monkeypatch)
    folder = tmp_path / "ro"
    folder.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path) == str(folder) else real(path, mode))
    text = assert_one_line_error(run_eval(checkpoint, folder / "eval.csv", "--attack", "pgd", "--eps-sweep", "0,8/255"),
                                 f"folder {folder} is not writable")
    assert "chmod u+w" in text
    assert list(folder.iterdir()) == []


def test_ctrl_c_in_the_second_attack_keeps_the_first_attacks_row(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "eval.csv"
    interrupt_at(monkeypatch, 2)  # n 20 in one batch: call 1 is fgsm, call 2 pgd
    result = run_eval(checkpoint, out, "--attack", "fgsm", "--attack", "pgd")
    assert result.exit_code == 130, result.output
    assert f"1 row of finished attacks kept in {out} (fgsm@8/255)" in result.output
    assert "rerun the same command" in result.output and "no rows were appended" not in result.output
    kept = rows(out)
    assert [(row["attack"], row["n"], row["steps"]) for row in kept] == [("fgsm", "20", "2")]


def test_ctrl_c_during_the_sanity_checks_keeps_every_finished_check(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "eval.csv"
    # n 20 in batches of 32: call 1 is the fgsm asked for; the sanity checks (fgsm reused) are timed on the
    # first 16 images (calls 2-8: PGD at 5 budgets, APGD-CE, Square), then run on the last 4 (calls 9-15):
    # interrupted in the last check, Square, on the last 4 images.
    calls = interrupt_at(monkeypatch, 15)
    result = run_eval(checkpoint, out, "--attack", "fgsm", "--steps", "1", "--sanity")
    assert type(calls[-1]).__name__ == "_Torchattacks" and "Square" in type(calls[-1].attack).__name__
    assert result.exit_code == 130, result.output
    assert "sanity: ~" in result.output and "measured on the first 16 images" in result.output
    kept = [(row["attack"], row["eps_255"], row["n"]) for row in rows(out)]
    # fgsm (asked for, and reused by the sanity checks), PGD at 5 budgets, APGD-CE: each on all 20 images
    assert kept == [("fgsm", "8.0", "20"), ("pgd", "0.0", "20"), ("pgd", "4.0", "20"), ("pgd", "8.0", "20"),
                    ("pgd", "16.0", "20"), ("pgd", "127.5", "20"), ("apgd-ce", "8.0", "20")]
    assert f"7 rows of finished attacks kept in {out}" in result.output


def test_a_rerun_skips_the_recorded_attacks_and_force_recomputes_them(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "eval.csv"
    first = run_eval(checkpoint, out, "--attack", "fgsm", "--attack", "pgd")
    assert first.exit_code == 0, first.output
    recorded = rows(out)
    assert len(recorded) == 2

    calls = interrupt_at(monkeypatch, 10**6)  # counts the attack batches
    again = run_eval(checkpoint, out, "--attack", "fgsm", "--attack", "pgd")
    assert again.exit_code == 0, again.output
    assert calls == []  # no attack ran
    assert f"pgd eps 8/255 (2 steps): already in {out} (row 2), skipped" in again.output
    assert f"fgsm eps 8/255 (2 steps): already in {out} (row 1), skipped" in again.output
    assert rows(out) == recorded  # no duplicate
    pgd_accuracy = float(recorded[1]["accuracy"])
    assert f"{pgd_accuracy:.2f}" in again.output.split("results (%)")[1]  # the recorded number is shown

    # Another image selection (n) is another measurement: it runs; so does --force on the same one.
    other = run_eval(checkpoint, out, "--attack", "pgd", "--n", "12")
    assert other.exit_code == 0 and len(calls) == 1, other.output
    forced = run_eval(checkpoint, out, "--attack", "pgd", "--force")
    assert forced.exit_code == 0 and len(calls) == 2, forced.output
    assert [row["attack"] for row in rows(out)] == ["fgsm", "pgd", "pgd", "pgd"]


def test_the_sanity_verdict_is_judged_with_the_attacks_of_the_same_evaluation(checkpoint, tmp_path):
    # The black-box check compares Square with this evaluation's PGD-20 and AutoAttack too, and says so on record.
    out = tmp_path / "eval.csv"
    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--data", "embedded", "--n", "20", "--batch-size", "32",
                                      "--out", str(out), "--attack", "pgd", "--attack", "autoattack", "--sanity"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    verdict = next(row for row in rows(out) if row["attack"] == "sanity")
    assert verdict["sanity"].endswith("square 5000 queries; also compared with pgd-20, autoattack)"), verdict
