"""Loading checkpoints: ours (Lightning, self-describing) and the reference implementation's.

A checkpoint is data that may come from anyone. It is read with ``torch.load(weights_only=True)`` (tensors and
plain containers only) unless the user trusts it, and what it may make us build is limited: the model, loss and tag
encoder classes of :data:`tagretrieval.models.spec.BUILDABLE`, and, for the dataset it was trained on
(:func:`data_config`), one of the importers of :data:`DATA_IMPORTERS` with plain values.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from tagretrieval.runtime.errors import DataError, MissingFileError
from tagretrieval.models import TagRetrievalModel
from tagretrieval.models.reference import model_from_reference
from tagretrieval.models.spec import current_target

# The importers a checkpoint's data config may name (the `_target_`s of conf/data; tests/test_safety.py checks
# that every file there is listed), and the front end of its `audio` config.
DATA_IMPORTERS: frozenset[str] = frozenset({
    "tagretrieval.data.fma.FMAImporter",
    "tagretrieval.data.folder.FolderImporter",
    "tagretrieval.data.jamendo.JamendoImporter",
    "tagretrieval.data.minimusicnet.MiniMusicNetImporter",
    "tagretrieval.data.msd500.MSD500Importer",
    "tagretrieval.data.mtat.MTATImporter",
    "tagretrieval.data.synthetic.SyntheticImporter",
})
AUDIO_FRONTEND = "tagretrieval.audio.MelFrontend"
SONG_FEATURES: frozenset[str] = frozenset({  # conf/song_features
    "tagretrieval.data.song_features.HandcraftedSongFeatures",
    "tagretrieval.data.song_features.MusicnnSongFeatures",
})


def read_checkpoint(path: str | Path, *, trusted: bool = False) -> dict:
    """``torch.load`` on CPU, refusing arbitrary pickled objects unless ``trusted``.

    Raises:
        MissingFileError: no such file.
        DataError: not a readable checkpoint (truncated, another format), or it holds pickled objects and
            ``trusted`` is False.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():
            raise DataError(f"{path} is not a readable checkpoint (corrupt or not written by torch.save): "
                            f"{_first_line(error)}") from None
        raise DataError(
            f"{path} holds pickled objects other than tensors and plain containers ({_first_line(error)}). If you "
            "trust the file, pass trusted=True (API) / trust_pickles=true (main.py), or re-save only its "
            "state_dict: torch.save({'state_dict': torch.load(path, weights_only=False)['state_dict']}, new_path)"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as error:  # what torch.load raises on bad bytes
        raise DataError(f"{path} is not a readable checkpoint (truncated, e.g. by an interrupted copy, or not a "
                        f"torch file): {type(error).__name__}: {_first_line(error)}") from None
    if not isinstance(checkpoint, dict):
        raise DataError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint (a dict with a state_dict)")
    return checkpoint


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


def is_ours(checkpoint: dict) -> bool:
    """True for checkpoints written by :class:`tagretrieval.training.module.TagRetrievalModule`."""
    hparams = checkpoint.get("hyper_parameters") or {}
    return isinstance(hparams.get("model"), dict) and "_target_" in hparams["model"]


def module_from_checkpoint(checkpoint: dict):
    """A :class:`TagRetrievalModule` rebuilt from one of our checkpoint dicts, in eval mode, without any config tree."""
    from tagretrieval.training.module import TagRetrievalModule

    if not is_ours(checkpoint):
        raise DataError("not a tagretrieval checkpoint (no model spec in its hyper_parameters)")
    try:
        module = TagRetrievalModule(**checkpoint["hyper_parameters"])
    except TypeError as error:
        raise DataError(f"the checkpoint's settings do not fit this version of tagretrieval: {error}") from None
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as error:
        raise DataError("the checkpoint's weights do not fit the model its settings describe (written by another "
                        f"version, or edited): {_first_line(error)}") from None
    return module.eval()


def load_module(path: str | Path, *, trusted: bool = False):
    """One of our checkpoint files as a :class:`TagRetrievalModule` in eval mode, on CPU."""
    return module_from_checkpoint(read_checkpoint(path, trusted=trusted))


def load_model(path: str | Path, *, trusted: bool = False) -> TagRetrievalModel:
    """The network of one of our checkpoints or of a reference checkpoint (kind inferred from its keys), in eval mode.

    The model has ``embed_tags(word_vectors [B, 300]) -> [B, D]`` and ``embed_songs(mel [B, 128, T], cf [B, 200])
    -> [B, D]`` (outputs before normalisation; a mel longer than one chunk is cut into evaluation chunks, averaged).
    """
    checkpoint = read_checkpoint(path, trusted=trusted)
    if is_ours(checkpoint):
        return module_from_checkpoint(checkpoint).model
    if "state_dict" not in checkpoint:
        raise DataError(f"{path}: neither a tagretrieval checkpoint nor a reference one (no 'state_dict')")
    return model_from_reference(checkpoint["state_dict"]).eval()


def data_config(checkpoint: dict) -> dict | None:
    """The data the checkpoint was trained on: ``{"data": importer config, "audio": front-end config,
    "chunk_frames": int, "song_features": config or {}}`` as stored by training (plain values; ``song_features`` only
    in checkpoints that recorded it), or None when it has none (a reference checkpoint, or one written before
    checkpoints kept it).

    Raises:
        DataError: the stored config names something other than an importer of :data:`DATA_IMPORTERS` and the
            front end, or holds nested targets, ``_special_`` keys or interpolations (nothing but plain values
            may reach ``instantiate``).
    """
    stored = (checkpoint.get("hyper_parameters") or {}).get("data_config")
    if stored is None:
        return None
    required = {"data", "audio", "chunk_frames"}
    if not isinstance(stored, Mapping) or not required <= set(stored) <= required | {"song_features"}:
        raise DataError(f"the checkpoint's data_config must hold data, audio and chunk_frames (and song_features), "
                        f"got {stored!r:.200}")
    for key, allowed in (("data", DATA_IMPORTERS), ("audio", frozenset({AUDIO_FRONTEND})),
                         ("song_features", SONG_FEATURES)):
        if key not in stored or (key == "song_features" and stored[key] == {}):  # {}: song_features=none
            continue
        node = stored[key]
        if isinstance(node, Mapping) and "_target_" in node:  # a checkpoint from before the move names the old path
            node = {**node, "_target_": current_target(node["_target_"])}
            stored = {**stored, key: node}
        target = node.get("_target_") if isinstance(node, Mapping) else None
        if target not in allowed:
            raise DataError(f"refusing the checkpoint's {key} config: _target_ {target!r} is not one of "
                            f"{', '.join(sorted(allowed))}")
        _check_plain(node, where=key, top=True)
    if not isinstance(stored["chunk_frames"], int) or isinstance(stored["chunk_frames"], bool):
        raise DataError(f"the checkpoint's chunk_frames must be an integer, got {stored['chunk_frames']!r}")
    return {"data": dict(stored["data"]), "audio": dict(stored["audio"]), "chunk_frames": stored["chunk_frames"],
            **({"song_features": dict(stored["song_features"])} if "song_features" in stored else {})}


def _check_plain(value, *, where: str, top: bool = False) -> None:
    """Refuse anything in a stored config that Hydra/OmegaConf would act on: nested targets, special keys, ``${}``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or (key.startswith("_") and key.endswith("_") and not (top and key == "_target_")):
                raise DataError(f"refusing the checkpoint's data config: key {key!r} in {where}")
            _check_plain(item, where=f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, where=f"{where}[{i}]")
    elif isinstance(value, str):
        if "${" in value:
            raise DataError(f"refusing the checkpoint's data config: {where} holds an interpolation ({value!r})")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise DataError(f"refusing the checkpoint's data config: {where} is a {type(value).__name__}")
