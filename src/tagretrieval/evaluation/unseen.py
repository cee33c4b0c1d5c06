"""The zero-shot protocol: tags held out of training (``eval.unseen_tags``) and evaluated on their own.

A held-out ("unseen") tag is removed from training altogether: from the labels the pairs are drawn from and the
negatives are checked against, from the sampler's anchors, from validation (model selection) and from the tag lists a
co-occurrence encoder learns from. Its songs stay in training, without that tag. At test time every tag, seen or
not, is embedded by the trained tag branch from its word (or sentence) vector, and ``metrics/test.json`` holds the
results on all tags plus a ``seen`` and an ``unseen`` block with the same keys (:meth:`RetrievalResults.with_blocks`).

An unseen tag needs a vector its encoder can make without having seen it: word vectors (``tag_encoder=word2vec``,
``prepared``), a sentence encoder (``tag_encoder=sentence``), pitch codes (``tag_encoder=pitch``). Co-occurrence
vectors are learnt from the training tag lists, where an unseen tag never occurs, and learned vectors are trained
with the model: neither can embed an unseen tag, and the run stops saying so (:func:`check_unseen_vectors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagretrieval.runtime.errors import ConfigError, DataError, MissingFileError

ZERO_SHOT_ENCODERS = "tag_encoder=word2vec tag_encoder.path=..., tag_encoder=sentence (or prepared, pitch)"


def choose_unseen_tags(spec: object, *, tags: Sequence[str], categories: Sequence[str], seed: int) -> list[str]:
    """The tags to hold out, in vocabulary order, from ``spec`` (``eval.unseen_tags``).

    Args:
        spec: None or an empty list (no zero-shot protocol); a list of tag names; the path of a text file with one tag
            per line (``#`` starts a comment); or a fraction in (0, 1): in every category, ``round(fraction * n)`` of its
            ``n`` tags (at least one, and never all of them), drawn with ``seed``.
        tags, categories: the dataset's vocabulary and each tag's category.
        seed: the draw of a fraction (``eval.unseen_seed``).

    Raises:
        ConfigError: an unknown tag (named, with the vocabulary), a missing file, a fraction out of range, or a choice
            that holds out every tag or none.
    """
    if spec is None or (isinstance(spec, (list, tuple)) and not spec):
        return []
    if isinstance(spec, bool):
        raise ConfigError(f"eval.unseen_tags={spec}: give a list of tags, a file or a fraction per category")
    if isinstance(spec, (int, float)):
        chosen = _fraction_per_category(float(spec), tags=tags, categories=categories, seed=seed)
    elif isinstance(spec, str):
        chosen = _read_tag_file(Path(spec))
    else:
        chosen = [str(tag) for tag in spec]
    unknown = [tag for tag in chosen if tag not in set(tags)]
    if unknown:
        raise ConfigError(f"eval.unseen_tags: {', '.join(map(repr, unknown))} not among the dataset's {len(tags)} tags "
                          f"({', '.join(tags[:40])}{', ...' if len(tags) > 40 else ''})")
    held_out = set(chosen)
    if len(held_out) >= len(tags):
        raise ConfigError(f"eval.unseen_tags holds out all {len(tags)} tags: nothing would be left to train on")
    return [tag for tag in tags if tag in held_out]


def _fraction_per_category(fraction: float, *, tags: Sequence[str], categories: Sequence[str],
                           seed: int) -> list[str]:
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"eval.unseen_tags={fraction}: a fraction per category must be in (0, 1)")
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for category in sorted(set(categories)):
        members = [tag for tag, c in zip(tags, categories) if c == category]
        if len(members) < 2:
            continue  # holding out a category's only tag would leave the category nothing to learn from
        n = min(len(members) - 1, max(1, round(fraction * len(members))))
        chosen.extend(rng.choice(members, size=n, replace=False).tolist())
    if not chosen:
        raise ConfigError(f"eval.unseen_tags={fraction}: no category has two tags or more, so none can be held out")
    return chosen


def _read_tag_file(path: Path) -> list[str]:
    if not path.is_file():
        raise MissingFileError(f"eval.unseen_tags={path}: no such file (a file holds one tag per line; a list is "
                               "written eval.unseen_tags=[tag,tag], a fraction per category eval.unseen_tags=0.25)")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    tags = [line for line in lines if line]
    if not tags:
        raise ConfigError(f"eval.unseen_tags={path}: the file names no tag")
    return tags


def check_unseen_vectors(unseen: Sequence[str], missing: Sequence[str], *, encoder_name: str, trainable: bool,
                         drop_missing: bool) -> list[str]:
    """The unseen tags that keep a vector; refuses an encoder that cannot embed a tag it never saw.

    Args:
        unseen: the held-out tags.
        missing: the tags the encoder found no vector for (computed without the unseen tags' training labels).
        encoder_name: how to name the encoder (``Cooccurrence``).
        trainable: the vectors are trained with the model (``tag_encoder=learned``).
        drop_missing: an unseen tag without a vector (a word the word-vector file lacks) is dropped, not refused.

    Raises:
        DataError: the encoder cannot embed unseen tags (co-occurrence, learned vectors), or some unseen tags have no
            vector and ``drop_missing`` is off, or none has one.
    """
    if trainable:
        raise DataError(f"eval.unseen_tags: tag_encoder {encoder_name} trains one free vector per tag with the model, "
                        "so a held-out tag's vector would stay random: zero-shot needs vectors made without training "
                        f"({ZERO_SHOT_ENCODERS})")
    lacking = [tag for tag in unseen if tag in set(missing)]
    if lacking and len(lacking) == len(unseen):
        raise DataError(f"eval.unseen_tags: tag_encoder {encoder_name} has no vector for any of the {len(unseen)} "
                        f"held-out tags ({', '.join(lacking[:10])}{', ...' if len(lacking) > 10 else ''})"
                        + (": co-occurrence vectors are learnt from the training tag lists, where a held-out tag never "
                           "occurs, so they cannot embed an unseen tag" if "Cooccurrence" in encoder_name else "")
                        + f". Use an encoder that embeds words it was not trained on: {ZERO_SHOT_ENCODERS}")
    if lacking and not drop_missing:
        raise DataError(f"eval.unseen_tags: tag_encoder {encoder_name} has no vector for the held-out tag(s) "
                        f"{', '.join(lacking)}: hold out others, or set tag_encoder.drop_missing=true to drop them")
    return [tag for tag in unseen if tag not in set(lacking)]
