"""The built-in synthetic dataset with known answers (``data=synthetic``): the generator (:mod:`.generate`) writes a
user folder, which :class:`~tagretrieval.data.folder.FolderImporter` imports (:mod:`.importer`).

May import what :mod:`tagretrieval.data` may, and the data package's shared modules.
"""

from tagretrieval.data.synthetic.generate import SyntheticSpec, generate_synthetic
from tagretrieval.data.synthetic.importer import SyntheticImporter

__all__ = ["SyntheticImporter", "SyntheticSpec", "generate_synthetic"]
