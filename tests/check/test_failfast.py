"""Fail in seconds, never silently: degenerate sizes and bad names are refused before any work or file.

Every CLI test asserts exit code 2, a one-line message naming the key and the fix, and that nothing was
trained or written (no run directory, no results row).
"""

from pathlib import Path

import pytest
import torch

from kdlab.config.recipe import validate_recipe
from kdlab.config.sections import TrainSpec
from kdlab.data.sizes import check_data_sizes
from kdlab.errors import KdlabError
from kdlab.train.engine import DataSource, fit
from tests.helpers.failfast import assert_one_line_error, files_under, invoke, write_recipe

SMALL = "data: {dataset: embedded, subset: 200, test_subset: 100, batch_size: 50}\ntrain: {epochs: 1}\n"


def run_directories(folder: Path) -> list[Path]:
    """Everything under the recipe's output.dir (``folder/out/runs``) but lock files."""
    return [p for p in files_under(folder / "out" / "runs") if not p.name.endswith(".lock")]


# ----------------------------------------------------------------------------------------------- sizes
def test_subset_smaller_than_one_batch_is_refused_at_load(tmp_path):
    """`--set data.subset=100` (the first smoke test a newcomer tries) crashed with UnboundLocalError."""
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small}\ndata: {dataset: embedded}")
    assert_one_line_error(invoke("train", recipe, "--set", "data.subset=100"),
                          "data.subset (100)", "data.batch_size 128", "at most 100")
    assert files_under(tmp_path / "out") == []


def test_split_smaller_than_one_batch_is_refused_before_the_teacher_trains(tmp_path):
    """The student's split (5000 - 4950 val images) is below one batch: refused before the teacher recipe runs."""
    teacher = write_recipe(tmp_path, "model: {arch: resnet_small}\n" + SMALL, name="teacher.yaml")
    student = write_recipe(tmp_path, f"student: {{arch: resnet_small}}\nteacher: {{recipe: {teacher}}}\n"
                                     "data: {dataset: embedded, val_size: 4950, test_subset: 100}")
    assert_one_line_error(invoke("distill", student), "has 50 images", "data.val_size (4950)",
                          "data.batch_size to at most 50")
    assert files_under(tmp_path / "out") == []


def test_a_class_without_training_images_is_refused(tmp_path):
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small}\n"
                                    "data: {dataset: embedded, subset: 5, batch_size: 5, test_subset: 100}")
    assert_one_line_error(invoke("train", recipe), "no training images", "raise data.subset to at least 10")
    assert files_under(tmp_path / "out") == []


def test_subset_larger_than_the_data_is_refused(tmp_path):
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small}\ndata: {dataset: embedded, subset: 6000}")
    assert_one_line_error(invoke("train", recipe), "data.subset (6000)", "lower data.subset")
    assert files_under(tmp_path / "out") == []


def test_detection_subset_larger_than_the_data_is_refused(tmp_path):
    recipe = write_recipe(tmp_path, "task: detection\nmodel: {arch: fasterrcnn, backbone: resnet18, min_size: 64, "
                                    "max_size: 64}\ndata: {dataset: synthetic, image_size: 64, num_images: 8, "
                                    "num_test_images: 4, subset: 16, batch_size: 2}")
    assert_one_line_error(invoke("train", recipe), "data.subset (16)", "8 training images", "lower data.subset")
    assert files_under(tmp_path / "out") == []


def test_explicit_eval_n_larger_than_the_test_split_is_refused(tmp_path):
    recipe = write_recipe(tmp_path, "model: {arch: resnet_small}\n" + SMALL + "eval: {n: 300}")
    assert_one_line_error(invoke("train", recipe), "eval.n (300)", "100 images of the test split",
                          "eval.n to at most 100")
    assert files_under(tmp_path / "out") == []


class _Split:
    def __init__(self, n):
        self.n = n
        self.labels = torch.arange(n) % 2

    def __len__(self):
        return self.n


class _Data:
    def __init__(self, train, test):
        self.train, self.val, self.test, self.classes = _Split(train), None, _Split(test), ["a", "b"]


def test_the_default_eval_n_is_a_cap_not_an_error():
    """eval.n's default (1000) evaluates a smaller split whole (e.g. 64 synthetic detection test images)."""
    recipe = validate_recipe({"model": {"arch": "resnet_small"}, "data": {"batch_size": 4}})
    check_data_sizes(recipe, _Data(train=8, test=64))  # no error
    explicit = validate_recipe({"model": {"arch": "resnet_small"}, "data": {"batch_size": 4}, "eval": {"n": 65}})
    with pytest.raises(KdlabError, match=r"eval.n \(65\)"):
        check_data_sizes(explicit, _Data(train=8, test=64))


def test_an_epoch_without_a_step_is_an_error_not_a_crash(tmp_path):
    source = DataSource(batches=lambda generator: iter(()), batches_per_epoch=0, batch_size=len)
    with pytest.raises(KdlabError, match="smaller than one batch"):
        fit(torch.nn.Linear(1, 1), source, TrainSpec(epochs=1), seed=0, run_dir=tmp_path / "run", validate=None,
            export_best=lambda path: None)


def test_a_run_that_fails_before_its_first_epoch_leaves_no_directory(tmp_path):
    """The run directory is made, then the model cannot be built: it is removed, so a retry is not blocked."""
    recipe = write_recipe(tmp_path, "model: {arch: resnet_smal}\n" + SMALL)
    for _ in range(2):  # the second try fails the same way, not with 'an unfinished run exists'
        assert_one_line_error(invoke("train", recipe), "unknown architecture 'resnet_smal'", "resnet_small")
        assert run_directories(tmp_path) == []
