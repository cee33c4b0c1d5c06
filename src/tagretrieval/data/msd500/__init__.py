"""MSD500 (``data=msd500``, Won et al. 2021): the release's split folders (:mod:`.release`), the reference
preprocessing redone from the raw annotations (:mod:`.raw`), the release's spectrograms (:mod:`.specs`), CF
vectors from item factors or ALS on the Taste Profile (:mod:`.cf_factors`), and the importer (:mod:`.importer`).

May import what :mod:`tagretrieval.data` may, and the data package's shared modules.
"""

from tagretrieval.data.msd500.importer import MSD500Importer

__all__ = ["MSD500Importer"]
