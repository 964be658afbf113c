"""The RobustBench model-zoo catalogue kdlab reads: names, architecture, weight layout and normalisation per entry,
and where each file lives (no torch import: a recipe naming a zoo model is checked at load time).

Entries from ``robustbench/model_zoo/cifar10.py`` (robustbench 1.1.1), for the zoo's common CIFAR-10
architectures that :mod:`kdlab.models.zoo` turns into kdlab classifiers (how, and why kdlab reads the files
itself, is told there). Files live where RobustBench puts them: ``model_dir/<dataset>/<threat_model>/<name>.pt``
(``model_dir`` default ``models``, RobustBench's ``./models``). kdlab never downloads: a missing file is a
one-line error naming the path to place it at. The zoo's models take images in [0, 1]; Wong2020Fast normalises
inside (its ``mu``/``sigma``), which kdlab's wrapper does with the same statistics.

DM-style networks (``DMWideResNet``: Gowal2021*, Rebuffi2021*, ...) and the other architectures are not read
yet: :func:`zoo_entry` names the supported models.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from kdlab.errors import KdlabError

PREFIX = "robustbench:"  # a model name with it (kdlab eval / inspect) is a zoo entry
NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
WONG_NORMALISATION = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))  # Wong2020FastNet's mu / sigma


@dataclass(frozen=True)
class ZooEntry:
    arch: str                 # wrn-D-K or preact_resnet18
    wrap: str = "state_dict"  # where the weights sit in the file: state_dict, last (the final epoch) or plain
    normalisation: tuple = NO_NORMALISATION


# (dataset, threat model) -> name -> entry; from robustbench/model_zoo/cifar10.py (1.1.1).
ZOO: dict[tuple[str, str], dict[str, ZooEntry]] = {
    ("cifar10", "Linf"): {
        "Standard": ZooEntry("wrn-28-10"),
        "Carmon2019Unlabeled": ZooEntry("wrn-28-10"),
        "Zhang2019Theoretically": ZooEntry("wrn-34-10"),
        "Chen2021LTD_WRN34_20": ZooEntry("wrn-34-20"),
        "Chen2021LTD_WRN34_10": ZooEntry("wrn-34-10"),
        "Wong2020Fast": ZooEntry("preact_resnet18", normalisation=WONG_NORMALISATION),
        "Andriushchenko2020Understanding": ZooEntry("preact_resnet18", wrap="last"),
    },
}


def zoo_entry(name: str, dataset: str = "cifar10", threat_model: str = "Linf") -> ZooEntry:
    models = ZOO.get((dataset, threat_model))
    if models is None:
        known = ", ".join(f"{d}/{t}" for d, t in ZOO)
        raise KdlabError(f"robustbench models for {dataset}/{threat_model} are not read by kdlab: use {known}")
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KdlabError(f"robustbench model '{name}' is not one kdlab reads{hint}: choose one of "
                         f"{', '.join(models)} (DMWideResNet models such as Gowal2021* are not supported yet)")
    return models[name]


def checkpoint_path(name: str, dataset: str, threat_model: str, model_dir: str | Path) -> Path:
    return Path(model_dir) / dataset / threat_model / f"{name}.pt"


def existing_checkpoint(name: str, dataset: str = "cifar10", threat_model: str = "Linf",
                        model_dir: str | Path = "models") -> Path:
    """The zoo file of ``name``; a known name whose file is missing is a one-line error saying where it goes."""
    zoo_entry(name, dataset, threat_model)
    path = checkpoint_path(name, dataset, threat_model, model_dir)
    if not path.is_file():
        raise KdlabError(f"robustbench checkpoint {path.absolute()} not found (kdlab never downloads): "
                         f"place {name}.pt from the RobustBench model zoo there, or point model_dir at its folder")
    return path
