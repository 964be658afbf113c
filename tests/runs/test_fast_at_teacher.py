"""recipes/cifar10_fast_at_teacher.yaml (Wong et al.'s fast FGSM-RS teacher, issue #25) at tiny scale on the CPU:
it loads with the reference's settings, kdlab check plans it, and shrunk by --set it trains end to end."""

import csv
from pathlib import Path

import pytest

from kdlab.config.recipe import load_recipe
from tests.helpers.failfast import invoke

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "cifar10_fast_at_teacher.yaml"
DATA = RECIPE.parent / "../../shared/data/cifar10-jpeg"
TINY = ["data.subset=160", "data.test_subset=40", "data.batch_size=32", "model.arch=resnet_small",
        "train.epochs=2", "eval.n=20", "train.precision=fp32", "train.channels_last=false"]


def test_the_recipe_holds_train_fgsm_py_settings():
    recipe = load_recipe(str(RECIPE))
    train, adversarial = recipe.train, recipe.train.adversarial
    assert recipe.model.arch == "preact_resnet18" and recipe.data.batch_size == 128 and recipe.data.augment
    assert (train.epochs, train.lr, train.momentum, train.weight_decay, train.schedule) == (15, 0.2, 0.9, 5e-4,
                                                                                             "cyclic")
    assert train.cyclic_base_momentum == 0.8 and not train.nesterov and train.decay_scope == "all"
    assert adversarial.method == "fgsm-rs"
    assert adversarial.eps == pytest.approx(8 / 255) and adversarial.step_size == pytest.approx(10 / 255)
    assert recipe.model.mean == [0.4914, 0.4822, 0.4465] and recipe.model.std == [0.2471, 0.2435, 0.2616]
    assert train.select == "last" and recipe.data.val_size == 0  # the reference keeps the last epoch
    assert recipe.eval.n == 10000 and recipe.eval.steps == 20 and recipe.eval.attacks == ["clean", "pgd"]


@pytest.mark.slow  # ~25 s: kdlab check times steps, then a 2-epoch run on real JPEGs
@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data/cifar10-jpeg")
def test_tiny_fast_at_teacher_is_planned_and_trains_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = [arg for item in TINY for arg in ("--set", item)]
    checked = invoke("check", RECIPE, *sets)
    assert checked.exit_code == 0, checked.output
    assert "no problems found" in checked.output and "to train" in checked.output
    trained = invoke("train", RECIPE, *sets)
    assert trained.exit_code == 0, trained.output
    (run_dir,) = [path.parent for path in (tmp_path / "results" / "runs").glob("*/summary.json")]
    assert (run_dir / "best.pt").is_file()
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    # the cyclic schedule as read back after each epoch: the peak 0.2 at half of the 2 x 5 steps, 0 at the end
    assert [float(row["lr"]) for row in rows] == pytest.approx([0.2, 0.0], abs=1e-12)
    (row,) = list(csv.DictReader((tmp_path / "results" / "runs.csv").open()))
    assert row["clean_acc"] and row["pgd_acc"]
