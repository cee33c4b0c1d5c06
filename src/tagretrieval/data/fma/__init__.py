"""The Free Music Archive (``data=fma``): its metadata tables, precomputed features and audio layout (:mod:`.importer`).

May import what :mod:`tagretrieval.data` may, and the data package's shared modules. The FMA paper's genre
baselines, which score checkpoints, are :mod:`tagretrieval.baselines.fma_genres`.
"""

from tagretrieval.data.fma.importer import FMAImporter

__all__ = ["FMAImporter"]
