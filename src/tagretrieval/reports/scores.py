"""The score matrix of a split (every tag against every song), cached as ``DIR/metrics/<split>_scores.npz``.

Precision-recall curves need the scores, not only the metrics. They are computed once from the checkpoint and the
dataset (:func:`compute_scores`) and saved, so that later reports and notebooks reload them in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tagretrieval.evaluation import RetrievalResults, to_arrays
from tagretrieval.runtime.files import atomic_savez
from tagretrieval.training.module import TagRetrievalModule, scores_matrix, song_inputs

FORMAT_VERSION = 1
_FIELDS = ("format_version", "split", "scores", "relevance", "tags", "categories", "track_ids")


@dataclass(frozen=True)
class ScoreMatrix:
    """Cosine scores of one split.

    Attributes:
        split: ``"valid"`` or ``"test"``.
        scores: ``float32 [n_tags, n_songs]``, row ``i`` ranks the songs for ``tags[i]``.
        relevance: ``bool [n_tags, n_songs]``, the songs that carry each tag.
        tags: ``[n_tags]`` tag names, in the checkpoint's order.
        categories: ``[n_tags]`` category of each tag.
        track_ids: ``[n_songs]`` the songs, in the dataset's row order.
    """

    split: str
    scores: np.ndarray
    relevance: np.ndarray
    tags: list[str]
    categories: list[str]
    track_ids: list[str]

    def __post_init__(self) -> None:
        scores, _ = to_arrays(self.scores, self.relevance)  # checks shapes, finiteness, 0/1
        n_tags, n_songs = scores.shape
        if len(self.tags) != n_tags or len(self.categories) != n_tags or len(self.track_ids) != n_songs:
            raise ValueError(f"scores are [{n_tags} tags, {n_songs} songs] but got {len(self.tags)} tags, "
                             f"{len(self.categories)} categories and {len(self.track_ids)} track ids")

    def results(self, *, k: int = 10) -> RetrievalResults:
        """The retrieval metrics of these scores (as the training computed them)."""
        return RetrievalResults.compute(scores=self.scores, relevance=self.relevance, tags=self.tags,
                                        categories=self.categories, split=self.split, k=k)

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (strings as fixed-width unicode arrays: loads without pickle), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_savez(
            path, compressed=True, format_version=np.int64(FORMAT_VERSION), split=np.str_(self.split),
            scores=np.asarray(self.scores, dtype=np.float32), relevance=np.asarray(self.relevance, dtype=bool),
            tags=np.asarray(self.tags, dtype=str), categories=np.asarray(self.categories, dtype=str),
            track_ids=np.asarray(self.track_ids, dtype=str),
        )

    @classmethod
    def load(cls, path: str | Path) -> ScoreMatrix:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: other fields or another format version (the message names the file).
        """
        with np.load(path, allow_pickle=False) as data:
            if set(data.files) != set(_FIELDS):
                raise ValueError(f"{path}: expected fields {list(_FIELDS)}, found {sorted(data.files)}")
            if int(data["format_version"]) != FORMAT_VERSION:
                raise ValueError(f"{path}: score format version {int(data['format_version'])}, "
                                 f"this code reads {FORMAT_VERSION}; delete the file to recompute it")
            return cls(split=str(data["split"]), scores=data["scores"], relevance=data["relevance"],
                       tags=data["tags"].tolist(), categories=data["categories"].tolist(),
                       track_ids=data["track_ids"].tolist())


@torch.no_grad()
def compute_scores(*, module: TagRetrievalModule, batches: Iterable[dict], track_ids: Sequence[str],
                   split: str) -> ScoreMatrix:
    """Embed every song of ``batches`` and score it against every tag of ``module`` (on CPU, in eval mode).

    Args:
        module: a trained module (``tagretrieval.training.checkpoints.load_module``).
        batches: evaluation batches of one split, e.g. ``datamodule.songs_dataloader("test")``: each holds
            ``row [B]`` (dataset row), ``labels [B, n_tags]`` and the song inputs (``mel [B, n_chunks, n_mels,
            chunk_frames]``, ``cf [B, cf_dim]``, ``features [B, n_features]``) the model uses.
        track_ids: ``[n_rows]`` track id of every dataset row (``dataset.track_ids``).
        split: the split the batches cover.

    Returns:
        scores and relevance with songs in row order, as in the module's own evaluation.
    """
    module = module.eval()
    rows, embeddings, labels = [], [], []
    for batch in batches:
        batch = module.on_after_batch_transfer(batch, 0)  # as Lightning hands it to the module (e.g. the mel layout)
        inputs = song_inputs(batch)
        embeddings.append(module.model.embed_song_chunks(inputs.pop("mel", None), **inputs))
        rows.append(batch["row"])
        labels.append(batch["labels"])
    if not rows:
        raise ValueError(f"split {split!r} has no songs to score")
    order = torch.argsort(torch.cat(rows))
    songs = torch.cat(embeddings)[order]
    relevance = torch.cat(labels)[order].T.bool()
    scores = scores_matrix(module.tag_embeddings(), songs)
    return ScoreMatrix(split=split, scores=scores.float().numpy(), relevance=relevance.numpy(),
                       tags=module.tags, categories=list(module.hparams["categories"]),
                       track_ids=[track_ids[int(r)] for r in torch.cat(rows)[order]])
