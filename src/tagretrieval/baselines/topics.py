"""``mode=baseline +baseline=topics``: the tag space as FMA analyses it, LSI and LDA topics of tag co-occurrence.

Each track's tag list is a document, each tag a word (gensim ``Dictionary`` + bag of words). Latent semantic
indexing (gensim ``LsiModel``: a truncated SVD of the tag-track matrix) and latent Dirichlet allocation
(gensim ``LdaModel``, seeded) each give ``num_topics`` topics, printed with their top tags and written to
``baseline/topics.md`` and ``baseline/topics.json``. No retrieval metric: topics use the tags only, so they
cannot rank unseen songs (``metrics/`` is not written).

LSI weights are signed (an SVD's singular vectors, whose overall sign is arbitrary: each topic is flipped so
that its heaviest tag is positive), LDA weights are probabilities ``P(tag | topic)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gensim.corpora import Dictionary
from gensim.models import LdaModel, LsiModel

from tagretrieval.baselines.context import BaselineContext
from tagretrieval.baselines.taggers import BASELINE_DIR, restrict_categories
from tagretrieval.data.prepared import SPLITS


@dataclass
class Topic:
    """One topic: ``tags[i]`` has weight ``weights[i]``, by decreasing ``|weight|`` (LSI) or weight (LDA)."""

    tags: list[str]
    weights: list[float]


def _corpus(documents: Sequence[Sequence[str]]) -> tuple[Dictionary, list]:
    documents = [list(d) for d in documents if len(d)]
    if not documents:
        raise ValueError("no document has a tag: nothing to find topics in")
    dictionary = Dictionary(documents)
    return dictionary, [dictionary.doc2bow(d) for d in documents]


def lsi_topics(documents: Sequence[Sequence[str]], *, num_topics: int, top_n: int, seed: int) -> list[Topic]:
    """LSI topics of ``documents`` (one tag list per track); each topic's ``top_n`` tags by ``|weight|``."""
    dictionary, corpus = _corpus(documents)
    model = LsiModel(corpus, num_topics=num_topics, id2word=dictionary, random_seed=seed)
    topics = []
    for i in range(model.projection.u.shape[1]):  # fewer than num_topics when the tag matrix has a lower rank
        terms = model.show_topic(i, topn=top_n)
        sign = -1.0 if terms and terms[0][1] < 0 else 1.0
        topics.append(Topic(tags=[str(t) for t, _ in terms], weights=[sign * float(w) for _, w in terms]))
    return topics


def lda_topics(documents: Sequence[Sequence[str]], *, num_topics: int, top_n: int, passes: int, alpha: str,
               seed: int) -> list[Topic]:
    """LDA topics of ``documents`` (one tag list per track); each topic's ``top_n`` most probable tags."""
    dictionary, corpus = _corpus(documents)
    model = LdaModel(corpus, num_topics=num_topics, id2word=dictionary, passes=passes, alpha=alpha,
                     random_state=seed)
    return [Topic(tags=[str(t) for t, _ in terms], weights=[float(w) for _, w in terms])
            for terms in (model.show_topic(i, topn=top_n) for i in range(num_topics))]


def topics_markdown(models: dict[str, list[Topic]], *, title: str) -> str:
    lines = [f"# {title}", ""]
    for name, topics in models.items():
        lines += [f"## {name}", "", "| topic | top tags (weight) |", "|---|---|"]
        lines += [f"| {i} | " + ", ".join(f"{t} ({w:+.3f})" for t, w in zip(topic.tags, topic.weights)) + " |"
                  for i, topic in enumerate(topics)]
        lines.append("")
    return "\n".join(lines)


class TopicsBaseline:
    """LSI and LDA topics of the tag lists of the ``splits`` tracks (module doc).

    Args:
        num_topics: topics per model; top_n: tags shown per topic.
        lda_passes: passes of LDA over the corpus; lda_alpha: gensim's ``alpha`` (``"symmetric"``, ``"auto"``).
        splits: the tracks whose tag lists are the documents (``[train]``: no test information).
        categories: only the tags of these categories; None: every tag.
        seed: LSI's and LDA's random state.
    """

    def __init__(self, *, num_topics: int, top_n: int, lda_passes: int, lda_alpha: str, splits: Sequence[str],
                 categories: Sequence[str] | None, seed: int) -> None:
        if num_topics < 1 or top_n < 1 or lda_passes < 1:
            raise ValueError(f"num_topics, top_n and lda_passes must be >= 1, got {num_topics}, {top_n}, {lda_passes}")
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown or not splits:
            raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {list(splits)}")
        self.num_topics, self.top_n, self.lda_passes, self.lda_alpha = num_topics, top_n, lda_passes, lda_alpha
        self.splits, self.seed = list(splits), seed
        self.categories = None if categories is None else list(categories)

    def run(self, context: BaselineContext) -> dict[str, list[Topic]]:
        dataset = restrict_categories(context.dataset, self.categories)
        documents = [tags for split in self.splits for tags in dataset.tag_lists(split)]
        models = {
            "LSI": lsi_topics(documents, num_topics=self.num_topics, top_n=self.top_n, seed=self.seed),
            "LDA": lda_topics(documents, num_topics=self.num_topics, top_n=self.top_n, passes=self.lda_passes,
                              alpha=self.lda_alpha, seed=self.seed),
        }
        title = (f"Tag topics of '{dataset.name}': {len(documents)} tracks ({', '.join(self.splits)}), "
                 f"{len(dataset.tags)} tags")
        text = topics_markdown(models, title=title)
        out = Path(context.output_dir) / BASELINE_DIR
        out.mkdir(parents=True, exist_ok=True)
        (out / "topics.md").write_text(text + "\n")
        (out / "topics.json").write_text(json.dumps({name: [asdict(t) for t in topics]
                                                     for name, topics in models.items()}, indent=2) + "\n")
        print(text)
        print(f"topics written to {out / 'topics.md'} and {out / 'topics.json'}")
        return models
