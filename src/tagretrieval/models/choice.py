"""Which model fits which data: the choice of ``model=auto`` and the check of an explicit ``model=NAME``.

A model needs the song inputs its branches read (:func:`model_inputs`); a dataset holds some of them
(:mod:`tagretrieval.data.inputs`). ``model=auto`` takes the first entry of :data:`AUTO_ORDER` the dataset has
everything for: audio and CF vectors -> ``hybrid``, audio -> ``acoustic``, CF vectors -> ``cultural``, song
features -> ``features``.
"""

from __future__ import annotations

from collections.abc import Iterable

from tagretrieval.data.inputs import AUDIO, CF, FEATURES

# the model configs (conf/model/NAME.yaml) and their classes; tests/test_errors.py checks this against conf/model
MODELS: dict[str, str] = {
    "hybrid": "tagretrieval.models.HybridModel",
    "acoustic": "tagretrieval.models.AcousticModel",
    "cultural": "tagretrieval.models.CulturalModel",
    "concat": "tagretrieval.models.ConcatModel",
    "features": "tagretrieval.models.features.FeaturesModel",
    "fused": "tagretrieval.models.fused.FusedModel",
    "musicnn": "tagretrieval.models.musicnn.MusicnnModel",
}
AUTO_ORDER: tuple[str, ...] = ("hybrid", "acoustic", "cultural", "features")


def model_inputs(model_class: type) -> frozenset[str]:
    """The song inputs a model class reads (its ``uses_audio``, ``uses_cf``, ``uses_features``)."""
    return frozenset(name for name, used in ((AUDIO, model_class.uses_audio), (CF, model_class.uses_cf),
                                             (FEATURES, model_class.uses_features)) if used)


def _class(target: str) -> type:
    import importlib

    module_name, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), name)


def fitting_models(inputs: Iterable[str]) -> list[str]:
    """The names of :data:`MODELS` whose inputs are all in ``inputs``, in table order."""
    inputs = frozenset(inputs)
    return [name for name, target in MODELS.items() if model_inputs(_class(target)) <= inputs]


def auto_model(inputs: Iterable[str]) -> str | None:
    """The ``model=auto`` choice for a dataset holding ``inputs``; None when no model fits."""
    inputs = frozenset(inputs)
    return next((name for name in AUTO_ORDER if model_inputs(_class(MODELS[name])) <= inputs), None)


def model_name(target: str) -> str:
    """The config name of a model class (``tagretrieval.models.HybridModel`` -> ``hybrid``), else its class name."""
    return next((name for name, known in MODELS.items() if known == target), target.rsplit(".", 1)[-1])
