"""Your own data (``data=folder``): an audio folder and a tags table (:mod:`.importer`); its readers
(``find_audio``, ``read_tag_table``) serve other importers of audio folders too.

May import what :mod:`tagretrieval.data` may, and the data package's shared modules.
"""

from tagretrieval.data.folder.importer import FolderImporter

__all__ = ["FolderImporter"]
