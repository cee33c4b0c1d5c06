"""Explore an embedding space in the browser: a self-contained HTML page, and cluster summaries.

``write_viewer(path, track_embeddings=..., tracks=..., tag_embeddings=..., tags=..., categories=...)``
writes the page; ``spherical_kmeans``, ``cluster_composition`` and ``plot_cluster_composition`` are the
clustering behind its "cluster" colouring, usable on their own. See ``docs/usage/viewer.md``.
"""

from tagretrieval.viewer.clusters import cluster_composition, plot_cluster_composition, spherical_kmeans
from tagretrieval.viewer.page import read_viewer_data, write_viewer

__all__ = ["cluster_composition", "plot_cluster_composition", "read_viewer_data", "spherical_kmeans", "write_viewer"]
