"""From a prepared dataset to batches: training pairs, and whole songs for evaluation.

Every loader here fetches whole batches: its sampler yields one key per batch (``[batch, 3]`` pairs for training,
an array of rows for evaluation), the dataset turns a key into a collated batch with one read per crop from the
packed mel store, and the DataLoader runs with ``batch_size=None``. That removes 128 Python calls and a collate per
batch. The pair stream's epoch comes from the trainer (see :class:`~tagretrieval.data.samplers.EpochBatchSampler`).

Loader workers start from a fork server (``loader.start_method: forkserver``, :func:`worker_context`), not by
forking the training process. A fork copies a process that runs threads (DDP's gloo threads, a previous loader's
queue threads ending, tqdm's monitor), and on CPython before 3.11.10 a fork taken while another thread creates or
ends its thread state leaves the child waiting forever on a lock that no thread will release (CPython gh-112275):
the run hangs at the start of an epoch, every rank waiting for a batch (seen here on 3.11.7, docs/scale-out.md,
"Training on GPUs"). The fork server is a fresh process that has imported this module and nothing else runs in it; workers fork
from it in milliseconds, and the songs' labels and vectors reach them through shared memory, once for all workers
(:meth:`SongInputs.__getstate__`), as a fork would have shared them.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, Sampler

from tagretrieval.audio import MelStore
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.runtime.processes import exit_with_parent, resolve_start_method
from tagretrieval.data.samplers import UNTAGGED, EpochBatchSampler, PairSampler, PositiveIndex

MAX_DEFAULT_WORKERS = 8
"""``loader.num_workers: null`` means ``min(8, CPU cores)`` loader processes."""


def worker_context(start_method: str | None = None) -> multiprocessing.context.BaseContext:
    """The multiprocessing context loader workers start from (:func:`tagretrieval.runtime.processes.resolve_start_method`:
    ``start_method``, or for None ``forkserver`` where the platform has it, else ``spawn``). The fork server
    preloads ``__main__`` and this module (torch, numpy), so each worker forks from a process that has them imported
    rather than from a bare interpreter; it starts once per process, at the first loader with workers.

    Raises:
        ConfigError: a start method this platform lacks.
    """
    start_method = resolve_start_method(start_method)
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(["__main__", __name__])  # no effect once the server runs
    return context


def default_num_workers() -> int:
    """``min(MAX_DEFAULT_WORKERS, cores this process may use)``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_DEFAULT_WORKERS, cores)


def chunk_starts(n_frames: int, *, chunk_frames: int, n_chunks: int) -> np.ndarray:
    """Start frames of the evaluation chunks: the reference's ``hop = (T - chunk) // n_chunks``, ``i * hop``."""
    hop = max(0, (n_frames - chunk_frames) // n_chunks)
    return np.arange(n_chunks, dtype=np.int64) * hop


def crop_starts(n_frames: np.ndarray, positions: np.ndarray, *, chunk_frames: int) -> np.ndarray:
    """Training crop starts ``int64 [B]`` for songs of ``n_frames [B]`` at ``positions [B]`` in [0, 1)."""
    return (np.asarray(positions) * np.maximum(1, np.asarray(n_frames) - chunk_frames + 1)).astype(np.int64)


def training_crop_positions(positions: np.ndarray, *, n_crops: int) -> np.ndarray:
    """Where the ``n_crops`` training crops of each song lie, ``float64 [B, n_crops]`` in [0, 1), from one draw
    ``positions [B]`` in [0, 1) per song: crop ``i`` at ``(i + u) / n_crops``, i.e. one crop in each of ``n_crops``
    equal strata of the song, all shifted by the same ``u``. They span the song as the evaluation chunks do
    (:func:`chunk_starts`), in time order, and the pair stream stays one number per crop set (a resumed run draws
    the same crops)."""
    if n_crops < 1:
        raise ValueError(f"n_crops must be >= 1, got {n_crops}")
    return (np.arange(n_crops)[None, :] + np.asarray(positions, dtype=np.float64)[:, None]) / n_crops


def to_model_layout(mel: torch.Tensor) -> torch.Tensor:
    """Batches carry crops as the store holds them, ``[..., chunk_frames, n_mels]`` in its dtype (float16 halves what
    loader workers copy and what crosses to the GPU); models take float32 ``[..., n_mels, chunk_frames]``. Called
    where the batch already is on its device (``on_after_batch_transfer``), so on a GPU the conversion is free."""
    return mel.transpose(-1, -2).float().contiguous()


class SongInputs:
    """Reads the inputs of songs by dataset row: mel crops from the packed store, CF vectors, features, labels.

    Args:
        dataset: the prepared dataset.
        mel_store: its mel store, or None for models that do not use audio.
        use_cf, use_features: include ``cf [B, cf_dim]`` / ``features [B, n_features]``.
        chunk_frames: frames per crop / evaluation chunk.
    """

    def __init__(self, dataset: PreparedDataset, *, mel_store: MelStore | None, use_cf: bool, use_features: bool,
                 chunk_frames: int) -> None:
        self.labels = dataset.labels
        self.cf = dataset.cf if use_cf else None
        self.features = dataset.features if use_features else None
        self.mel_store = mel_store
        self.chunk_frames = chunk_frames
        # where each row's mel lives: located once, so a batch needs no per-track lookups
        self.locations = mel_store.locate(dataset.track_ids) if mel_store is not None else None
        self._shared: dict[str, torch.Tensor] = {}

    _PER_SONG_ARRAYS = ("labels", "cf", "features")

    def __getstate__(self) -> dict:
        """What a loader worker receives: the per-song arrays as tensors in shared memory, made once and handed to
        every worker by the multiprocessing pickler (a descriptor each, not a copy: MSD500's labels and CF vectors
        are hundreds of MB per worker otherwise). Pickled to a file, the tensors hold their data as any tensor."""
        state = dict(self.__dict__)
        for name in self._PER_SONG_ARRAYS:
            array = state[name]
            if array is None:
                continue
            if name not in self._shared:
                shared = torch.from_numpy(np.ascontiguousarray(array)).share_memory_()
                self._shared[name] = shared
                setattr(self, name, shared.numpy())  # this process reads the shared copy too
            state[name] = self._shared[name]
        state["_shared"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        for name in self._PER_SONG_ARRAYS:
            if isinstance(state[name], torch.Tensor):
                state[name] = state[name].numpy()
        self.__dict__.update(state)

    def batch(self, rows: np.ndarray, *, crop_positions: np.ndarray | None = None, n_crops: int = 1,
              n_chunks: int | None = None) -> dict[str, torch.Tensor]:
        """Songs ``rows [B]``: ``row [B]``, ``labels [B, n_tags]``, ``cf``, ``features``, and either training crops
        placed by ``crop_positions [B]`` in [0, 1) (one each, ``mel [B, chunk_frames, n_mels]``, or ``n_crops`` > 1
        each, ``mel [B, n_crops, chunk_frames, n_mels]``, see :func:`training_crop_positions`), or ``n_chunks``
        evaluation chunks each, ``mel [B, n_chunks, chunk_frames, n_mels]``; mels in the store's layout and dtype:
        pass them through :func:`to_model_layout` before a model."""
        rows = np.asarray(rows, dtype=np.int64)
        out = {"row": torch.from_numpy(rows.copy()),
               "labels": torch.from_numpy(np.asarray(self.labels[rows], dtype=np.float32))}
        if self.cf is not None:
            out["cf"] = torch.from_numpy(np.asarray(self.cf[rows], dtype=np.float32))
        if self.features is not None:
            out["features"] = torch.from_numpy(np.asarray(self.features[rows], dtype=np.float32))
        if self.mel_store is not None:
            loc = self.locations
            where = type(loc)(shard=loc.shard[rows], offset=loc.offset[rows], n_frames=loc.n_frames[rows])
            if crop_positions is not None and n_crops == 1:
                starts = crop_starts(where.n_frames, crop_positions, chunk_frames=self.chunk_frames)
                out["mel"] = torch.from_numpy(self.mel_store.read_frames(where, starts, self.chunk_frames))
            elif crop_positions is not None:
                positions = training_crop_positions(crop_positions, n_crops=n_crops)  # [B, n_crops]
                repeated = type(loc)(*(np.repeat(a, n_crops) for a in (where.shard, where.offset, where.n_frames)))
                starts = crop_starts(repeated.n_frames, positions.ravel(), chunk_frames=self.chunk_frames)
                crops = self.mel_store.read_frames(repeated, starts, self.chunk_frames)
                out["mel"] = torch.from_numpy(crops.reshape(len(rows), n_crops, self.chunk_frames, -1))
            else:
                starts = np.stack([chunk_starts(int(t), chunk_frames=self.chunk_frames, n_chunks=n_chunks)
                                   for t in where.n_frames])  # [B, n_chunks]
                repeated = type(loc)(*(np.repeat(a, n_chunks) for a in (where.shard, where.offset, where.n_frames)))
                crops = self.mel_store.read_frames(repeated, starts.ravel(), self.chunk_frames)
                out["mel"] = torch.from_numpy(crops.reshape(len(rows), n_chunks, self.chunk_frames, -1))
        return out

    def item(self, row: int, *, crop_position: float | None = None, n_chunks: int | None = None) -> dict:
        """One song, as :meth:`batch` gives it without the batch axis."""
        batch = self.batch(np.array([row]), n_chunks=n_chunks,
                           crop_positions=None if crop_position is None else np.array([crop_position]))
        return {name: value[0] for name, value in batch.items()}


class PairBatchDataset(Dataset):
    """Key: ``[B, 3]`` (dataset row of the positive song, anchor tag, crop position) from
    :class:`EpochBatchSampler`: ``P`` pairs, then ``B - P`` untagged songs (anchor tag
    :data:`~tagretrieval.data.samplers.UNTAGGED`); value: the whole batch (:meth:`SongInputs.batch` of the ``B``
    songs plus ``tag [P]``, the pairs' anchor tags: song ``i < P`` is the positive of ``tag[i]``), with
    ``train_chunks`` crops per song."""

    def __init__(self, inputs: SongInputs, *, train_chunks: int = 1) -> None:
        self.inputs = inputs
        self.train_chunks = train_chunks

    def __getitem__(self, key: np.ndarray) -> dict[str, torch.Tensor]:
        key = np.asarray(key)
        batch = self.inputs.batch(key[:, 0].astype(np.int64), crop_positions=key[:, 2], n_crops=self.train_chunks)
        tag = key[:, 1].astype(np.int64)
        n_pairs = int((tag != UNTAGGED).sum())
        if (tag[n_pairs:] != UNTAGGED).any():
            raise ValueError("a training batch must list its pairs before its untagged songs")
        batch["tag"] = torch.from_numpy(tag[:n_pairs])
        return batch


class SongBatchDataset(Dataset):
    """Key: an array of positions into ``rows``; value: those songs with their ``n_chunks`` evaluation chunks."""

    def __init__(self, inputs: SongInputs, rows: np.ndarray, *, n_chunks: int) -> None:
        self.inputs = inputs
        self.rows = np.asarray(rows, dtype=np.int64)
        self.n_chunks = n_chunks

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """Position :data:`PADDING` gives the first song with ``row = -1`` (:class:`ShardBatchSampler`)."""
        positions = np.asarray(positions, dtype=np.int64)
        padding = positions == PADDING
        batch = self.inputs.batch(self.rows[np.where(padding, 0, positions)], n_chunks=self.n_chunks)
        batch["row"][torch.from_numpy(padding)] = PADDING
        return batch


PADDING = -1  # the position (and the row) of the padding song of a rank without songs (ShardBatchSampler)


class ShardBatchSampler(Sampler):
    """Rank ``r`` of ``w`` gets items ``r, r + w, ...`` in batches of ``batch_size``: every song evaluated exactly
    once, no padding duplicates.

    A rank with no item (a split, or ``validation.max_songs``, smaller than the world size) gets one batch
    ``[PADDING]``, a song that the evaluation drops (its row is -1): Lightning skips the evaluation loop of a rank
    without batches, its epoch-end hook included, and the other ranks would wait forever for it at the gather of
    the split's embeddings (docs/scale-out.md). An empty split stays empty on every rank.
    """

    def __init__(self, n: int, *, batch_size: int, rank: int, world_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        indices = np.arange(rank, n, world_size, dtype=np.int64)
        if n > 0 and len(indices) == 0:
            indices = np.array([PADDING], dtype=np.int64)
        self.batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class WorkerStart:
    """``worker_init_fn`` of every loader here: first the watch that ends the worker with the training process
    (:func:`tagretrieval.runtime.processes.exit_with_parent`: a worker of the fork server is the fork server's child, so
    torch's watchdog, which checks the parent pid, does not see a training process killed with SIGKILL), then
    Lightning's seeding of the worker under ``seed_everything(workers=True)``, which Lightning adds by itself only to
    a loader without a ``worker_init_fn``.

    Args:
        rank: the global rank of the process that owns the loader (what Lightning passes to its seeding).
    """

    def __init__(self, *, rank: int = 0) -> None:
        self.rank = rank
        self.seed_workers = bool(int(os.environ.get("PL_SEED_WORKERS", "0")))  # read where Lightning reads it

    def __call__(self, worker_id: int) -> None:
        exit_with_parent()
        if self.seed_workers:
            pl_worker_init_function(worker_id, rank=self.rank)


def worker_options(num_workers: int, *, start_method: str | None = None, prefetch_factor: int | None = None,
                   rank: int = 0) -> dict:
    """DataLoader arguments for ``num_workers`` persistent workers started by :func:`worker_context` and
    initialised by :class:`WorkerStart` (``rank``: the owning process's global rank)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if num_workers == 0:
        return {"num_workers": 0}
    return {"num_workers": num_workers, "persistent_workers": True, "prefetch_factor": prefetch_factor,
            "multiprocessing_context": worker_context(start_method), "worker_init_fn": WorkerStart(rank=rank)}


def song_loader(inputs: SongInputs, rows: np.ndarray, *, n_chunks: int, batch_size: int, rank: int = 0,
                world_size: int = 1, num_workers: int = 0, pin_memory: bool = False,
                prefetch_factor: int | None = None, start_method: str | None = None) -> DataLoader:
    """Batches of whole songs ``rows`` (this rank's shard), in row order within the shard."""
    dataset = SongBatchDataset(inputs, rows, n_chunks=n_chunks)
    sampler = ShardBatchSampler(len(dataset), batch_size=batch_size, rank=rank, world_size=world_size)
    return DataLoader(dataset, sampler=sampler, batch_size=None, pin_memory=pin_memory,
                      **worker_options(num_workers, start_method=start_method, prefetch_factor=prefetch_factor,
                                       rank=rank))


def subset_rows(rows: np.ndarray, *, max_songs: int | None, seed: int) -> np.ndarray:
    """``rows`` itself, or a seeded subset of ``max_songs`` of them in their original order."""
    if max_songs is None or max_songs >= len(rows):
        return rows
    if max_songs < 1:
        raise ValueError(f"max_songs must be >= 1 or null, got {max_songs}")
    keep = np.random.default_rng([seed, len(rows)]).choice(len(rows), size=max_songs, replace=False)
    return rows[np.sort(keep)]


class TagRetrievalDataModule(L.LightningDataModule):
    """Training pairs from a :class:`PairSampler`; validation/test songs sharded across ranks without padding.

    Run the trainer with ``use_distributed_sampler=False``: this module shards by itself.

    Args:
        train_chunks: crops per training song (> 1: the model pools them, :func:`training_crop_positions`).
        n_eval_chunks: chunks averaged per song at test (and retrieval/export: the model's own setting).
        n_valid_chunks: chunks per song at validation (fewer is cheaper; model selection only).
        max_valid_songs: validate on a seeded subset of this many valid songs (None: all of them).
        num_workers, pin_memory, prefetch_factor: the DataLoaders' (workers persist across epochs).
        start_method: how workers start (:func:`worker_context`; None: forkserver).
    """

    def __init__(
        self,
        *,
        dataset: PreparedDataset,
        sampler: PairSampler,
        mel_store: MelStore | None,
        use_cf: bool,
        use_features: bool,
        chunk_frames: int,
        n_eval_chunks: int,
        train_chunks: int = 1,
        n_valid_chunks: int | None = None,
        max_valid_songs: int | None = None,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        start_method: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if use_cf and dataset.cf is None:
            raise ValueError(f"the model needs CF vectors, but dataset '{dataset.name}' has none ({dataset.root})")
        if use_features and dataset.features is None:
            raise ValueError(f"the model needs song features, but dataset '{dataset.name}' has none ({dataset.root})")
        if train_chunks < 1:
            raise ValueError(f"train_chunks must be >= 1, got {train_chunks}")
        self.dataset = dataset
        self.train_chunks = train_chunks
        self.sampler = sampler
        self.inputs = SongInputs(dataset, mel_store=mel_store, use_cf=use_cf, use_features=use_features,
                                 chunk_frames=chunk_frames)
        self.n_eval_chunks = n_eval_chunks
        self.n_valid_chunks = n_eval_chunks if n_valid_chunks is None else n_valid_chunks
        self.max_valid_songs = max_valid_songs
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.start_method = start_method
        worker_options(num_workers, start_method=start_method)  # a wrong start method fails here, not at epoch 0
        self.seed = seed

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader_options(self) -> dict:
        return {"num_workers": self.num_workers, "pin_memory": self.pin_memory,
                "prefetch_factor": self.prefetch_factor, "start_method": self.start_method}

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        index = PositiveIndex.from_labels(self.dataset.labels, self.dataset.split_indices("train"))
        trainer = self.trainer
        # the epochs the fit loop has run (restored by a resume); what Lightning itself passes to set_epoch
        epoch_fn = (lambda: trainer.fit_loop.epoch_progress.current.processed) if trainer is not None else None
        batches = EpochBatchSampler(self.sampler, index, rank=rank, world_size=world_size, epoch_fn=epoch_fn)
        return DataLoader(PairBatchDataset(self.inputs, train_chunks=self.train_chunks), sampler=batches,
                          batch_size=None, pin_memory=self.pin_memory,
                          **worker_options(self.num_workers, start_method=self.start_method,
                                           prefetch_factor=self.prefetch_factor, rank=rank))

    def songs_dataloader(self, split: str, *, n_chunks: int | None = None,
                         max_songs: int | None = None) -> DataLoader:
        rank, world_size = self._rank()
        rows = subset_rows(self.dataset.split_indices(split), max_songs=max_songs, seed=self.seed)
        return song_loader(self.inputs, rows, n_chunks=self.n_eval_chunks if n_chunks is None else n_chunks,
                           batch_size=self.eval_batch_size, rank=rank, world_size=world_size,
                           **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        return self.songs_dataloader("valid", n_chunks=self.n_valid_chunks, max_songs=self.max_valid_songs)

    def test_dataloader(self) -> DataLoader:
        return self.songs_dataloader("test")
