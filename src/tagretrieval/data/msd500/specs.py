"""The MSD500 release's precomputed mel spectrograms, brought into the packed :class:`MelStore` without recomputing them.

Layout: ``spec/ID[2]/ID[3]/ID[4]/ID.npy`` (3rd, 4th, 5th characters of the id), each ``[128, n_frames]``
at 22,050 Hz, Hann window 1024, hop 512, 128 mel bands. Their log scaling, fmin/fmax and dtype are
unverified: the cache says it was made with the configured front end (so that the datamodule opens it),
and ``origin.json`` beside the cache manifest says where the mels really came from.

Each valid spectrogram is read (by a pool of threads: the work is file I/O), cast to the store's dtype,
zero-padded on the right to ``pad_to_frames`` when shorter (as the reference loader pads), transposed to the
store's time-major layout and appended: no decoding, one pass over the release. (The per-file cache this store
replaced could hard-link the release files; a crop of a ``[n_mels, n_frames]`` file touches the whole file, which
is what the packed store avoids.) Missing, unreadable, wrongly shaped or non-finite files are skipped with a
reason.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from tagretrieval.audio import MelFrontend, MelStore
from tagretrieval.audio.store import check_mel
from tagretrieval.runtime.files import atomic_write_json

RELEASE_MEL_PARAMS: dict[str, int] = {"sample_rate": 22050, "n_fft": 1024, "hop_length": 512, "n_mels": 128}
"""What the release states about its spectrograms; the configured front end must agree."""
UNVERIFIED_MEL_PARAMS: tuple[str, ...] = ("log scaling", "fmin_hz", "fmax_hz", "amin", "dtype")
ORIGIN_FILE = "origin.json"


def spec_path(spec_dir: Path, track_id: str) -> Path:
    """``spec_dir/ID[2]/ID[3]/ID[4]/ID.npy``: ``TRAAAAW128F429D538`` -> ``spec/A/A/A/TRAAAAW128F429D538.npy``."""
    if len(track_id) < 5:
        raise ValueError(f"id {track_id!r} is too short for the spec/A/B/C/ID.npy layout")
    return spec_dir / track_id[2] / track_id[3] / track_id[4] / f"{track_id}.npy"


def check_release_frontend(frontend: MelFrontend) -> None:
    """Raise ValueError unless ``frontend`` has the release spectrograms' stated parameters."""
    params = frontend.params()
    diffs = {k: (v, params[k]) for k, v in RELEASE_MEL_PARAMS.items() if params[k] != v}
    if diffs:
        raise ValueError("the MSD500 spectrograms were made with " + ", ".join(f"{k}={v}" for k, v in
                         RELEASE_MEL_PARAMS.items()) + "; the audio config differs: " + ", ".join(
                         f"audio.{k}={have} (release {want})" for k, (want, have) in diffs.items()))


def claim_mel_origin(cache_root: Path, origin: dict) -> None:
    """Record where a cache's mels come from in ``origin.json``; refuse a cache filled from another origin."""
    path = Path(cache_root) / ORIGIN_FILE
    if path.exists():
        found = json.loads(path.read_text())
        if found != origin:
            raise ValueError(f"the mel cache {cache_root} was filled from {found}, not {origin}: mixing them "
                             "would train on mels of two kinds. Use another data.prepared_dir or delete it.")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, origin, sort_keys=True)


@dataclass
class SpecOutcome:
    """``done``: ids whose mel is in the cache (input order); ``skipped``: id -> reason; ``how``: counts."""

    done: list[str]
    skipped: dict[str, str]
    how: dict[str, int] = field(default_factory=dict)


def _load(store: MelStore, spec_dir: Path, track_id: str, pad_to_frames: int,
          check_values: bool) -> np.ndarray | str:
    """One release spectrogram as the store keeps it (``[n_frames, n_mels]``), ``"cached"``, or ``"skip:<reason>"``."""
    if store.has(track_id):
        return "cached"
    try:
        source = spec_path(spec_dir, track_id)
        mel = np.load(source, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as error:
        return f"skip:missing spectrogram: {error}"
    except (ValueError, OSError, EOFError) as error:
        return f"skip:corrupt spectrogram: {track_id}: {error}"
    if mel.ndim != 2 or mel.shape[0] != store.n_mels or mel.shape[1] == 0:
        return f"skip:bad spectrogram shape: {source} is {mel.shape}, expected [{store.n_mels}, n_frames]"
    if mel.dtype.kind != "f":
        return f"skip:bad spectrogram dtype: {source} is {mel.dtype}, expected floats"
    try:
        values = np.asarray(mel, dtype=np.float32)
    except (ValueError, OSError) as error:  # a truncated file fails when its data is read
        return f"skip:corrupt spectrogram: {track_id}: {error}"
    if check_values and not np.isfinite(values).all():
        return f"skip:non-finite spectrogram: {source} has NaN/inf"
    if values.shape[1] < pad_to_frames:
        values = np.pad(values, ((0, 0), (0, pad_to_frames - values.shape[1])))
    try:
        return check_mel(track_id, values, n_mels=store.n_mels, dtype=store.dtype)
    except ValueError as error:  # NaN/inf, also after a cast to float16
        return f"skip:non-finite spectrogram: {error}"


def adopt_spectrograms(store: MelStore, spec_dir: Path, track_ids: Sequence[str], *, pad_to_frames: int,
                       check_values: bool = True, num_workers: int = 0, progress: bool = True) -> SpecOutcome:
    """Bring the release spectrograms of ``track_ids`` into ``store`` (see the module docstring).

    Resumable: ids already in the store are not touched. ``check_values`` refuses NaN/inf (always checked after
    a float16 cast). ``num_workers > 0`` reads with that many threads; this thread appends (one writer).
    """
    if not spec_dir.is_dir():
        raise FileNotFoundError(f"spectrogram folder not found: {spec_dir} (set data.spec_dir, or data.media)")
    done, skipped, how = [], {}, {}

    def one(track_id: str) -> np.ndarray | str:
        return _load(store, spec_dir, track_id, pad_to_frames, check_values)

    bar = tqdm(total=len(track_ids), unit="track", desc="spectrograms", disable=not progress)
    with store.writer() as writer, ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for track_id, result in zip(track_ids, pool.map(one, track_ids)):
            bar.update()
            if isinstance(result, str) and result.startswith("skip:"):
                skipped[track_id] = result[len("skip:"):]
                continue
            if isinstance(result, np.ndarray):
                writer.add_stored(track_id, result)
                result = "packed"
            done.append(track_id)
            how[result] = how.get(result, 0) + 1
    bar.close()
    return SpecOutcome(done=done, skipped=skipped, how=how)
