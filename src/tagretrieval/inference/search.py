"""The Python API of a trained model: embed tags, free-text queries and songs; rank songs and tags.

::

    from tagretrieval.audio import MelFrontend
    from tagretrieval.data.prepared import PreparedDataset
    from tagretrieval.inference import ExactIndex, Searcher

    searcher = Searcher.from_checkpoint("outputs/.../checkpoints/best.ckpt")
    dataset = PreparedDataset.load("data/synthetic/prepared")
    songs = searcher.embed_dataset(dataset, frontend=MelFrontend())      # [n_tracks, D]
    scores, rows = searcher.search(["piano", "sad piano"], ExactIndex(songs), k=10)  # [2, 10] each
    dataset.track_ids[rows[0, 0]]                                         # best track for "piano"
    scores, columns = searcher.tag(songs[:3], k=5)                       # [3, 5]: top tags of 3 songs
    [searcher.tags[j] for j in columns[0]]

Every embedding returned here is an L2-normalised float32 numpy array, so a dot product is the cosine
similarity the model was trained with. ``D`` is the model's ``embedding_dim``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tagretrieval.audio import MelFrontend, MelStore, mel_from_file
from tagretrieval.data.datamodule import SongInputs, song_loader, to_model_layout
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.runtime.errors import ConfigError
from tagretrieval.inference.index import ExactIndex, Index, normalize_rows
from tagretrieval.inference.queries import QueryVocabulary, encoder_name
from tagretrieval.models import TagRetrievalModel, build_from_spec, resolve_target
from tagretrieval.training.module import song_inputs


def encoder_from_spec(spec: Mapping | None, *, word_vectors: str | Path | None = None,
                      trusted: bool = False, local: Mapping | None = None) -> object | None:
    """The checkpoint's tag encoder when it can embed free text (its class has ``lookup``), else None.

    Encoders without ``lookup`` (co-occurrence, learned, ...) are not built: their vectors are in the checkpoint.

    Args:
        spec: ``module.hparams["tag_encoder"]`` (``{"_target_": ..., **settings}``) or None.
        word_vectors: a word-vector file replacing the spec's ``path`` (the file moved since training).
        trusted: let the encoder load a word-vector file that is a pickle (gensim ``.model``/``.kv``). This is the
            caller's decision: a ``trust_pickle`` stored in the spec (i.e. in the checkpoint) is ignored.
        local: the current run's settings of the encoder (``cfg.tag_encoder``), or None. The settings an encoder
            class lists in ``LOCAL_SETTINGS`` (where it loads a model from, where it writes a cache) are taken from
            them or from the class's defaults, never from the spec; a spec whose ``model`` differs from the one this
            run would load is refused (its vectors would differ).
    """
    encoder_class = None if spec is None else resolve_target(spec["_target_"])
    if encoder_class is None or not callable(getattr(encoder_class, "lookup", None)):
        if word_vectors is not None:
            raise ConfigError(f"word_vectors={word_vectors} given, but the checkpoint's tag encoder "
                              f"({None if spec is None else spec['_target_']}) reads no word-vector file: its tag "
                              "vectors are in another space, so other word vectors cannot be queried")
        return None
    spec = {key: value for key, value in spec.items() if key != "trust_pickle"}
    spec = _local_settings(encoder_class, spec, local)
    if "trust_pickle" in inspect.signature(encoder_class).parameters:
        spec["trust_pickle"] = trusted
    if word_vectors is not None:
        spec["path"] = str(word_vectors)
    return build_from_spec(spec)


def _local_settings(encoder_class, spec: dict, local: Mapping | None) -> dict:
    """``spec`` with the encoder's ``LOCAL_SETTINGS`` from ``local`` (same target only) or the class defaults."""
    names = getattr(encoder_class, "LOCAL_SETTINGS", ())
    if not names:
        return spec
    if local is not None and local.get("_target_") != f"{encoder_class.__module__}.{encoder_class.__qualname__}":
        local = None  # the run configures another encoder: the defaults
    parameters = inspect.signature(encoder_class).parameters
    here = {name: (local or {}).get(name, parameters[name].default) for name in names}
    if "model" in here and spec.get("model", here["model"]) != here["model"]:
        raise ConfigError(f"the checkpoint's tag encoder was tag_encoder.model={spec['model']}, this run would load "
                          f"{here['model']} (its vectors would differ): a checkpoint does not choose what is loaded; "
                          f"if you trust that model, give tag_encoder={_config_name(encoder_class)} "
                          f"tag_encoder.model={spec['model']} on the command line")
    return {**spec, **here}


def _config_name(encoder_class) -> str:
    return {"SentenceEncoder": "sentence"}.get(encoder_class.__name__, encoder_class.__name__)


class Searcher:
    """A trained model plus its tag vocabulary, ready to embed and rank.

    Args:
        model: the network (from :func:`tagretrieval.training.checkpoints.load_model` or a module's ``.model``).
        tags, categories: the vocabulary ``[n_tags]`` and each tag's category.
        tag_vectors: word vectors of the tags ``[n_tags, word_dim]`` (the tag branch's inputs).
        encoder: a tag encoder with ``lookup(text)`` for zero-shot queries (a word-vector file), or None.
        encoder_label: how messages name the encoder; None: its class name.
        device: where the model runs (``"cpu"``, ``"cuda"``); results always come back as CPU numpy.
    """

    def __init__(self, *, model: TagRetrievalModel, tags: Sequence[str], categories: Sequence[str],
                 tag_vectors: np.ndarray | torch.Tensor, encoder: object | None = None,
                 encoder_label: str | None = None, device: str | torch.device = "cpu") -> None:
        if len(tags) != len(categories):
            raise ValueError(f"{len(tags)} tags but {len(categories)} categories")
        if encoder_label is None:
            encoder_label = "none" if encoder is None else type(encoder).__name__
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.tags = list(tags)
        self.categories = list(categories)
        vectors = torch.as_tensor(tag_vectors).detach().float().cpu().numpy()
        self.vocabulary = QueryVocabulary(tags=self.tags, tag_vectors=vectors, encoder=encoder,
                                          encoder_name=encoder_label)

    @classmethod
    def from_module(cls, module, *, word_vectors: str | Path | None = None, device: str | torch.device = "cpu",
                    trusted: bool = False, local_encoder: Mapping | None = None) -> "Searcher":
        """From a :class:`~tagretrieval.training.module.TagRetrievalModule` (tags, tag vectors and encoder spec inside);
        ``trusted``: its word-vector file may be a pickle; ``local_encoder``: the run's tag-encoder settings (see
        :func:`encoder_from_spec`)."""
        spec = module.hparams["tag_encoder"]
        encoder = encoder_from_spec(spec, word_vectors=word_vectors, trusted=trusted, local=local_encoder)
        return cls(model=module.model, tags=module.tags, categories=module.hparams["categories"],
                   tag_vectors=module.tag_vectors, encoder=encoder,
                   encoder_label=encoder_name(spec, encoder), device=device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, trusted: bool = False, word_vectors: str | Path | None = None,
                        device: str | torch.device = "cpu") -> "Searcher":
        """From one of our checkpoint files (a reference checkpoint has no tag vocabulary: see ``__init__``);
        ``trusted``: the checkpoint and its word-vector file may hold pickled objects (only files you trust)."""
        from tagretrieval.training.checkpoints import load_module

        return cls.from_module(load_module(path, trusted=trusted), word_vectors=word_vectors, device=device,
                               trusted=trusted)

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    # -- tags and queries ---------------------------------------------------------------------------
    @torch.no_grad()
    def _embed_word_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """``[n, word_dim]`` -> normalised ``[n, D]``."""
        if len(vectors) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        out = self.model.embed_tags(torch.from_numpy(vectors).to(self.device))
        return normalize_rows(out.float().cpu().numpy())

    def tag_embeddings(self) -> np.ndarray:
        """Embeddings of the training tags, ``[n_tags, D]``, row ``j`` for ``tags[j]``."""
        return self._embed_word_vectors(self.vocabulary.tag_vectors)

    def query_vector(self, text: str) -> np.ndarray:
        """The word vector ``[word_dim]`` of a query (see :mod:`tagretrieval.inference.queries`).

        Raises:
            UnknownQueryError: no training tag, word or combination of them spells ``text``.
        """
        return self.vocabulary.vector(text)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings ``[n_queries, D]`` of free-text queries (training tags or, zero-shot, other words)."""
        return self._embed_word_vectors(self.vocabulary.vectors(list(texts)))

    # -- songs ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_dataset(self, dataset: PreparedDataset, *, frontend: MelFrontend | None = None,
                      rows: np.ndarray | Sequence[int] | None = None, batch_size: int = 16,
                      progress: bool = False) -> np.ndarray:
        """Embeddings ``[n_rows, D]`` of a prepared dataset's tracks, exactly as evaluation embeds them.

        Args:
            dataset: the prepared dataset (its mel cache, CF vectors or features, whatever the model uses).
            frontend: the front end the model was trained with; checked against the mel cache's manifest.
                Needed when the model uses audio.
            rows: row indices into ``dataset.tracks``; None: every track, in order.
            batch_size: songs per forward pass.
        """
        model = self.model
        rows = np.arange(len(dataset.tracks)) if rows is None else np.asarray(rows, dtype=np.int64)
        mel_store = None
        if model.uses_audio and hasattr(model, "mel_frontend"):  # a front end of its own (models.musicnn)
            mel_store = MelStore.open(dataset.root / model.mel_store_name, frontend=model.mel_frontend())
        elif model.uses_audio:
            if frontend is None:
                raise ValueError(f"{type(model).__name__} embeds audio: pass the front end it was trained with "
                                 "(frontend=MelFrontend(...), conf `audio`)")
            mel_store = MelStore.open(dataset.mel_dir, frontend=frontend)
        for needed, values, what in ((model.uses_cf, dataset.cf, "CF vectors (listening data)"),
                                     (model.uses_features, dataset.features, "song features")):
            if needed and values is None:
                raise ValueError(f"{type(model).__name__} needs {what}, but dataset '{dataset.name}' has none "
                                 f"({dataset.root})")
        inputs = SongInputs(dataset, mel_store=mel_store, use_cf=model.uses_cf, use_features=model.uses_features,
                            chunk_frames=model.chunk_frames if model.uses_audio else 0)
        n_chunks = model.n_eval_chunks if model.uses_audio else 1
        loader = song_loader(inputs, rows, n_chunks=n_chunks, batch_size=batch_size)
        out = []
        for batch in tqdm(loader, desc="embedding songs", unit="batch", disable=not progress):
            batch = {name: value.to(self.device) for name, value in song_inputs(batch).items()}
            if "mel" in batch:
                batch["mel"] = to_model_layout(batch["mel"])
            out.append(model.embed_song_chunks(batch.pop("mel", None), **batch).float().cpu())
        if not out:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return normalize_rows(torch.cat(out).numpy())

    @torch.no_grad()
    def embed_mels(self, mels: Sequence[np.ndarray], *, cf: np.ndarray | None = None) -> np.ndarray:
        """Embeddings ``[n, D]`` of whole songs given as log-mels ``[n_mels, n_frames]`` (any length each).

        A song is cut into the model's evaluation chunks and their embeddings averaged, as evaluation does.
        ``cf [n, cf_dim]``: the songs' CF vectors, for models that use listening data.
        """
        model = self.model
        if not model.uses_audio:
            raise ValueError(f"{type(model).__name__} does not use audio: it embeds songs from "
                             f"{'CF vectors' if model.uses_cf else 'precomputed features'}, not from log-mels")
        if model.uses_cf and (cf is None or len(cf) != len(mels)):
            raise ValueError(f"{type(model).__name__} also needs a CF vector per song (cf [n={len(mels)}, "
                             f"{model.cf_dim}]), got {None if cf is None else np.shape(cf)}")
        out = []
        for i, mel in enumerate(mels):
            mel_t = torch.as_tensor(np.asarray(mel, dtype=np.float32))[None].to(self.device)  # [1, n_mels, T]
            cf_t = None if cf is None or not model.uses_cf else torch.as_tensor(cf[i:i + 1]).float().to(self.device)
            out.append(model.embed_songs(mel=mel_t, cf=cf_t).float().cpu())
        if not out:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return normalize_rows(torch.cat(out).numpy())

    def embed_audio_files(self, paths: Sequence[str | Path], *, frontend: MelFrontend,
                          cf: np.ndarray | None = None) -> np.ndarray:
        """Embeddings ``[n, D]`` of audio files (anywhere; decoded with ``load_audio``, mel by ``frontend``).

        Raises:
            AudioDecodeError: a file cannot be decoded (names the file).
            ValueError: the model needs CF vectors and ``cf`` is None: a file outside a dataset has no
                listening data; use an audio-only model (``model=acoustic``) or a dataset track.
        """
        model = self.model
        if model.uses_audio and model.uses_cf and cf is None:
            raise ValueError(
                f"{type(model).__name__} needs a CF vector (listening data) for every song, and the audio "
                f"file(s) {', '.join(str(p) for p in paths)} have none: tag tracks of the dataset by id instead, "
                "or use an audio-only model (model=acoustic)"
            )
        frontend = model.mel_frontend() if hasattr(model, "mel_frontend") else frontend  # models.musicnn's own
        if model.uses_audio and frontend.n_mels != model.n_mels:
            raise ValueError(f"the front end makes {frontend.n_mels} mel bands, the model takes {model.n_mels}")
        return self.embed_mels([mel_from_file(path, frontend) for path in paths], cf=cf)

    # -- ranking --------------------------------------------------------------------------------------
    def search(self, queries: Sequence[str], index: Index, *, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best songs of ``index`` per query: ``(scores, rows)``, each ``[n_queries, k]``, best first.

        ``rows`` index the embeddings the index was built from (``-1``: fewer hits than ``k``, approximate
        indexes only).
        """
        return index.search(self.embed_queries(queries), k)

    def tag(self, song_embeddings: np.ndarray, *, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best training tags per song: ``(scores, columns)``, each ``[n_songs, k]``, best first.

        ``song_embeddings [n_songs, D]`` from one of the ``embed_*`` methods; ``tags[columns[i, r]]`` is the
        ``r``-th tag of song ``i``.
        """
        return ExactIndex(self.tag_embeddings()).search(song_embeddings, k)
