"""The best-checkpoint rule (kdlab.train.selection) against hand-written expectations: the metric for each task
and method, whether epochs are validated, how epochs compare, and what a run records."""

import pytest

from kdlab.config.recipe import validate_recipe
from kdlab.errors import KdlabError
from kdlab.train.selection import (
    epoch_score,
    improves,
    recorded_select,
    selection_metric,
    selects_on_validation,
)

TRAIN = {"model": {"arch": "resnet_small", "width": 4}, "data": {"val_size": 50}}
DISTILL = {"student": {"arch": "resnet_small", "width": 4}, "teacher": {"checkpoint": "t.pt"},
           "data": {"val_size": 50}}
DETECTION = {**TRAIN, "task": "detection", "model": {"arch": "fasterrcnn"}}


@pytest.mark.parametrize(("raw", "expected"), [
    (TRAIN, "clean"),                                                             # standard training
    ({**TRAIN, "train": {"adversarial": {"method": "pgd"}}}, "pgd"),              # adversarial training
    ({**TRAIN, "train": {"adversarial": {"method": "fgsm-rs"}}}, "pgd"),
    ({**TRAIN, "train": {"adversarial": {"method": "trades"}}}, "pgd"),
    (DISTILL, "pgd"),                                                             # robust distillation (MixACM)
    ({**DISTILL, "method": {"name": "kd"}}, "pgd"),                               # any distillation method
    (DETECTION, "AP50"),                                                          # detection
    ({**DETECTION, "student": {"arch": "fasterrcnn"}, "model": None, "teacher": {"checkpoint": "t.pt"}}, "AP50"),
    ({**TRAIN, "train": {"adversarial": {"method": "pgd"}, "select": "clean"}}, "clean"),  # explicit: honoured
    ({**TRAIN, "train": {"select": "pgd"}}, "pgd"),
    ({**DISTILL, "train": {"select": "clean"}}, "clean"),
    ({**TRAIN, "train": {"select": "last"}}, "last"),
    ({**DETECTION, "train": {"select": "last"}}, "last"),
])
def test_the_metric_follows_the_task_and_method_unless_train_select_names_one(raw, expected):
    assert selection_metric(validate_recipe(raw)) == expected


def test_epochs_are_validated_only_with_a_validation_split_and_a_metric():
    assert selects_on_validation(validate_recipe(TRAIN), has_validation=True) is True
    assert selects_on_validation(validate_recipe(TRAIN), has_validation=False) is False
    assert selects_on_validation(validate_recipe(DETECTION), has_validation=True) is True
    last = validate_recipe({**TRAIN, "train": {"select": "last"}})
    assert selects_on_validation(last, has_validation=True) is False


def test_an_epoch_is_scored_on_its_validation_metric_or_else_on_its_number():
    assert epoch_score("pgd", {"clean": 60.0, "pgd": 25.0}, epoch=3) == 25.0
    assert epoch_score("AP50", {"AP50": 41.5}, epoch=2) == 41.5
    assert epoch_score("clean", None, epoch=4) == 4.0  # no validation: the latest epoch wins
    with pytest.raises(KdlabError, match=r"model selection on 'pgd' but validation measured only \['clean'\]"):
        epoch_score("pgd", {"clean": 60.0}, epoch=1)


def test_a_later_epoch_wins_ties_and_a_worse_one_never_replaces_the_best():
    assert improves(25.0, float("-inf")) is True
    assert improves(25.0, 25.0) is True  # a tie goes to the later epoch
    assert improves(26.0, 25.0) is True
    assert improves(24.9, 25.0) is False


def test_a_run_records_its_metric_or_last_when_nothing_was_validated():
    robust = validate_recipe({**TRAIN, "train": {"adversarial": {"method": "pgd"}}})
    assert recorded_select(robust, validated=True) == "pgd"
    assert recorded_select(robust, validated=False) == "last"
    assert recorded_select(validate_recipe(DETECTION), validated=True) == "AP50"
