"""Loading checkpoints: ours (Lightning, self-describing) and the reference implementation's."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from tagretrieval.models import TagRetrievalModel
from tagretrieval.models.reference import model_from_reference


def read_checkpoint(path: str | Path, *, trusted: bool = False) -> dict:
    """``torch.load`` on CPU, refusing arbitrary pickled objects unless ``trusted``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds pickled objects other than tensors and plain containers ({error}). If you trust the "
            "file, pass trusted=True (API) / checkpoint_trusted=true (main.py), or re-save only its state_dict: "
            "torch.save({'state_dict': torch.load(path, weights_only=False)['state_dict']}, new_path)"
        ) from None


def is_ours(checkpoint: dict) -> bool:
    """True for checkpoints written by :class:`tagretrieval.module.TagRetrievalModule`."""
    hparams = checkpoint.get("hyper_parameters") or {}
    return isinstance(hparams.get("model"), dict) and "_target_" in hparams["model"]


def module_from_checkpoint(checkpoint: dict):
    """A :class:`TagRetrievalModule` rebuilt from one of our checkpoint dicts, in eval mode, without any config tree."""
    from tagretrieval.module import TagRetrievalModule

    if not is_ours(checkpoint):
        raise ValueError("not a tagretrieval checkpoint (no model spec in its hyper_parameters)")
    module = TagRetrievalModule(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
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
        raise ValueError(f"{path}: neither a tagretrieval checkpoint nor a reference one (no 'state_dict')")
    return model_from_reference(checkpoint["state_dict"]).eval()
