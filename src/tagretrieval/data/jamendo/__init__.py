"""MTG-Jamendo (``data=jamendo``): its split files, tag names and audio layout (:mod:`.importer`).

May import what :mod:`tagretrieval.data` may, and the data package's shared modules.
"""

from tagretrieval.data.jamendo.importer import JamendoImporter

__all__ = ["JamendoImporter"]
