"""The line printed before a run's final evaluation names what is measured, on how many images."""

from pathlib import Path

from kdlab.config.recipe import load_recipe
from kdlab.runs.run import _evaluation_progress
from kdlab.tasks import get_task

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


class Shown:
    """A reporter with a progress display: keeps the title it was asked to show."""

    def __init__(self):
        self.titles = []

    def evaluation_progress(self, what):
        self.titles.append(what)


def _title(recipe):
    data = get_task(recipe.task).load_data(recipe)
    shown = Shown()
    _evaluation_progress(shown, recipe, data)
    return shown.titles[0]


def test_a_detection_run_announces_coco_ap_on_its_real_test_images():
    # skd_quickstart_teacher: 64 synthetic test images, eval.n left at its default (1000), no attacks run
    recipe = load_recipe(RECIPES / "skd_quickstart_teacher.yaml")
    assert recipe.eval.n == 1000
    title = _title(recipe)
    assert title == "best.pt on 64 test images (COCO box AP)", title


def test_a_classification_run_announces_accuracy_on_the_images_it_evaluates(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {dataset: embedded, subset: 50, test_subset: 20, batch_size: 25}\n"
                      "model: {arch: resnet_small, width: 4}\neval: {attacks: [clean, pgd], steps: 5}\n")
    title = _title(load_recipe(recipe))
    assert title == "best.pt on 20 test images (accuracy: clean, pgd-5)", title
