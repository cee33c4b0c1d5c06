"""The training data path, measured: sections ``loader``, ``train_throughput`` and ``evaluation`` of benchmark.py.

    python scripts/bench_loader.py --sections loader --out bench_loader.json [--n-tracks 20000] [--workdir DIR]

- ``loader``: a generated store of ``n_tracks`` tracks of 30 s (float16 and float32, one at a time, then deleted),
  read by the real training loader (``TagRetrievalDataModule.train_dataloader()``) with 0, 1 and 2 workers:
  crops/s from the page cache (the measured pass repeats a warm-up pass of the same crops), and bytes read per crop
  (the store's own accounting, the kernel's ``rchar`` counter, and ``read_bytes`` from disk with the files evicted
  from the page cache first). Side by side, in the same run, the per-file cache it replaced, read as main read it
  before the store (one ``np.load(mmap)`` + crop + copy per sample, collated per batch).
  Goals: >= 2,000 crops/s per worker from the page cache; bytes read per crop <= 1.5x the crop.
- ``train_throughput``: the acoustic model, batch 128, samples/s with batches from the real loader vs the same batch
  from memory (the loader's overhead in %), fp32 and bf16, with channels_last and torch.compile off and on. Paper
  size on a GPU; the demo-size CNN on a CPU (the paper size trains ~3 samples/s there). The device is recorded.
- ``evaluation``: ``RetrievalResults.compute`` on 1,000 tags x 200,000 songs: seconds and peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import shutil
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

N_MELS, CHUNK_FRAMES, BATCH = 128, 173, 128
CROPS_GOAL_PER_WORKER, BYTES_GOAL_RATIO = 2000, 1.5
PAGE = os.sysconf("SC_PAGE_SIZE")


def frames_of(seconds: float, *, sample_rate: int = 22050, hop_length: int = 512) -> int:
    return 1 + int(seconds * sample_rate) // hop_length


def frontend_params(dtype: str) -> dict:
    from tagretrieval.audio import MelFrontend, cache_params

    return cache_params(MelFrontend(), dtype=dtype)


def fake_dataset(root: Path, n_tracks: int, *, n_tags: int = 50, seed: int = 0):
    """A PreparedDataset in memory (every track in train) with seeded labels: the sampler's input."""
    from tagretrieval.data.prepared import PreparedDataset

    rng = np.random.default_rng(seed)
    labels = (rng.random((n_tracks, n_tags)) < 0.06).astype(np.uint8)
    labels[np.arange(n_tracks), rng.integers(0, n_tags, n_tracks)] = 1
    tracks = pd.DataFrame({"track_id": [f"t{i:06d}" for i in range(n_tracks)], "artist": "a", "split": "train",
                           "audio_path": ""})
    return PreparedDataset(root=root, name="bench", tracks=tracks, tags=[f"tag{j}" for j in range(n_tags)],
                           categories=["c"] * n_tags, labels=labels)


def generate(workdir: Path, dataset, *, dtype: str, seconds: float, layout: str) -> tuple[Path, float]:
    """The packed store or the per-file cache of every track (16 distinct random mels, cycled: contents do not
    matter to reading speed, and generating 13 GB of distinct noise would dominate the run). (root, seconds)."""
    from tagretrieval.audio import LegacyMelCache, MelStore

    rng = np.random.default_rng(1)
    n_frames = frames_of(seconds)
    pool = [rng.normal(-30, 10, size=(N_MELS, n_frames)).astype(dtype) for _ in range(16)]
    root = workdir / f"{layout}-{dtype}"
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    if layout == "store":
        store = MelStore(root, frontend_params=frontend_params(dtype))
        with store.writer(commit_tracks=10**9, commit_seconds=3600) as writer:
            for i, track_id in enumerate(dataset.track_ids):
                writer.add_stored(track_id, np.ascontiguousarray(pool[i % 16].T))
    else:
        cache = LegacyMelCache(root, frontend_params=frontend_params(dtype))
        for i, track_id in enumerate(dataset.track_ids):
            path = cache.path_for(track_id)
            path.parent.mkdir(exist_ok=True)
            np.save(path, pool[i % 16], allow_pickle=False)
    os.sync()
    return root, time.perf_counter() - start


class PerFileCrops(Dataset):
    """The training read path of main before the store: per sample, ``np.load`` (mmap) of the track's
    ``[n_mels, n_frames]`` file, a crop copied out of it (touching all 128 rows), zero-padded; collated per batch."""

    def __init__(self, cache, dataset) -> None:
        self.cache, self.ids, self.labels = cache, dataset.track_ids, dataset.labels

    def __getitem__(self, key: tuple[int, int, float]) -> dict:
        row, tag, position = key
        mel = self.cache.read(self.ids[row])
        start = int(position * max(1, mel.shape[1] - CHUNK_FRAMES + 1))
        piece = np.array(mel[:, start:start + CHUNK_FRAMES], dtype=np.float32)
        if piece.shape[1] < CHUNK_FRAMES:
            piece = np.pad(piece, ((0, 0), (0, CHUNK_FRAMES - piece.shape[1])))
        return {"row": row, "tag": tag, "mel": torch.from_numpy(piece),
                "labels": torch.from_numpy(self.labels[row].astype(np.float32))}


def loader_for(layout: str, root: Path, dataset, *, n_batches: int, num_workers: int,
               pin_memory: bool = False) -> DataLoader:
    from tagretrieval.audio import LegacyMelCache, MelStore
    from tagretrieval.data.datamodule import TagRetrievalDataModule, worker_options
    from tagretrieval.data.samplers import BalancedPairSampler, EpochBatchSampler, PositiveIndex

    sampler = BalancedPairSampler(batch_size=BATCH, pairs_per_epoch=BATCH * n_batches, seed=0)
    if layout == "store":
        store = MelStore(root, frontend_params=json.loads((root / "manifest.json").read_text())["frontend_params"])
        module = TagRetrievalDataModule(dataset=dataset, sampler=sampler, mel_store=store, use_cf=False,
                                        use_features=False, chunk_frames=CHUNK_FRAMES, n_eval_chunks=1,
                                        num_workers=num_workers, prefetch_factor=4, pin_memory=pin_memory)
        return module.train_dataloader()
    index = PositiveIndex.from_labels(dataset.labels, dataset.split_indices("train"))
    batches = [[(int(r), int(t), float(c)) for r, t, c in key] for key in EpochBatchSampler(sampler, index)]
    return DataLoader(PerFileCrops(LegacyMelCache.open(root), dataset), batch_sampler=batches,
                      **worker_options(num_workers, prefetch_factor=4))  # workers started as the store's are


def pages_touched(n_frames: int, item_bytes: int, *, header_bytes: int = 128) -> float:
    """Mean number of pages a crop of a ``[n_mels, n_frames]`` .npy file touches (over 16 crop positions)."""
    row_bytes = n_frames * item_bytes
    counts = []
    for start in np.linspace(0, n_frames - CHUNK_FRAMES, 16).astype(int):
        pages = set()
        for r in range(N_MELS):
            first = header_bytes + r * row_bytes + start * item_bytes
            pages.update(range(first // PAGE, (first + CHUNK_FRAMES * item_bytes - 1) // PAGE + 1))
        counts.append(len(pages))
    return float(np.mean(counts))


def io_counters(pids: list[int]) -> dict[str, int]:
    totals = {"rchar": 0, "read_bytes": 0}
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/io") as f:
            for line in f:
                name, value = line.split(":")
                if name in totals:
                    totals[name] += int(value)
    return totals


def evict(root: Path) -> None:
    """Drop ``root``'s files from the page cache (POSIX_FADV_DONTNEED), so the next reads come from disk."""
    os.sync()
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure_pass(loader: DataLoader) -> tuple[float, int, dict[str, int]]:
    """One pass over ``loader``: (seconds, crops, I/O counters of this process and its workers)."""
    iterator = iter(loader)
    pids = [os.getpid()] + [w.pid for w in getattr(iterator, "_workers", [])]
    before = io_counters(pids)
    start, crops = time.perf_counter(), 0
    for batch in iterator:
        crops += len(batch["mel"])
    seconds = time.perf_counter() - start
    after = io_counters(pids)
    return seconds, crops, {k: after[k] - before[k] for k in before}


def bench_loader(*, n_tracks: int = 20_000, seconds: float = 30.0, n_batches: int = 40,
                 workers: tuple[int, ...] = (0, 1, 2), dtypes: tuple[str, ...] = ("float16", "float32"),
                 workdir: str | Path | None = None) -> dict:
    scratch = Path(workdir or tempfile.mkdtemp(prefix="bench_loader_"))
    scratch.mkdir(parents=True, exist_ok=True)
    dataset = fake_dataset(scratch, n_tracks)
    out: dict = {"n_tracks": n_tracks, "clip_seconds": seconds, "n_frames_per_track": frames_of(seconds),
                 "batch_size": BATCH, "batches_per_pass": n_batches, "cpu_count": os.cpu_count(),
                 "goal_crops_per_second_per_worker": CROPS_GOAL_PER_WORKER, "goal_bytes_ratio": BYTES_GOAL_RATIO}
    try:
        for dtype in dtypes:
            crop_bytes = CHUNK_FRAMES * N_MELS * np.dtype(dtype).itemsize
            for layout in ("store", "per_file"):
                root, generate_s = generate(scratch, dataset, dtype=dtype, seconds=seconds, layout=layout)
                row: dict = {"generate_seconds": generate_s, "crop_bytes": crop_bytes,
                             "disk_bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file())}
                evict(root)  # cold: bytes each crop costs from disk, in this process (0 workers)
                cold_s, crops, io = measure_pass(loader_for(layout, root, dataset, n_batches=n_batches,
                                                            num_workers=0))
                row["cold"] = {"crops_per_second": crops / cold_s, "read_bytes_per_crop": io["read_bytes"] / crops,
                               "read_bytes_ratio": io["read_bytes"] / crops / crop_bytes}
                for n in workers:
                    loader = loader_for(layout, root, dataset, n_batches=n_batches, num_workers=n)
                    measure_pass(loader)  # warm-up: worker start-up, and these crops into the page cache
                    warm_s, crops, io = measure_pass(loader)
                    row[f"{n}_workers"] = {"crops_per_second": crops / warm_s,
                                           "crops_per_second_per_worker": crops / warm_s / max(1, n),
                                           "rchar_per_crop": io["rchar"] / crops}
                    del loader
                    gc.collect()
                if layout == "store":
                    row["store_bytes_read_per_crop"] = crop_bytes  # one preadv of exactly the crop (checked below)
                    row["bytes_ratio"] = row["0_workers"]["rchar_per_crop"] / crop_bytes
                else:  # mmap reads bypass rchar: count the pages one crop touches (a run in each of 128 rows)
                    row["pages_touched_per_crop"] = pages_touched(frames_of(seconds), np.dtype(dtype).itemsize)
                    row["bytes_ratio"] = row["pages_touched_per_crop"] * PAGE / crop_bytes
                out[f"{layout}_{dtype}"] = row
                print(json.dumps({f"{layout}_{dtype}": row}, indent=2), flush=True)
                shutil.rmtree(root)
        for dtype in dtypes:
            new, old = out[f"store_{dtype}"], out[f"per_file_{dtype}"]
            out[f"speedup_{dtype}"] = {f"{n}_workers": new[f"{n}_workers"]["crops_per_second"] /
                                       old[f"{n}_workers"]["crops_per_second"] for n in workers}
            out[f"goal_met_{dtype}"] = bool(
                min(new[f"{n}_workers"]["crops_per_second_per_worker"] for n in workers if n > 0)
                >= CROPS_GOAL_PER_WORKER and new["bytes_ratio"] <= BYTES_GOAL_RATIO)
        return out
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)


# -- train_throughput -------------------------------------------------------------------------------------------
def bench_train_throughput(*, steps: int | None = None, n_tracks: int = 2000, workdir: str | Path | None = None,
                           compile_options: tuple[bool, ...] = (False, True)) -> dict:
    from tagretrieval.data.datamodule import default_num_workers
    from tagretrieval.training.losses import TripletLoss
    from tagretrieval.models import AcousticModel
    from tagretrieval.models.branches import PAPER_CNN_CHANNELS
    from tagretrieval.training.module import TagRetrievalModule

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    channels = PAPER_CNN_CHANNELS if cuda else (4, 8, 8, 16, 16, 32, 64)  # the demo size on a CPU
    steps = steps or (50 if cuda else 8)
    scratch = Path(workdir or tempfile.mkdtemp(prefix="bench_train_"))
    scratch.mkdir(parents=True, exist_ok=True)
    dataset = fake_dataset(scratch, n_tracks)
    root, _ = generate(scratch, dataset, dtype="float16", seconds=30.0, layout="store")
    n_workers = default_num_workers()
    out: dict = {"device": torch.cuda.get_device_name(0) if cuda else f"cpu ({torch.get_num_threads()} threads)",
                 "cnn_channels": list(channels), "batch_size": BATCH, "steps": steps, "loader_workers": n_workers,
                 "torch": torch.__version__}
    warnings.filterwarnings("ignore", message=".*self.log.*")
    try:
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
                continue
            for channels_last in (False, True):
                for compiled in compile_options:
                    torch.manual_seed(0)
                    model = AcousticModel(word_dim=300, embedding_dim=256, hidden_dim=512, cnn_channels=channels)
                    module = TagRetrievalModule(model=model, loss=TripletLoss(margin=0.4), tags=dataset.tags,
                                                categories=dataset.categories, word_dim=300,
                                                tag_vectors=np.random.default_rng(0).normal(size=(50, 300)),
                                                negatives="weighted", channels_last=channels_last,
                                                compile_cnn=compiled,
                                                optimizer=functools.partial(torch.optim.Adam, lr=1e-4))
                    module.to(device).train()
                    module.configure_model()
                    optimizer = module.configure_optimizers()
                    autocast = functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16,
                                                 enabled=precision == "bf16")

                    def step(batch, i):
                        batch = module.on_after_batch_transfer(dict(batch), 0)
                        with autocast():
                            loss = module.training_step(batch, i)
                        loss.backward()
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)

                    loader = loader_for("store", root, dataset, n_batches=steps + 3, num_workers=n_workers,
                                        pin_memory=cuda)
                    first = {k: v.to(device) for k, v in next(iter(loader)).items()}
                    start = time.perf_counter()
                    for i in range(3):  # warm-up (and, with compile, the compilation)
                        step(first, i)
                    if cuda:
                        torch.cuda.synchronize()
                    warmup_s = time.perf_counter() - start
                    start = time.perf_counter()
                    for i in range(steps):
                        step(first, i)
                    if cuda:
                        torch.cuda.synchronize()
                    memory_s = time.perf_counter() - start
                    start = time.perf_counter()
                    for i, batch in enumerate(loader):
                        if i == 3:
                            if cuda:
                                torch.cuda.synchronize()
                            start = time.perf_counter()  # after the workers' start-up
                        step({k: v.to(device, non_blocking=True) for k, v in batch.items()}, i)
                    if cuda:
                        torch.cuda.synchronize()
                    loader_s = time.perf_counter() - start
                    name = f"{precision}{'_channels_last' if channels_last else ''}{'_compile' if compiled else ''}"
                    out[name] = {"samples_per_second_memory": steps * BATCH / memory_s,
                                 "samples_per_second_loader": steps * BATCH / loader_s,
                                 "loader_overhead_percent": 100 * (loader_s / memory_s - 1),
                                 "warmup_seconds": warmup_s}
                    print(json.dumps({name: out[name]}), flush=True)
                    del module, optimizer, loader
                    gc.collect()
        return out
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)


# -- evaluation -------------------------------------------------------------------------------------------------
def bench_evaluation(*, n_tags: int = 1000, n_songs: int = 200_000) -> dict:
    import resource

    from tagretrieval.evaluation import RetrievalResults

    rng = np.random.default_rng(0)
    relevance = rng.random((n_tags, n_songs), dtype=np.float32) < 0.02
    scores = rng.standard_normal((n_tags, n_songs), dtype=np.float32)
    scores += relevance  # a tag's positives score higher on average
    inputs_bytes = scores.nbytes + relevance.nbytes
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    results = RetrievalResults.compute(scores=scores, relevance=relevance, tags=[f"tag{i}" for i in range(n_tags)],
                                       categories=[f"c{i % 10}" for i in range(n_tags)], split="test", k=10)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"n_tags": n_tags, "n_songs": n_songs, "seconds": seconds, "inputs_bytes": inputs_bytes,
            "peak_bytes_beyond_inputs": peak, "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "macro_roc_auc": results.macro["roc_auc"], "goal_peak_bytes": 4 * 2**30}


SECTIONS = {"loader": bench_loader, "train_throughput": bench_train_throughput, "evaluation": bench_evaluation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--n-tracks", type=int, default=20_000, help="loader: tracks in the generated store")
    parser.add_argument("--workdir", help="where the generated stores go (default: a temp folder)")
    parser.add_argument("--out", help="write the results to this JSON file")
    args = parser.parse_args()
    results = {}
    for name in args.sections:
        kwargs = {"n_tracks": args.n_tracks, "workdir": args.workdir} if name == "loader" else {}
        if name == "train_throughput":
            kwargs = {"workdir": args.workdir}
        results[name] = SECTIONS[name](**kwargs)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
