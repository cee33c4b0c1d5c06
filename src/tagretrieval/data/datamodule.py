"""From a prepared dataset to batches: training pairs, and whole songs for evaluation."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tagretrieval.audio import MelCache
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.samplers import EpochBatchSampler, PairSampler, PositiveIndex


def chunk_starts(n_frames: int, *, chunk_frames: int, n_chunks: int) -> np.ndarray:
    """Start frames of the evaluation chunks: the reference's ``hop = (T - chunk) // n_chunks``, ``i * hop``."""
    hop = max(0, (n_frames - chunk_frames) // n_chunks)
    return np.arange(n_chunks, dtype=np.int64) * hop


def crop(mel: np.ndarray, start: int, chunk_frames: int) -> np.ndarray:
    """``mel[:, start:start + chunk_frames]`` as float32 ``[n_mels, chunk_frames]``, zero-padded on the right."""
    piece = np.array(mel[:, start:start + chunk_frames], dtype=np.float32)  # a copy: the cache is read-only
    if piece.shape[1] < chunk_frames:
        piece = np.pad(piece, ((0, 0), (0, chunk_frames - piece.shape[1])))
    return piece


class SongInputs:
    """Reads the inputs of one song: mel crops from the cache (memory-mapped), CF vector, labels."""

    def __init__(self, dataset: PreparedDataset, *, mel_cache: MelCache | None, use_cf: bool, use_features: bool,
                 chunk_frames: int) -> None:
        self.track_ids = dataset.track_ids
        self.labels = dataset.labels
        self.cf = dataset.cf if use_cf else None
        self.features = dataset.features if use_features else None
        self.mel_cache = mel_cache
        self.chunk_frames = chunk_frames

    def item(self, row: int, *, crop_position: float | None = None, n_chunks: int | None = None) -> dict:
        """One song: ``labels [n_tags]``, ``cf [cf_dim]``, ``features [n_features]``, and either one training crop ``mel [n_mels, chunk]``
        placed at ``crop_position`` in [0, 1), or ``n_chunks`` evaluation chunks ``mel [n_chunks, n_mels, chunk]``."""
        out = {"row": row, "labels": torch.from_numpy(self.labels[row].astype(np.float32))}
        if self.cf is not None:
            out["cf"] = torch.from_numpy(self.cf[row])
        if self.features is not None:
            out["features"] = torch.from_numpy(self.features[row])
        if self.mel_cache is not None:
            mel = self.mel_cache.read(self.track_ids[row])
            if crop_position is not None:
                start = int(crop_position * max(1, mel.shape[1] - self.chunk_frames + 1))
                out["mel"] = torch.from_numpy(crop(mel, start, self.chunk_frames))
            else:
                starts = chunk_starts(mel.shape[1], chunk_frames=self.chunk_frames, n_chunks=n_chunks)
                out["mel"] = torch.from_numpy(np.stack([crop(mel, s, self.chunk_frames) for s in starts]))
        return out


class PairDataset(Dataset):
    """Indexed by (row, tag, crop position) tuples from :class:`EpochBatchSampler`."""

    def __init__(self, inputs: SongInputs) -> None:
        self.inputs = inputs

    def __getitem__(self, key: tuple[int, int, float]) -> dict:
        row, tag, position = key
        item = self.inputs.item(row, crop_position=position)
        item["tag"] = tag
        return item


class SongDataset(Dataset):
    """Every song of a split with its evaluation chunks ``mel [n_chunks, n_mels, chunk_frames]``."""

    def __init__(self, inputs: SongInputs, rows: np.ndarray, *, n_chunks: int) -> None:
        self.inputs = inputs
        self.rows = rows
        self.n_chunks = n_chunks

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.inputs.item(int(self.rows[i]), n_chunks=self.n_chunks)


class ShardSampler(Sampler):
    """Rank ``r`` of ``w`` gets items ``r, r + w, ...``: every song evaluated exactly once, no padding duplicates."""

    def __init__(self, n: int, *, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


class TagRetrievalDataModule(L.LightningDataModule):
    """Training pairs from a :class:`PairSampler`; validation/test songs sharded across ranks without padding.

    Run the trainer with ``use_distributed_sampler=False``: this module shards by itself.
    """

    def __init__(
        self,
        *,
        dataset: PreparedDataset,
        sampler: PairSampler,
        mel_cache: MelCache | None,
        use_cf: bool,
        use_features: bool,
        chunk_frames: int,
        n_eval_chunks: int,
        eval_batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if use_cf and dataset.cf is None:
            raise ValueError(f"the model needs CF vectors, but dataset '{dataset.name}' has none ({dataset.root})")
        if use_features and dataset.features is None:
            raise ValueError(f"the model needs song features, but dataset '{dataset.name}' has none ({dataset.root})")
        self.dataset = dataset
        self.sampler = sampler
        self.inputs = SongInputs(dataset, mel_cache=mel_cache, use_cf=use_cf, use_features=use_features,
                                 chunk_frames=chunk_frames)
        self.n_eval_chunks = n_eval_chunks
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(dataset, num_workers=self.num_workers, persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        index = PositiveIndex.from_labels(self.dataset.labels, self.dataset.split_indices("train"))
        batches = EpochBatchSampler(self.sampler, index, rank=rank, world_size=world_size)
        return self._loader(PairDataset(self.inputs), batch_sampler=batches)

    def songs_dataloader(self, split: str) -> DataLoader:
        rank, world_size = self._rank()
        songs = SongDataset(self.inputs, self.dataset.split_indices(split), n_chunks=self.n_eval_chunks)
        return self._loader(songs, batch_size=self.eval_batch_size,
                            sampler=ShardSampler(len(songs), rank=rank, world_size=world_size))

    def val_dataloader(self) -> DataLoader:
        return self.songs_dataloader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.songs_dataloader("test")
