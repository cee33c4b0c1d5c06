"""Use a trained model: rank songs for free-text queries, tag songs and audio files, export embeddings.

``Searcher`` is the Python API (see :mod:`tagretrieval.inference.search`); the indexes of
:mod:`tagretrieval.inference.index` answer nearest-neighbour searches; ``tasks`` holds the ``main.py`` modes
``retrieve``, ``tag`` and ``export``. Guide: ``docs/usage/retrieval.md``.
"""

from tagretrieval.inference.export import track_table, write_export
from tagretrieval.inference.index import ExactIndex, FaissFlatIndex, FaissHNSWIndex, FaissIVFIndex, Index
from tagretrieval.inference.queries import QueryVocabulary, UnknownQueryError
from tagretrieval.inference.search import Searcher

__all__ = [
    "ExactIndex",
    "FaissFlatIndex",
    "FaissHNSWIndex",
    "FaissIVFIndex",
    "Index",
    "QueryVocabulary",
    "Searcher",
    "UnknownQueryError",
    "track_table",
    "write_export",
]
