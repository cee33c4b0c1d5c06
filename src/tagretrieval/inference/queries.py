"""Free-text queries -> word vectors ``[word_dim]`` for the tag branch (zero-shot retrieval).

A query is resolved, in this order:

1. a training tag (whitespace-normalised, case-insensitive): its stored tag vector, exactly what the model
   was trained on (for ``tag_encoder=learned`` the trained vector);
2. the tag encoder's ``lookup(text)`` when it has one (:class:`~tagretrieval.tags.encoders.Word2VecFile`): any
   word or phrase of the word-vector file, or the mean of its words' vectors when every word is known;
3. a combination of known pieces: the query is split into words and cut, left to right, into the longest
   pieces that are training tags (or, with a word-vector file, single known words); the query vector is the
   mean of the pieces' vectors (``"sad piano"`` = mean of ``sad`` and ``piano``; ``"sad hip hop"`` = mean of
   ``sad`` and the tag ``hip hop``).

Anything else raises :class:`UnknownQueryError`, naming the unknown words, near-miss tags and what the
encoder knows. The mean of word vectors is the usual word2vec phrase vector; the model never saw such a
mean during training unless the tag itself was multi-word, so combinations are a heuristic.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from tagretrieval.runtime.errors import DataError, UserError


class UnknownQueryError(UserError, ValueError):
    """A query has no word vector; the message names the unknown words and near-miss tags."""


class LookupEncoder(Protocol):
    """A tag encoder that embeds free text: ``lookup(text) -> [word_dim] float32 or None``."""

    def lookup(self, text: str) -> np.ndarray | None: ...


def normalise_query(text: str) -> str:
    """Collapse whitespace; ``"  sad   piano "`` -> ``"sad piano"``."""
    return " ".join(str(text).split())


class QueryVocabulary:
    """Word vectors of training tags and, through ``encoder``, of any other word the encoder knows.

    Args:
        tags: the checkpoint's tags ``[n_tags]``.
        tag_vectors: their word vectors ``[n_tags, word_dim]`` (the tag branch's inputs).
        encoder: a tag encoder with ``lookup`` (word-vector file), or None when only training tags are known
            (``cooccurrence``, ``learned``, reference checkpoints without a word-vector file).
        encoder_name: how to name the encoder in error messages (e.g. ``"Cooccurrence"``).
    """

    def __init__(self, *, tags: Sequence[str], tag_vectors: np.ndarray, encoder: LookupEncoder | None,
                 encoder_name: str) -> None:
        tag_vectors = np.asarray(tag_vectors, dtype=np.float32)
        if tag_vectors.ndim != 2 or len(tag_vectors) != len(tags):
            raise ValueError(f"tag_vectors {tag_vectors.shape} must be [n_tags={len(tags)}, word_dim]")
        self.tags = list(tags)
        self.tag_vectors = tag_vectors
        self.word_dim = tag_vectors.shape[1]
        self.encoder = encoder
        self.encoder_name = encoder_name
        self._column: dict[str, int] = {}
        for j, tag in enumerate(self.tags):            # exact spelling first, then a lower-case alias
            self._column.setdefault(normalise_query(tag), j)
        for j, tag in enumerate(self.tags):
            self._column.setdefault(normalise_query(tag).lower(), j)

    def tag_index(self, text: str) -> int | None:
        """Column of a training tag spelled ``text`` (case-insensitively), else None."""
        text = normalise_query(text)
        return self._column.get(text, self._column.get(text.lower()))

    def _lookup(self, text: str) -> np.ndarray | None:
        if self.encoder is None:
            return None
        try:
            vector = self.encoder.lookup(text)
        except FileNotFoundError as error:
            raise UnknownQueryError(
                f"query {text!r} is not a training tag, and the word vectors to embed it are missing: {error}. "
                "Point to the file with word_vectors=PATH (API) / inference.word_vectors=PATH (main.py)."
            ) from None
        if vector is None:
            return None
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (self.word_dim,):
            raise DataError(f"the word vector of {text!r} has shape {vector.shape}, the model takes "
                            f"[{self.word_dim}]: not the word vectors this checkpoint was trained with")
        return vector

    def _piece(self, text: str, *, single_word: bool) -> np.ndarray | None:
        j = self.tag_index(text)
        if j is not None:
            return self.tag_vectors[j]
        return self._lookup(text) if single_word else None

    def vector(self, text: str) -> np.ndarray:
        """The word vector ``[word_dim]`` float32 of a query (resolution order in the module docstring)."""
        query = normalise_query(text)
        if not query:
            raise UnknownQueryError("empty query")
        j = self.tag_index(query)
        if j is not None:
            return self.tag_vectors[j]
        vector = self._lookup(query)
        if vector is not None:
            return vector
        words = query.split(" ")
        pieces, unknown, i = [], [], 0
        while i < len(words):
            for end in range(len(words), i, -1):
                found = self._piece(" ".join(words[i:end]), single_word=end == i + 1)
                if found is not None:
                    pieces.append(found)
                    i = end
                    break
            else:
                unknown.append(words[i])
                i += 1
        if unknown:
            raise UnknownQueryError(self._explain(query, unknown))
        return np.mean(pieces, axis=0).astype(np.float32)

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """``[n_queries, word_dim]`` float32."""
        return np.stack([self.vector(t) for t in texts]) if len(texts) else np.zeros((0, self.word_dim), np.float32)

    def _explain(self, query: str, unknown: list[str]) -> str:
        candidates = sorted(set(self.tags) | {w for t in self.tags for w in t.split()})
        hints = []
        for word in unknown:
            close = difflib.get_close_matches(word.lower(), candidates, n=5, cutoff=0.6)
            hints.append(f"{word!r}" + (f" (did you mean: {', '.join(close)}?)" if close else ""))
        shown = ", ".join(self.tags[:50]) + (f", ... ({len(self.tags)} in all)" if len(self.tags) > 50 else "")
        if self.encoder is None:
            knows = (f"The checkpoint's tag encoder ({self.encoder_name}) has no word vectors beyond its "
                     f"{len(self.tags)} training tags, so a query must be one of them or several of them "
                     f"('sad piano' = the mean of their vectors): {shown}.")
        else:
            knows = (f"The checkpoint's word vectors ({self.encoder_name}) know no spelling of those words; "
                     f"training tags: {shown}.")
        return f"query {query!r}: unknown word(s) {', '.join(hints)}. {knows}"


def encoder_name(spec: dict | None, encoder: object | None) -> str:
    """A readable name of the tag encoder for messages: the class, and the file for word-vector files."""
    if spec is None:
        return "unknown (not recorded in the checkpoint)"
    name = str(spec["_target_"]).rsplit(".", 1)[-1]
    path = getattr(encoder, "path", None)
    return f"{name} {Path(path)}" if path is not None else name
