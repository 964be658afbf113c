"""The registry of distillation methods by name: ``method.name`` in a recipe -> the class that trains it.

Adding a method touches three files:

1. ``kdlab/config/methods/<name>.py``: its settings class (a :class:`~kdlab.config.methods.base.MethodSettings`
   subclass with ``name: Literal["<name>"] = "<name>"``; torch-free, so recipes validate without torch). Being
   in that package registers it in the recipe's ``method`` union (:mod:`kdlab.config.methods`). A field that holds
   feature-tap keys (block indices or module paths) says so by its type, whatever its name:
   ``layers: Annotated[list[BlockKey], Taps(teacher="teacher_layers")]`` (:class:`kdlab.config.schema.Taps`).
2. ``kdlab/methods/<name>.py``: its step, a :class:`~kdlab.methods.base.DistillationMethod` subclass naming that
   class as ``settings_class``.
3. this file: its entry in :data:`METHODS`, the one registration line (with the import of its class).

A method defined elsewhere (a plug-in, a test) calls :func:`register_method` with its class; that also adds its
settings to the recipe's ``method`` union, so recipes validated afterwards in the same process accept it.
"""

from __future__ import annotations

from torch import nn

from kdlab.config.methods import SETTINGS, register_settings
from kdlab.config.methods.base import MethodSettings
from kdlab.methods.adaad import AdaAD
from kdlab.methods.ard import ARD
from kdlab.methods.at import AttentionTransfer
from kdlab.methods.base import DistillationMethod
from kdlab.methods.fitnet import FitNet
from kdlab.methods.iad import IAD
from kdlab.methods.kd import KD
from kdlab.methods.mixacm import MixACM
from kdlab.methods.pgd_at import PGDAT
from kdlab.methods.rrm import RobustRepresentationMatching
from kdlab.methods.rslad import RSLAD
from kdlab.methods.skd import StructuralKD

METHODS: dict[str, type[DistillationMethod]] = {
    "mixacm": MixACM,
    "skd": StructuralKD,
    "kd": KD,
    "fitnet": FitNet,
    "at": AttentionTransfer,
    "rrm": RobustRepresentationMatching,
    "ard": ARD,
    "rslad": RSLAD,
    "iad": IAD,
    "adaad": AdaAD,
    "pgd-at": PGDAT,
}


def register_method(cls: type[DistillationMethod]) -> type[DistillationMethod]:
    """Register ``cls`` (and its ``settings_class``) under the settings' name; usable as a decorator."""
    register_settings(cls.settings_class)
    name = cls.settings_class.model_fields["name"].default
    if METHODS.get(name, cls) is not cls:
        raise ValueError(f"method '{name}' is already registered as {METHODS[name].__name__}")
    METHODS[name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Remove a registered method and its settings (tests registering a toy method clean up with it)."""
    METHODS.pop(name, None)
    SETTINGS.pop(name, None)


def build_method(settings: MethodSettings, student: nn.Module, teacher: nn.Module | None,
                 image_shape: tuple[int, ...] = (3, 32, 32)) -> DistillationMethod:
    """The method ``settings.name`` names, around ``student`` and the (frozen) ``teacher``."""
    cls = METHODS.get(settings.name)
    if cls is None:
        raise ValueError(f"method '{settings.name}' has settings but no registered class: call register_method")
    return cls(student, teacher, settings, image_shape=image_shape)

