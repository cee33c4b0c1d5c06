"""``data=synthetic``: generate the known-answer dataset on first use, then import it like any user folder."""

from __future__ import annotations

from pathlib import Path

from tagretrieval.audio import MelFrontend
from tagretrieval.data.folder.importer import FolderImporter
from tagretrieval.data.inputs import AUDIO, CF
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.data.synthetic.generate import SyntheticSpec, generate_synthetic, matches_existing


class SyntheticImporter:
    """Generates ``root`` (folder format, deterministic from ``generator_seed``) and imports it with
    :class:`FolderImporter`: the demo and the tests go through the same code path as your own data."""

    def __init__(
        self,
        *,
        root: str,
        prepared_dir: str,
        n_songs: int = 1200,
        n_artists: int = 300,
        n_users: int = 2000,
        clip_seconds: float = 6.0,
        sample_rate: int = 22050,
        cf_dim: int = 200,
        generator_seed: int = 0,
        split_seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        self.root = Path(root)
        self.prepared_dir = Path(prepared_dir)
        self.spec = SyntheticSpec(n_songs=n_songs, n_artists=n_artists, n_users=n_users, clip_seconds=clip_seconds,
                                  sample_rate=sample_rate, cf_dim=cf_dim, seed=generator_seed)
        self.folder = FolderImporter(
            root=root, prepared_dir=prepared_dir, name="synthetic", split_seed=split_seed,
            min_positives_per_split=5, num_workers=num_workers, max_skipped_fraction=0.0,
        )

    def song_inputs(self) -> frozenset[str]:
        """What the import holds for the song branch (:mod:`tagretrieval.data.inputs`): audio and CF vectors."""
        return frozenset({AUDIO, CF})

    def load_existing(self) -> PreparedDataset | None:
        """The current import (``root`` holds the dataset of these settings and ``prepared_dir`` its import), or
        None; reads only, generates nothing."""
        try:
            if not matches_existing(root=self.root, spec=self.spec):
                return None
        except ValueError:  # generated with other settings
            return None
        return self.folder.load_existing()

    def prepare(self, *, frontend: MelFrontend, progress: bool = True) -> PreparedDataset:
        generate_synthetic(self.root, spec=self.spec, progress=progress)
        return self.folder.prepare(frontend=frontend, progress=progress)
