"""Degenerate models are flagged: a collapsed classifier's robust accuracy is never shown as robustness."""

import pandas as pd
import torch
from torch import nn
from typer.testing import CliRunner

from kdlab.cli.main import app
from kdlab.robustness.accuracy import collapse_reason, eps_sweep, evaluate_robustness
from kdlab.robustness.attacks import AttackSpec
from kdlab.robustness.sanity import sanity_check
from tests.helpers.prototype_net import EPS, eval_data, trained_model

FLAG = "collapsed: robust accuracy meaningless"


class OneClass(nn.Module):
    """Predicts class ``label`` for every image (logits barely depend on the input)."""

    def __init__(self, classes=10, label=3):
        super().__init__()
        self.linear = nn.Linear(3, classes)
        with torch.no_grad():
            self.linear.weight.mul_(1e-3)
            self.linear.bias.zero_()
            self.linear.bias[label] = 5.0

    def forward(self, x):
        return self.linear(x.mean((2, 3)))


def test_collapse_reason_against_hand_counted_predictions():
    labels = torch.arange(100) % 10  # balanced, 10 per class
    share, reason = collapse_reason(torch.full((100,), 3), labels, 10)
    assert share == 100.0 and "predicts class 3 for 100% of 100 images" in reason
    two = torch.where(torch.arange(100) < 60, 3, 7)  # 60 % class 3, 40 % class 7
    share, reason = collapse_reason(two, labels, 10)
    assert share == 60.0 and "two classes for 100%" in reason
    assert collapse_reason(labels, labels, 10) == (10.0, "")  # perfect and spread: fine
    # at chance: 12 of 100 right with 10 classes (chance 10 %, 2 standard errors = 6 points)
    wrong = (labels + 1) % 10
    wrong[:12] = labels[:12]
    share, reason = collapse_reason(wrong, labels, 10)
    assert "clean accuracy 12.0% on 100 images is at chance (10.0%)" in reason
    wrong[:20] = labels[:20]  # 20 %: above chance + 2 SE (16 %)
    assert collapse_reason(wrong, labels, 10)[1] == ""
    # a test set that is itself mostly two classes does not make a model that follows it degenerate
    skewed = torch.where(torch.arange(100) < 95, 1, torch.arange(100) % 10)
    assert collapse_reason(skewed, skewed, 10)[1] == ""


def test_a_one_class_model_is_flagged_in_every_evaluation_row():
    images, labels = eval_data(60)  # 5 classes, spread
    results = evaluate_robustness(OneClass(5, label=2), images, labels, ["clean", AttackSpec("pgd", steps=2)])
    clean, pgd = results
    assert pgd.accuracy == clean.accuracy  # the symptom: PGD cannot move a constant prediction
    assert pgd.row()["flag"].startswith(FLAG) and clean.row()["top_class_share"] == 100.0
    good = evaluate_robustness(trained_model(), images, labels, ["clean"])[0]
    assert good.row()["flag"] == "" and good.top_class_share < 50


def test_sanity_check_names_the_collapse_not_gradient_masking():
    images, labels = eval_data(40)
    report = sanity_check(OneClass(5, label=2), images, labels, eps=EPS, pgd_steps=2, apgd_steps=2,
                          square_queries=10)
    checks = [v.check for v in report]
    assert "collapsed" in checks and "large-eps-breaks-all" not in checks, checks
    assert not any("gradient masking" in v.message and v.check != "collapsed" for v in report)
    assert "predicts class 2" in next(v.message for v in report if v.check == "collapsed")


def test_eps_sweep_runs_no_attack_at_eps_zero():
    images, labels = eval_data(20)
    seen = []
    results = eps_sweep(trained_model(), images, labels, [AttackSpec("pgd", steps=2), AttackSpec("fgsm")],
                        [0.0, 4 / 255], progress=lambda name, done, total: seen.append(name))
    assert set(seen) == {"clean", "pgd@4/255", "fgsm@4/255"}
    assert [(r.attack, r.eps) for r in results] == [("pgd", 0.0), ("fgsm", 0.0), ("pgd", 4 / 255),
                                                    ("fgsm", 4 / 255)]
    assert results[0].accuracy == results[0].clean_accuracy == results[2].clean_accuracy
    assert results[0].steps == 2 and results[1].steps == 1


def test_kdlab_eval_and_the_run_row_print_the_flag(tmp_path):
    from kdlab.models.files import save_model
    from kdlab.models.registry import build_classifier

    model = build_classifier("resnet_small", 10, width=4)
    with torch.no_grad():
        model.net.head.fc.weight.zero_()
        model.net.head.fc.bias.zero_()
        model.net.head.fc.bias[3] = 10.0
    save_model(tmp_path / "m.pt", model, task="classification", arch="resnet_small", options={"width": 4},
               num_classes=10)
    out = tmp_path / "eval.csv"
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "m.pt"), "--data", "embedded", "--n", "50",
                                      "--steps", "1", "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert FLAG in result.output
    rows = pd.read_csv(out)
    assert rows["flag"].str.startswith(FLAG).all() and (rows["top_class_share"] == 100.0).all()
    from kdlab.config.recipe import validate_recipe
    from kdlab.tasks.classification import evaluate_classifier, load_data

    recipe = validate_recipe({"model": {"arch": "resnet_small", "width": 4}, "eval": {"n": 50, "steps": 1},
                              "data": {"dataset": "embedded", "subset": 64, "test_subset": 50, "batch_size": 32}})
    evaluation = evaluate_classifier(model, load_data(recipe), recipe)  # what a runs row records
    assert evaluation["flag"].startswith(FLAG) and evaluation["pgd_acc"] == evaluation["clean_acc"]
