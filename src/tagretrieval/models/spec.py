"""Rebuild objects from a JSON-able spec: ``{"_target_": "tagretrieval.X", **kwargs}``.

A checkpoint stores ``model.spec()`` next to the weights, so it can be reloaded without the Hydra
config tree (and without Hydra: the library never imports it). ``build_from_spec`` is a deliberately
small subset of ``hydra.utils.instantiate``: one level, no ``_partial_``/``_args_``, and only the classes listed
in :data:`BUILDABLE`: the models, the losses and the tag encoders. A spec is data (a checkpoint may come from
anyone), so it must not be able to name any other function of ours, let alone arbitrary code: a checkpoint
naming e.g. ``tagretrieval.tags.prepared.write_prepared_vectors`` is refused before anything is imported.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from tagretrieval.runtime.errors import DataError

__all__ = ["BUILDABLE", "MOVED", "SpecMixin", "build_from_spec", "current_target", "resolve_target"]

# The only targets a spec may name (their import paths as ``spec()`` writes them). A new model, loss or tag
# encoder class must be added here to be rebuilt from a checkpoint (tests/test_safety.py checks every conf file).
BUILDABLE: frozenset[str] = frozenset({
    # models (conf/model)
    "tagretrieval.models.AcousticModel",
    "tagretrieval.models.ConcatModel",
    "tagretrieval.models.CulturalModel",
    "tagretrieval.models.HybridModel",
    "tagretrieval.models.features.FeaturesModel",
    "tagretrieval.models.fused.FusedModel",
    "tagretrieval.models.musicnn.MusicnnModel",
    # losses (conf/loss)
    "tagretrieval.training.losses.InfoNCELoss",
    "tagretrieval.training.losses.MultiLabelLoss",
    "tagretrieval.training.losses.TripletLoss",
    # tag encoders (conf/tag_encoder): a checkpoint keeps its encoder's settings to embed queries later
    "tagretrieval.tags.pitch.PitchEncoder",
    "tagretrieval.tags.prepared.PreparedVectors",
    "tagretrieval.tags.sentence.SentenceEncoder",
    "tagretrieval.tags.encoders.Cooccurrence",
    "tagretrieval.tags.encoders.Learned",
    "tagretrieval.tags.encoders.Word2VecFile",
})


# Where the targets of checkpoints written before the packages were reorganised (up to commit bf078ad) live now: a
# stored old name is read as its new one, so those checkpoints still load (tests/test_old_checkpoints.py). Keys are
# old import paths, values entries of BUILDABLE or of the data allow-lists (tagretrieval.training.checkpoints).
MOVED: dict[str, str] = {
    "tagretrieval.losses.InfoNCELoss": "tagretrieval.training.losses.InfoNCELoss",
    "tagretrieval.losses.MultiLabelLoss": "tagretrieval.training.losses.MultiLabelLoss",
    "tagretrieval.losses.TripletLoss": "tagretrieval.training.losses.TripletLoss",
    "tagretrieval.pitch_encoder.PitchEncoder": "tagretrieval.tags.pitch.PitchEncoder",
    "tagretrieval.prepared_vectors.PreparedVectors": "tagretrieval.tags.prepared.PreparedVectors",
    "tagretrieval.sentence_encoder.SentenceEncoder": "tagretrieval.tags.sentence.SentenceEncoder",
    "tagretrieval.tag_encoders.Cooccurrence": "tagretrieval.tags.encoders.Cooccurrence",
    "tagretrieval.tag_encoders.Learned": "tagretrieval.tags.encoders.Learned",
    "tagretrieval.tag_encoders.Word2VecFile": "tagretrieval.tags.encoders.Word2VecFile",
    "tagretrieval.song_features.HandcraftedSongFeatures": "tagretrieval.data.song_features.HandcraftedSongFeatures",
    # the dataset sub-packages (data/<dataset>/); the other importers kept their paths (each package exports its class)
    "tagretrieval.data.synthetic_importer.SyntheticImporter": "tagretrieval.data.synthetic.SyntheticImporter",
}


def current_target(target: object) -> object:
    """``target`` under its present import path: an old name of :data:`MOVED` becomes its new one; anything else
    (including non-strings, which the callers refuse) is returned unchanged."""
    return MOVED.get(target, target) if isinstance(target, str) else target


def _to_json(value: Any, *, where: str) -> Any:
    """Copy ``value`` into plain JSON types (tuples become lists); raise TypeError otherwise."""
    if isinstance(value, (bool, str, type(None))):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes):  # also OmegaConf ListConfig
        return [_to_json(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: _to_json(item, where=f"{where}.{key}") for key, item in value.items()}
    raise TypeError(
        f"constructor argument {where} = {value!r} ({type(value).__name__}) is not JSON-able; "
        "spec() can only record bool/int/float/str/None and lists/dicts of them"
    )


class SpecMixin:
    """Record the keyword arguments of ``__init__`` so that ``spec()`` is automatic.

    Every subclass's ``__init__`` is wrapped; after it runs, the bound arguments (defaults applied)
    are stored as JSON. The most-derived class finishes last, so its arguments win. A subclass may
    declare the public import path it should be rebuilt from::

        class HybridModel(TagRetrievalModel, spec_target="tagretrieval.models.HybridModel"): ...

    otherwise ``module.QualName`` is used.
    """

    _spec_target: ClassVar[str]
    _spec_kwargs: dict[str, Any]

    def __init_subclass__(cls, *, spec_target: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._spec_target = spec_target or f"{cls.__module__}.{cls.__qualname__}"
        original = cls.__dict__.get("__init__")
        if original is None:
            return
        signature = inspect.signature(original)
        for name, parameter in signature.parameters.items():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise TypeError(f"{cls.__qualname__}.__init__ takes *{name}; spec() needs plain keyword arguments")

        @functools.wraps(original)
        def __init__(self: SpecMixin, *args: Any, **init_kwargs: Any) -> None:
            original(self, *args, **init_kwargs)
            bound = signature.bind(self, *args, **init_kwargs)
            bound.apply_defaults()
            recorded = {name: value for name, value in bound.arguments.items() if name != "self"}
            self._spec_kwargs = {
                name: _to_json(value, where=f"{cls.__qualname__}({name})") for name, value in recorded.items()
            }

        cls.__init__ = __init__  # type: ignore[misc]

    def spec(self) -> dict[str, Any]:
        """JSON-able ``{"_target_": "tagretrieval....", **constructor kwargs}`` (defaults included)."""
        return {"_target_": type(self)._spec_target, **_to_json(self._spec_kwargs, where="spec")}


def resolve_target(target: str) -> Any:
    """The class a spec's ``target`` names; only the targets of :data:`BUILDABLE` are imported.

    Raises:
        DataError (a ValueError): ``target`` is not in :data:`BUILDABLE`.
    """
    target = current_target(target)
    if not isinstance(target, str) or target not in BUILDABLE:
        raise DataError(
            f"refusing _target_ {target!r}: a spec (e.g. in a checkpoint) may only name a model, loss or tag "
            f"encoder class of tagretrieval ({', '.join(sorted(t.rsplit('.', 1)[-1] for t in BUILDABLE))}); "
            "the file was not made by this version of tagretrieval, or was crafted"
        )
    module_name, name = target.rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:  # BUILDABLE names a class that moved: a bug of ours
        raise RuntimeError(f"BUILDABLE lists {target!r}, which names nothing importable ({error})") from error


def build_from_spec(spec: Mapping[str, Any]) -> object:
    """Build ``spec["_target_"](**other keys)``; the target must be one of :data:`BUILDABLE`.

    Args:
        spec: e.g. ``{"_target_": "tagretrieval.models.HybridModel", "embedding_dim": 256, ...}``,
            typically the output of ``SpecMixin.spec()``.

    Raises:
        DataError (a ValueError): missing or refused ``_target_``, or other ``_underscore_`` keys (not supported).
        TypeError: the target does not accept the given keyword arguments (unknown keys fail loudly).
    """
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise DataError(f"a spec must be a mapping with a '_target_' key, got {spec!r}")
    target = spec["_target_"]
    kwargs = {key: value for key, value in spec.items() if key != "_target_"}
    special = sorted(key for key in kwargs if key.startswith("_") and key.endswith("_"))
    if special:
        raise DataError(f"build_from_spec does not support {special} (only '_target_'); spec target {target!r}")
    factory = resolve_target(target)
    if not callable(factory):
        raise DataError(f"_target_ {target!r} is not callable")
    try:
        return factory(**kwargs)
    except TypeError as error:
        raise TypeError(f"cannot build {target} from spec keys {sorted(kwargs)}: {error}") from error
