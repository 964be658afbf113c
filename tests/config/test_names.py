"""Each name list is defined once (kdlab.config.names); the implementations accept exactly those names."""

from kdlab.config import names
from kdlab.config.sections import DataSpec, EvalSpec
from kdlab.data.detection import DATASETS as DETECTION_LOADERS
from kdlab.data.loaders import LOADERS as CLASSIFICATION_LOADERS
from kdlab.robustness.attacks import available_attacks
from kdlab.tasks.detection_eval import METRICS


def test_the_attack_registry_implements_exactly_the_named_attacks():
    assert available_attacks() == list(names.ATTACKS)
    assert EvalSpec(attacks=list(names.ATTACKS)).attacks == list(names.ATTACKS)  # every name validates


def test_the_data_loaders_implement_exactly_the_named_datasets():
    assert set(CLASSIFICATION_LOADERS) | set(DETECTION_LOADERS) == set(names.DATASETS)
    for dataset in names.DATASETS:
        assert DataSpec(dataset=dataset).dataset == dataset


def test_detection_metrics_are_pycocotools_summary_order():
    # COCOeval.summarize: AP@[.5:.95], AP@.5, AP@.75, then small, medium, large
    assert METRICS == names.DETECTION_METRICS == ("AP", "AP50", "AP75", "APs", "APm", "APl")
