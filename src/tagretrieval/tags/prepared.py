"""Tag word vectors stored by an importer in its prepared folder (``tag_encoder=prepared``).

Some datasets ship the tag vectors their paper used (MSD500: ``google_emb.pkl``/``music_emb.pkl``), or are
imported with a word-vector file that already decided which tags to keep. The importer writes them as::

    <prepared_dir>/word_vectors_<name>.npz    tags (str [n]), vectors (float32 [n, dim])

and :class:`PreparedVectors` hands them to the tag branch like any other tag encoder. Tags are looked up by
name, so the file stays valid when the dataset is restricted to some of its tags.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from tagretrieval.runtime.files import atomic_savez

_NAME = re.compile(r"[A-Za-z0-9_-]+")


def prepared_vectors_path(prepared_dir: str | Path, name: str) -> Path:
    """``<prepared_dir>/word_vectors_<name>.npz``; ``name`` is made of ``[A-Za-z0-9_-]``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"word-vector set names are made of letters, digits, '_' and '-', got {name!r}")
    return Path(prepared_dir) / f"word_vectors_{name}.npz"


def write_prepared_vectors(prepared_dir: str | Path, name: str, *, tags: Sequence[str],
                           vectors: np.ndarray) -> Path:
    """Write ``vectors [n_tags, dim]`` (finite) for ``tags`` atomically; returns the file."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(tags):
        raise ValueError(f"word vectors {vectors.shape} do not match {len(tags)} tags")
    bad = [t for t, row in zip(tags, vectors) if not np.isfinite(row).all()]
    if bad:
        raise ValueError(f"word vectors '{name}' contain NaN/inf for tag(s): {bad}")
    return atomic_savez(prepared_vectors_path(prepared_dir, name), tags=np.asarray(list(tags), dtype=str),
                        vectors=vectors)


class PreparedVectors:
    """The word vectors ``<prepared_dir>/word_vectors_<name>.npz`` written by the importer.

    Args:
        prepared_dir: the prepared dataset folder (``${data.prepared_dir}``).
        name: which stored set (``${data.word_vectors}``: ``google`` or ``music`` for MSD500).
        dim: expected vector size (the model's ``word_dim``); a file of another size is refused.
        drop_missing: drop tags without a stored vector instead of refusing them.
    """

    trainable = False

    def __init__(self, *, prepared_dir: str, name: str, dim: int = 300, drop_missing: bool = False) -> None:
        self.path = prepared_vectors_path(prepared_dir, name)
        self.name = name
        self.dim = dim
        self.drop_missing = drop_missing

    def table(self) -> dict[str, np.ndarray]:
        """tag -> float32 vector ``[dim]``."""
        if not self.path.exists():
            raise FileNotFoundError(
                f"no stored word vectors '{self.name}' at {self.path}: prepare the data first (mode=prepare), "
                "and check that the dataset provides this set (data.word_vectors)"
            )
        with np.load(self.path, allow_pickle=False) as data:
            tags, vectors = [str(t) for t in data["tags"]], np.asarray(data["vectors"], dtype=np.float32)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"{self.path} holds {vectors.shape[1]}-d vectors, tag_encoder.dim is {self.dim}")
        return dict(zip(tags, vectors))

    def vectors(self, tags: Sequence[str], *, train_tag_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
        """``([n_tags, dim] float32, missing tags)``; missing rows are zero and must be dropped or refused."""
        table = self.table()
        out = np.zeros((len(tags), self.dim), dtype=np.float32)
        missing = []
        for j, tag in enumerate(tags):
            if tag in table:
                out[j] = table[tag]
            else:
                missing.append(tag)
        return out, missing
