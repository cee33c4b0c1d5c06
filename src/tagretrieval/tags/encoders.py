"""Where tag word vectors come from (config group ``tag_encoder``).

Every encoder maps the dataset's tag names to vectors ``[n_tags, dim]`` that feed the tag branch:

- :class:`Word2VecFile`: any gensim-readable file (GoogleNews ``.bin``/``.bin.gz``, word2vec text ``.txt``/``.vec``,
  a gensim ``Word2Vec`` ``.model`` or ``KeyedVectors`` ``.kv``). It also embeds free-text queries (zero-shot).
  ``.model`` and ``.kv`` files are Python pickles (loading one runs any code it holds): they are read only with
  ``trust_pickle=True`` (main.py: ``trust_pickles=true``); ``python -m tagretrieval.tags.encoders convert IN OUT``
  turns one into the word2vec binary (``.bin``) or text (``.txt``) format, which holds only words and numbers.
- :class:`Cooccurrence`: gensim Word2Vec trained on the training split's tag lists (each track's tags are one
  "sentence", written ``repeats`` times so that a tag is its own context): tags that occur together get close vectors,
  tags that exclude each other do not collapse. Deterministic for a given seed.
- :class:`Learned`: random vectors that are trained with the model (one free vector per tag).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from tagretrieval.runtime.errors import DataError, MissingFileError
from tagretrieval.runtime.files import atomic_write

PICKLE_SUFFIXES: tuple[str, ...] = (".model", ".kv")   # gensim's own save format: a pickle
BINARY_SUFFIXES: tuple[str, ...] = (".bin", ".bin.gz")  # word2vec binary; anything else is read as word2vec text


class MissingWordVectorsError(DataError):
    """Some tags have no word vector; the message lists them."""


class UntrustedPickleError(DataError):
    """A word-vector file is a pickle and was not trusted; the message says how to convert it."""


def _crc32_hash(text: str) -> int:
    """Stable hash for gensim's per-word random init (Python's own ``hash`` changes per process)."""
    return zlib.crc32(text.encode("utf-8"))


def spellings(text: str) -> list[str]:
    """The spellings of a (multi-word) tag to try in a vocabulary, most specific first.

    ``"hip hop"`` -> ``["hip hop", "hip_hop", "hip-hop", "hiphop", "Hip_Hop", ...]``; the vocabulary decides
    (GoogleNews joins phrases with ``_``, the MSD domain model has ``hip-hop`` and ``drum_n_bass``).
    """
    words = text.replace("_", " ").replace("-", " ").split()
    joined = [text, "_".join(words), "-".join(words), "".join(words), " ".join(words)]
    variants = joined + [v.title() for v in joined] + [v.lower() for v in joined]
    return list(dict.fromkeys(v for v in variants if v))


class Word2VecFile:
    """Word vectors from a file; multi-word tags not in the vocabulary get the mean of their words' vectors.

    Args:
        path: the file; ``.model``/``.kv`` (gensim pickles) need ``trust_pickle``; ``.bin``/``.bin.gz`` are read
            as word2vec binary, any other name as word2vec text (unless ``binary`` says otherwise).
        dim: the vector size the model expects; a file of another size is refused.
        limit: read only the first ``limit`` words of a word2vec-format file.
        drop_missing: drop tags without a vector instead of refusing them.
        trust_pickle: allow loading a gensim pickle (it can run arbitrary code: only files you trust).
    """

    trainable = False

    def __init__(self, *, path: str, dim: int = 300, binary: bool | None = None, limit: int | None = None,
                 drop_missing: bool = False, trust_pickle: bool = False) -> None:
        self.path = Path(path)
        self.dim = dim
        self.binary = binary
        self.limit = limit
        self.drop_missing = drop_missing
        self.trust_pickle = trust_pickle
        self._vectors = None

    @property
    def keyed_vectors(self):
        """The gensim ``KeyedVectors``, loaded once."""
        if self._vectors is None:
            vectors = self._load()
            if vectors.vector_size != self.dim:
                raise DataError(f"{self.path} holds {vectors.vector_size}-d vectors, tag_encoder.dim is {self.dim}: "
                                f"set tag_encoder.dim={vectors.vector_size}, or use a file of {self.dim}-d vectors")
            self._vectors = vectors
        return self._vectors

    def _load(self):
        if not self.path.exists():
            raise MissingFileError(f"word-vector file not found: {self.path}")
        if is_pickle_file(self.path) and not self.trust_pickle:
            safe = self.path.with_suffix(".bin")
            raise UntrustedPickleError(
                f"{self.path} is a gensim pickle ({self.path.suffix}), and loading a pickle runs any code it holds. "
                f"Convert it once to the word2vec binary format, which holds only words and numbers: "
                f"`python -m tagretrieval.tags.encoders convert {self.path} {safe}`, then use {safe}; or, for a "
                "file you trust, set trust_pickles=true"
            )
        return load_keyed_vectors(self.path, binary=self.binary, limit=self.limit)

    def lookup(self, text: str) -> np.ndarray | None:
        """Vector ``[dim]`` of a tag or query: a known spelling, else the mean of its known words, else None."""
        vectors = self.keyed_vectors
        for spelling in spellings(text):
            if spelling in vectors.key_to_index:
                return np.asarray(vectors[spelling], dtype=np.float32)
        words = [w for w in text.replace("_", " ").replace("-", " ").split()]
        found = [next((vectors[s] for s in spellings(w) if s in vectors.key_to_index), None) for w in words]
        found = [f for f in found if f is not None]
        if len(words) > 1 and len(found) == len(words):
            return np.mean(found, axis=0).astype(np.float32)
        return None

    def vectors(self, tags: Sequence[str], *, train_tag_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
        """``([n_tags, dim] float32, missing tags)``; missing rows are zero and must be dropped or refused."""
        out = np.zeros((len(tags), self.dim), dtype=np.float32)
        missing = []
        for j, tag in enumerate(tags):
            vector = self.lookup(tag)
            if vector is None:
                missing.append(tag)
            else:
                out[j] = vector
        return out, missing


class Cooccurrence:
    """gensim Word2Vec (skip-gram) trained on the training split's tag lists."""

    trainable = False

    def __init__(self, *, dim: int = 300, epochs: int = 50, negative: int = 5, repeats: int = 3, seed: int = 0,
                 drop_missing: bool = False) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.repeats = repeats
        self.dim = dim
        self.epochs = epochs
        self.negative = negative
        self.seed = seed
        self.drop_missing = drop_missing

    def vectors(self, tags: Sequence[str], *, train_tag_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
        from gensim.models import Word2Vec

        # each tag list `repeats` times: a tag is its own context. Without it, tags that never co-occur but share
        # their contexts (happy / sad, slow / fast) get the same vector (cosine 0.998 on the synthetic data), and
        # the tag branch cannot tell them apart; with 3 copies it is about 0.4 (tests/test_tag_encoders.py).
        sentences = [list(t) * self.repeats for t in train_tag_lists if len(t) > 0]
        if not sentences:
            raise DataError("tag_encoder=cooccurrence needs tagged training tracks; the training split has none")
        window = max(len(s) for s in sentences)
        model = Word2Vec(
            sentences=sentences, vector_size=self.dim, window=window, min_count=1, sg=1, negative=self.negative,
            epochs=self.epochs, seed=self.seed, workers=1, hashfxn=_crc32_hash,
        )
        out = np.zeros((len(tags), self.dim), dtype=np.float32)
        missing = []
        for j, tag in enumerate(tags):
            if tag in model.wv.key_to_index:
                out[j] = model.wv[tag]
            else:
                missing.append(tag)
        return out, missing


class Learned:
    """One free vector per tag, initialised N(0, 1) from ``seed`` and trained with the model."""

    trainable = True

    def __init__(self, *, dim: int = 300, seed: int = 0) -> None:
        self.dim = dim
        self.seed = seed
        self.drop_missing = False

    def vectors(self, tags: Sequence[str], *, train_tag_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
        rng = np.random.default_rng(self.seed)
        return rng.standard_normal((len(tags), self.dim)).astype(np.float32), []


def resolve_missing(tags: Sequence[str], vectors: np.ndarray, missing: Sequence[str], *,
                    drop_missing: bool) -> tuple[list[str], np.ndarray, list[str]]:
    """Drop tags without a vector (``drop_missing``) or refuse them, listing every one.

    Returns ``(kept tags, their vectors [n_kept, dim], dropped tags)``.
    """
    if missing and not drop_missing:
        raise MissingWordVectorsError(
            f"{len(missing)} tag(s) have no word vector: {', '.join(missing)}. "
            "Set tag_encoder.drop_missing=true to drop them (as the reference pipeline did), or use another "
            "tag_encoder (cooccurrence, learned)."
        )
    missing_set = set(missing)
    keep = [j for j, t in enumerate(tags) if t not in missing_set]
    if not keep:
        raise MissingWordVectorsError("no tag has a word vector")
    return [tags[j] for j in keep], vectors[keep], list(missing)


def is_pickle_file(path: str | Path) -> bool:
    """Whether ``path`` is in gensim's own (pickle) format, by its name: ``.model`` or ``.kv``."""
    return Path(path).name.lower().endswith(PICKLE_SUFFIXES)


def load_keyed_vectors(path: str | Path, *, binary: bool | None = None, limit: int | None = None):
    """gensim ``KeyedVectors`` from any format, pickles included: the caller decides whether ``path`` is trusted."""
    from gensim.models import KeyedVectors, Word2Vec

    path = Path(path)
    name = path.name.lower()
    if name.endswith(".model"):
        return Word2Vec.load(str(path)).wv
    if name.endswith(".kv"):
        return KeyedVectors.load(str(path))
    binary = binary if binary is not None else name.endswith(BINARY_SUFFIXES)
    return KeyedVectors.load_word2vec_format(str(path), binary=binary, limit=limit)


def convert(source: str | Path, target: str | Path) -> Path:
    """Write the vectors of ``source`` (any format, a gensim pickle included: only files you trust) to ``target``
    in the word2vec format, binary for ``.bin``/``.bin.gz``, text otherwise; ``target`` appears whole or not at all.
    """
    source, target = Path(source), Path(target)
    if not source.exists():
        raise MissingFileError(f"word-vector file not found: {source}")
    if is_pickle_file(target):
        raise DataError(f"{target}: write the word2vec format (.bin, .bin.gz, .txt, .vec), not a pickle")
    vectors = load_keyed_vectors(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as folder:
        written = Path(folder) / target.name  # gensim writes to a path (gzip by the name); then one atomic move
        vectors.save_word2vec_format(str(written), binary=target.name.lower().endswith(BINARY_SUFFIXES))
        with open(written, "rb") as f:
            atomic_write(target, lambda out: shutil.copyfileobj(f, out))
    return target


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tagretrieval.tags.encoders convert IN OUT``."""
    parser = argparse.ArgumentParser(prog="python -m tagretrieval.tags.encoders",
                                     description="Word-vector files (tag_encoder=word2vec).")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "convert", help="convert a word-vector file (e.g. a gensim .model/.kv pickle) to the word2vec format",
        description="Convert IN (any gensim-readable format; loading a .model/.kv pickle runs the code it holds, so "
                    "convert only files you trust) to OUT in the word2vec format, which loads without trust: "
                    "binary for OUT ending in .bin or .bin.gz, text otherwise (.txt, .vec).")
    command.add_argument("source", metavar="IN")
    command.add_argument("target", metavar="OUT")
    args = parser.parse_args(argv)
    target = convert(args.source, args.target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
