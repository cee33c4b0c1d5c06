"""MagnaTagATune (``data=mtat``): annotations, the two split protocols (won, pons), tag categories (:mod:`.importer`,
``tag_categories.csv``).

May import what :mod:`tagretrieval.data` may, and the data package's shared modules.
"""

from tagretrieval.data.mtat.importer import MTATImporter

__all__ = ["MTATImporter"]
