"""Nearest neighbours of tags in word-vector spaces and in a model's learned tag space (the paper's Table 3).

For each query tag: its nearest words under each word-vector file (the whole vocabulary of the file), and its
nearest tags in the joint space of each checkpoint (cosine between ``tag_embeddings()``, among the model's tags).
Command line::

    python -m tagretrieval.reports.neighbours --tags rock sad --word-vectors google=GoogleNews.bin \\
        --checkpoint hybrid=outputs/DATE/TIME/checkpoints/best.ckpt --k 5 --out neighbours.md
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tagretrieval.runtime.files import atomic_write_text
from tagretrieval.reports.tables import markdown_table
from tagretrieval.tags.encoders import Word2VecFile, spellings

Neighbours = list[tuple[str, float]]
"""``(word or tag, cosine similarity)``, most similar first."""


def _normalised(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


def nearest_words(vectors: Word2VecFile, query: str, *, k: int = 5) -> Neighbours | None:
    """The ``k`` words of the file's vocabulary closest (cosine) to ``query``'s vector.

    ``query`` is looked up as the tag encoder does (a known spelling, else the mean of its words). Spellings of
    the query itself (``Rock``, ``hip_hop`` for ``hip hop``) are not neighbours. ``None`` when it has no vector.
    """
    _check_k(k)
    vector = vectors.lookup(query)
    if vector is None:
        return None
    keyed = vectors.keyed_vectors
    own = _normalised(query)
    n_candidates = k + len(spellings(query)) + 1
    while True:
        candidates = keyed.similar_by_vector(vector, topn=n_candidates)
        found = [(word, float(score)) for word, score in candidates if _normalised(word) != own]
        if len(found) >= k or n_candidates >= len(keyed):
            return found[:k]
        n_candidates *= 4


def nearest_tags(*, tags: Sequence[str], embeddings: np.ndarray, query: str, k: int = 5) -> Neighbours | None:
    """The ``k`` other tags closest (cosine) to ``query`` in a tag space; ties keep the tags' order.

    Args:
        tags: ``[n_tags]`` names.
        embeddings: ``float [n_tags, D]``, one row per tag (normalised here).
        query: one of ``tags``; ``None`` is returned when it is not.
    """
    _check_k(k)
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(tags):
        raise ValueError(f"embeddings {embeddings.shape} must be [n_tags={len(tags)}, D]")
    if query not in tags:
        return None
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"zero tag embedding for {[t for t, n in zip(tags, norms[:, 0]) if n == 0]}")
    unit = embeddings / norms
    i = list(tags).index(query)
    similarity = unit @ unit[i]
    order = [j for j in np.argsort(-similarity, kind="stable") if j != i]
    return [(tags[j], float(similarity[j])) for j in order[:k]]


def learned_tag_space(checkpoint: str | Path, *, trusted: bool = False) -> tuple[list[str], np.ndarray]:
    """``(tags [n_tags], tag_embeddings [n_tags, D])`` of one of our checkpoints."""
    from tagretrieval.training.checkpoints import load_module

    module = load_module(checkpoint, trusted=trusted)
    with torch.no_grad():
        return module.tags, module.tag_embeddings().float().numpy()


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


@dataclass(frozen=True)
class NeighbourTable:
    """``cells[(query, source)]``: the neighbours of a query in a source, ``None`` when it has no vector there."""

    queries: list[str]
    sources: list[str]
    cells: dict[tuple[str, str], Neighbours | None]

    def to_markdown(self, *, digits: int = 3, with_scores: bool = True) -> str:
        """A row per query, a column per source; each cell lists neighbours, most similar first."""
        rows = [[query, *(self._cell(query, source, digits=digits, with_scores=with_scores)
                          for source in self.sources)] for query in self.queries]
        return markdown_table(["tag", *self.sources], rows)

    def _cell(self, query: str, source: str, *, digits: int, with_scores: bool) -> str:
        neighbours = self.cells[query, source]
        if neighbours is None:
            return "(no vector)"
        return ", ".join(f"{word} ({score:.{digits}f})" if with_scores else word for word, score in neighbours)


def neighbour_table(*, queries: Sequence[str], word_vectors: Mapping[str, Word2VecFile] | None = None,
                    tag_spaces: Mapping[str, tuple[Sequence[str], np.ndarray]] | None = None,
                    k: int = 5) -> NeighbourTable:
    """Neighbours of every query in every source: word-vector files first, then learned tag spaces.

    Args:
        queries: tags (or any text) to look up.
        word_vectors: source name -> word-vector file.
        tag_spaces: source name -> ``(tags, embeddings [n_tags, D])`` (see :func:`learned_tag_space`).
        k: neighbours per cell.

    Raises:
        ValueError: no query, no source, or a source name used twice.
    """
    word_vectors, tag_spaces = word_vectors or {}, tag_spaces or {}
    if not queries:
        raise ValueError("no query tags given")
    overlap = set(word_vectors) & set(tag_spaces)
    if overlap:
        raise ValueError(f"source names used twice: {sorted(overlap)}")
    sources = [*word_vectors, *tag_spaces]
    if not sources:
        raise ValueError("give at least one word-vector file or one checkpoint")
    cells: dict[tuple[str, str], Neighbours | None] = {}
    for query in queries:
        for name, vectors in word_vectors.items():
            cells[query, name] = nearest_words(vectors, query, k=k)
        for name, (tags, embeddings) in tag_spaces.items():
            cells[query, name] = nearest_tags(tags=tags, embeddings=embeddings, query=query, k=k)
    return NeighbourTable(queries=list(queries), sources=sources, cells=cells)


def _named(values: Sequence[str], *, what: str, default: str | None = None) -> dict[str, Path]:
    """``["NAME=PATH", "PATH"]`` -> ``{NAME: PATH, default or stem: PATH}``; a repeated name is an error."""
    named: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or "/" in name:  # no name given (a path may itself hold "=")
            name, path = "", value
        name = name or default or Path(path).stem
        if name in named:
            raise SystemExit(f"{what}: the name {name!r} is used twice; name them NAME=PATH")
        named[name] = Path(path)
    return named


def main(argv: Sequence[str] | None = None) -> NeighbourTable:
    """Command line: see the module docstring and ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m tagretrieval.reports.neighbours",
        description="Nearest words (word-vector files) and nearest tags (learned tag spaces) of tags, as Markdown.")
    parser.add_argument("--tags", nargs="+", required=True, help="query tags (quote multi-word tags)")
    parser.add_argument("--word-vectors", nargs="*", default=[], metavar="[NAME=]PATH",
                        help="gensim-readable files (.bin, .bin.gz, .txt, .vec; .model, .kv with --trust-pickles); "
                             "column name: NAME, default the file name without extension")
    parser.add_argument("--dim", type=int, default=300, help="dimension of the word vectors (default 300)")
    parser.add_argument("--checkpoint", nargs="*", default=[], metavar="[NAME=]PATH",
                        help="our checkpoints; neighbours among their tags in the learned space "
                             "(column name: NAME, default 'learned')")
    parser.add_argument("--checkpoint-trusted", action="store_true",
                        help="allow checkpoints holding arbitrary pickled objects (only files you trust)")
    parser.add_argument("--trust-pickles", action="store_true",
                        help="allow files that are Python pickles: gensim .model/.kv word vectors and checkpoints "
                             "holding pickled objects (only files you trust; or convert the word vectors with "
                             "`python -m tagretrieval.tags.encoders convert IN OUT.bin`)")
    parser.add_argument("--k", type=int, default=5, help="neighbours per cell (default 5)")
    parser.add_argument("--no-scores", action="store_true", help="list neighbours without their cosine")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table to this file")
    args = parser.parse_args(argv)
    word_vectors = {name: Word2VecFile(path=str(path), dim=args.dim, trust_pickle=args.trust_pickles)
                    for name, path in _named(args.word_vectors, what="--word-vectors").items()}
    tag_spaces = {name: learned_tag_space(path, trusted=args.checkpoint_trusted or args.trust_pickles)
                  for name, path in _named(args.checkpoint, what="--checkpoint", default="learned").items()}
    table = neighbour_table(queries=args.tags, word_vectors=word_vectors, tag_spaces=tag_spaces, k=args.k)
    markdown = table.to_markdown(with_scores=not args.no_scores)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, markdown)
    print(markdown)
    return table


if __name__ == "__main__":
    main()
