"""mini-MusicNet (``data=minimusicnet``): note labels of short piano/ensemble clips, their spectrum features and the
release's micro-averaged precision (:mod:`.importer`).

May import what :mod:`tagretrieval.data` may, and the data package's shared modules.
"""

from tagretrieval.data.minimusicnet.importer import MiniMusicNetImporter

__all__ = ["MiniMusicNetImporter"]
