"""Built-in synthetic dataset with known answers, written in the user folder format.

The dataset exists so that a full run can be checked against ground truth: some tags are
*audible* (decided by the synthesised audio only, independent of the artist) and the others
are *inaudible* (decided per artist, heard only through simulated listening data). An
audio model should retrieve the first kind and fail on the second; a CF model the reverse.

Layout written under ``root`` (read by the folder importer)::

    audio/<track_id>.flac   mono 16-bit FLAC, ``sample_rate`` Hz, ``clip_seconds`` long
    tags.csv                track_id, artist, tags (joined with ';')
    tag_categories.csv      tag, category
    cf_vectors.npz          track_ids (str [n_songs]), vectors (float32 [n_songs, cf_dim])
    synthetic.json          spec, generator_version, tag counts; written last

The audio is synthesised by hand with numpy (wavetable oscillators and envelopes): no
library makes instrument-like tones whose tag is known by construction.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import soundfile as sf
from tqdm import tqdm

GENERATOR_VERSION: int = 1

INSTRUMENTS = ("piano", "strings", "flute", "drums", "bass")
PITCHED_INSTRUMENTS = ("piano", "strings", "flute", "bass")
TEMPO_ONSETS_PER_SECOND = {"slow": (1.2, 1.9), "medium": (2.6, 3.6), "fast": (5.0, 7.0)}
MOODS = ("happy", "sad")
LOCATIONS = ("brazil", "japan", "iceland", "nigeria", "india")
ERAS = ("sixties", "seventies", "eighties", "nineties", "noughties")
TAG_CATEGORIES: dict[str, tuple[str, ...]] = {  # category -> tags; tag names are unique across categories
    "instrument": INSTRUMENTS, "tempo": tuple(TEMPO_ONSETS_PER_SECOND), "mood": MOODS,
    "location": LOCATIONS, "era": ERAS,
}  # fmt: skip
AUDIBLE_CATEGORIES = ("instrument", "tempo", "mood")
INAUDIBLE_CATEGORIES = ("location", "era")

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
_ROOT_MIDI = {"happy": (60, 67), "sad": (50, 57)}  # song root note, inclusive range
_SPECTRAL_TILT = {"happy": (0.7, 1.1), "sad": (1.5, 2.1)}  # harmonic k has amplitude k**-tilt
_REGISTER_SEMITONES = {"piano": 0, "strings": 0, "flute": 12, "bass": -24}
_TABLE_SIZE = 4096


@dataclass(frozen=True, kw_only=True)
class SyntheticSpec:
    """Every parameter of the synthetic dataset; ``synthetic.json`` stores it verbatim.

    ``clip_seconds`` and ``sample_rate`` (Hz) shape every FLAC; ``n_users`` simulated listeners
    make the play counts whose ``cf_dim`` leading SVD factors are the CF vectors.
    """

    n_songs: int = 1200
    n_artists: int = 300
    n_users: int = 2000
    clip_seconds: float = 6.0
    sample_rate: int = 22050
    cf_dim: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        n_min_artists = max(len(LOCATIONS), len(ERAS))
        if self.n_artists < n_min_artists:
            raise ValueError(f"n_artists={self.n_artists}: need >= {n_min_artists} (one per location/era)")
        if self.n_songs < self.n_artists:
            raise ValueError(f"n_songs={self.n_songs} < n_artists={self.n_artists}: every artist needs a song")
        if not 1 <= self.cf_dim <= min(self.n_users, self.n_songs):
            raise ValueError(f"cf_dim={self.cf_dim} must be in [1, min(n_users, n_songs)]")
        if self.clip_seconds < 1.0:
            raise ValueError(f"clip_seconds={self.clip_seconds}: need >= 1.0 s so slow songs have onsets")
        if self.sample_rate < 8000:
            raise ValueError(f"sample_rate={self.sample_rate} Hz: need >= 8000 Hz for the flute register")


@dataclass(frozen=True, kw_only=True)
class _Song:
    track_id: str
    artist: str
    instruments: tuple[str, ...]
    tempo: str
    mood: str
    location: str
    era: str

    @property
    def tags(self) -> tuple[str, ...]:
        return (*self.instruments, self.tempo, self.mood, self.location, self.era)


def generate_synthetic(root: str | os.PathLike, *, spec: SyntheticSpec, progress: bool = True) -> Path:
    """Write the synthetic dataset described by ``spec`` to ``root`` and return ``root``.

    If ``root/synthetic.json`` exists with the same spec and version, return at once. If it
    exists with another spec or version, raise ``ValueError`` naming the differing fields.
    Otherwise generate into a hidden sibling folder and ``os.replace`` it onto ``root``, so
    a killed run never leaves a folder that looks complete. ``root`` may be absent or an
    empty folder; any other existing folder is refused, never overwritten. Lock files
    (``.*.lock``, :mod:`tagretrieval.runtime.lock`: the import's lock lives in ``root``) do not
    count: into such a folder the dataset's entries are moved one by one, ``synthetic.json``
    last.
    """
    root = Path(root)
    if matches_existing(root=root, spec=spec):
        return root
    if root.exists() and any(not _is_lock_file(p) for p in root.iterdir()):
        raise FileExistsError(f"{root} exists, is not empty and holds no synthetic.json; refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root=root)
    tmp = root.parent / f"{_partial_prefix(root=root)}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _write_dataset(out=tmp, spec=spec, progress=progress)
        try:
            if root.exists():  # holds lock files only
                for entry in sorted(tmp.iterdir(), key=lambda p: p.name == "synthetic.json"):
                    os.replace(entry, root / entry.name)
            else:
                os.replace(tmp, root)
        except OSError:
            if not matches_existing(root=root, spec=spec):  # a concurrent run may have finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _is_lock_file(path: Path) -> bool:
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".lock")


def matches_existing(*, root: Path, spec: SyntheticSpec) -> bool:
    """True if ``root`` holds a complete dataset made from ``spec``; ValueError if from another."""
    manifest_path = root / "synthetic.json"
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
        found = {"generator_version": manifest["generator_version"], **manifest["spec"]}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{manifest_path} is not a synthetic dataset manifest ({error!r})") from error
    wanted = {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(spec)}
    pairs = {key: (found.get(key, "<missing>"), wanted.get(key, "<missing>")) for key in set(found) | set(wanted)}
    differing = [f"{key}: on disk {old!r}, requested {new!r}"
                 for key, (old, new) in sorted(pairs.items()) if old != new]
    if differing:
        raise ValueError(f"{manifest_path} was made with other parameters ({'; '.join(differing)}); use another root")
    return True


def _partial_prefix(*, root: Path) -> str:
    """Name prefix of the temp folders for ``root``, followed by ``<pid>-<random>``."""
    return f".{root.name}.partial-{socket.gethostname().replace('-', '_')}-"


def _remove_stale_partials(*, root: Path) -> None:
    """Delete temp folders left by killed runs: made on this host by a process that is gone.

    Folders from other hosts (a shared file system) are left alone: their process may be alive.
    ``os.kill(pid, 0)`` probes liveness only on POSIX; elsewhere nothing is deleted.
    """
    prefix = _partial_prefix(root=root)
    for path in root.parent.glob(f"{glob.escape(prefix)}*") if os.name == "posix" else ():
        pid_text = path.name[len(prefix) :].split("-", 1)[0]
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, OverflowError, PermissionError):  # not our pattern / alive, other user
            pass


def _write_dataset(*, out: Path, spec: SyntheticSpec, progress: bool) -> None:
    """Every file of the dataset into the empty folder ``out``, ``synthetic.json`` last."""
    songs = _draw_songs(spec=spec)
    audio_dir = out / "audio"
    audio_dir.mkdir()
    for index, song in enumerate(tqdm(songs, desc="synthetic audio", unit="song", disable=not progress)):
        rng = np.random.default_rng([spec.seed, 1, index])
        y = _synthesise_song(song=song, rng=rng, sample_rate=spec.sample_rate, clip_seconds=spec.clip_seconds)
        sf.write(audio_dir / f"{song.track_id}.flac", y, spec.sample_rate, format="FLAC", subtype="PCM_16")

    tag_rows = [(s.track_id, s.artist, ";".join(s.tags)) for s in songs]
    _write_csv(path=out / "tags.csv", rows=[("track_id", "artist", "tags"), *tag_rows])
    category_rows = [(tag, category) for category, tags in TAG_CATEGORIES.items() for tag in tags]
    _write_csv(path=out / "tag_categories.csv", rows=[("tag", "category"), *category_rows])
    vectors = _cf_vectors(songs=songs, spec=spec)
    np.savez(out / "cf_vectors.npz", track_ids=np.array([s.track_id for s in songs]), vectors=vectors)

    tag_counts = {tag: sum(tag in s.tags for s in songs) for tags in TAG_CATEGORIES.values() for tag in tags}
    manifest = {"generator_version": GENERATOR_VERSION, "spec": dataclasses.asdict(spec), "tag_counts": tag_counts}
    (out / "synthetic.json").write_text(json.dumps(manifest, indent=2) + "\n")  # last: marks completion


def _write_csv(*, path: Path, rows: list[tuple[str, ...]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _balanced(*, rng: np.random.Generator, labels: tuple[str, ...], n: int) -> list[str]:
    """``n`` labels, each used ``n // len(labels)`` or one more times, in random order."""
    return [labels[i] for i in rng.permutation(np.resize(np.arange(len(labels)), n))]


def _draw_songs(*, spec: SyntheticSpec) -> list[_Song]:
    """Artists (with location and era) and songs (with audible tags), balanced per tag.

    Every artist has n_songs // n_artists songs or one more: equal artists make an
    artist-disjoint split hold about the same share of every location and era as of songs.
    """
    rng = np.random.default_rng([spec.seed, 0])
    locations = _balanced(rng=rng, labels=LOCATIONS, n=spec.n_artists)
    eras = _balanced(rng=rng, labels=ERAS, n=spec.n_artists)
    n_songs_of_artist = np.full(spec.n_artists, spec.n_songs // spec.n_artists)
    n_songs_of_artist[rng.permutation(spec.n_artists)[: spec.n_songs % spec.n_artists]] += 1
    artist_of_song = np.repeat(np.arange(spec.n_artists), n_songs_of_artist)

    tempi = _balanced(rng=rng, labels=tuple(TEMPO_ONSETS_PER_SECOND), n=spec.n_songs)
    moods = _balanced(rng=rng, labels=MOODS, n=spec.n_songs)
    width = max(5, len(str(spec.n_songs - 1)))
    songs = []
    for index, artist in enumerate(artist_of_song):
        # Half the songs have one pitched instrument, half two instruments (60% of pairs with drums):
        # each instrument is in 30% of songs, and drums never play alone, so mood stays audible.
        pitched = [str(p) for p in rng.permutation(PITCHED_INSTRUMENTS)]
        if rng.random() < 0.5:
            chosen = pitched[:1]
        else:
            chosen = ["drums", pitched[0]] if rng.random() < 0.6 else pitched[:2]
        instruments = tuple(sorted(chosen, key=INSTRUMENTS.index))
        songs.append(_Song(
            track_id=f"track{index:0{width}d}", artist=f"artist{artist:04d}", instruments=instruments,
            tempo=tempi[index], mood=moods[index], location=locations[artist], era=eras[artist],
        ))  # fmt: skip
    return songs


def _cf_vectors(*, songs: list[_Song], spec: SyntheticSpec) -> np.ndarray:
    """Song factors of a truncated SVD of log(1 + plays), ``float32 [n_songs, cf_dim]``.

    Users prefer 1-2 locations and 1-2 eras; Poisson play counts have a rate raised by
    ``e**2.5`` for each matching preference, times user activity and song popularity.
    Nothing audible enters the plays.
    """
    rng = np.random.default_rng([spec.seed, 2])
    song_location = np.array([LOCATIONS.index(s.location) for s in songs])
    song_era = np.array([ERAS.index(s.era) for s in songs])
    likes_location = np.zeros((spec.n_users, len(LOCATIONS)), dtype=bool)
    likes_era = np.zeros((spec.n_users, len(ERAS)), dtype=bool)
    for user in range(spec.n_users):
        likes_location[user, rng.choice(len(LOCATIONS), rng.integers(1, 3), replace=False)] = True
        likes_era[user, rng.choice(len(ERAS), rng.integers(1, 3), replace=False)] = True
    match = 2.5 * likes_location[:, song_location] + 2.5 * likes_era[:, song_era]  # [n_users, n_songs]
    activity = rng.lognormal(mean=0.0, sigma=0.5, size=(spec.n_users, 1))
    popularity = rng.lognormal(mean=0.0, sigma=0.7, size=(1, len(songs)))
    plays = rng.poisson(0.03 * activity * popularity * np.exp(match))
    factors = _song_factors(x=np.log1p(plays), rank=spec.cf_dim)
    signs = np.sign(factors[np.abs(factors).argmax(axis=0), np.arange(spec.cf_dim)])  # fix SVD sign ambiguity
    return (factors * np.where(signs == 0, 1.0, signs)).astype(np.float32)


def _song_factors(*, x: np.ndarray, rank: int) -> np.ndarray:
    """``V[:, :rank] * sqrt(s[:rank])`` of the SVD ``x = U diag(s) V^T``, ``[n_songs, rank]``.

    ``x`` is ``[n_users, n_songs]``. Computed from the eigen-decomposition of the smaller Gram
    matrix: several times faster than a full LAPACK SVD at the default size; the factors
    this loses precision on are the near-zero singular values, which carry only noise.
    """
    n_users, n_songs = x.shape
    gram = x.T @ x if n_songs <= n_users else x @ x.T
    eigenvalues, vectors = scipy.linalg.eigh(gram, subset_by_index=[len(gram) - rank, len(gram) - 1])
    singular = np.sqrt(np.clip(eigenvalues[::-1], 0.0, None))  # descending
    vectors = vectors[:, ::-1]
    if n_songs > n_users:  # vectors are U; V = x^T U / s
        vectors = x.T @ vectors / np.where(singular > 0, singular, 1.0)
    return vectors * np.sqrt(singular)


# --- audio synthesis: one monophonic line per instrument, all on the song's onsets ---


def _synthesise_song(*, song: _Song, rng: np.random.Generator, sample_rate: int, clip_seconds: float) -> np.ndarray:
    """Mono waveform ``float32 [n_samples]`` in [-1, 1], peak 0.5-0.9, with a small noise floor."""
    n_samples = round(clip_seconds * sample_rate)
    onsets_s = _onset_times(rng=rng, tempo=song.tempo, clip_seconds=clip_seconds)
    root_midi = int(rng.integers(_ROOT_MIDI[song.mood][0], _ROOT_MIDI[song.mood][1] + 1))
    tilt = rng.uniform(*_SPECTRAL_TILT[song.mood])
    scale = _MAJOR if song.mood == "happy" else _MINOR
    y = np.zeros(n_samples)
    for instrument in song.instruments:
        if instrument == "drums":
            line = _drum_line(rng=rng, onsets_s=onsets_s, n_samples=n_samples, sample_rate=sample_rate)
        else:
            midi = root_midi + _REGISTER_SEMITONES[instrument] + _melody(rng=rng, scale=scale, n_notes=len(onsets_s))
            line = _pitched_line(
                rng=rng, instrument=instrument, onsets_s=onsets_s, midi=midi, tilt=tilt,
                n_samples=n_samples, sample_rate=sample_rate,
            )  # fmt: skip
        y += rng.uniform(0.5, 1.0) * line / (np.sqrt(np.mean(line**2)) + 1e-12)
    y *= rng.uniform(0.5, 0.9) / np.max(np.abs(y))
    y += rng.uniform(1e-3, 4e-3) * (rng.random(n_samples, dtype=np.float32) - 0.5)  # rms 3e-4 to 1.2e-3
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def _onset_times(*, rng: np.random.Generator, tempo: str, clip_seconds: float) -> np.ndarray:
    """Note onsets in seconds ``[n_notes]``: a jittered grid at the tempo's rate, ~10% rests."""
    rate_hz = rng.uniform(*TEMPO_ONSETS_PER_SECOND[tempo])
    grid = np.arange(rng.uniform(0.0, 0.5 / rate_hz), clip_seconds - 0.1, 1.0 / rate_hz)
    onsets = grid + rng.normal(0.0, 0.03 / rate_hz, len(grid))
    keep = rng.random(len(grid)) >= 0.1
    keep[0] = True
    return np.clip(onsets[keep], 0.0, clip_seconds - 0.1)


def _melody(*, rng: np.random.Generator, scale: np.ndarray, n_notes: int) -> np.ndarray:
    """Semitones above the song root ``int [n_notes]``: a random walk over 1.5 octaves of ``scale``."""
    steps = rng.choice([-2, -1, 1, 2], size=n_notes)
    degrees = np.empty(n_notes, dtype=int)
    degree = int(rng.integers(0, 7))
    for i, step in enumerate(steps):
        degrees[i] = degree
        degree = degree + step if 0 <= degree + step <= 10 else degree - step
    return 12 * (degrees // 7) + scale[degrees % 7]


def _harmonic_amplitudes(*, instrument: str, tilt: float, n_harmonics: int) -> np.ndarray:
    """Amplitude of harmonics 1..n ``[n_harmonics]``: the instrument's timbre at the mood's tilt."""
    k = np.arange(1, n_harmonics + 1, dtype=float)
    if instrument == "piano":
        return k**-tilt * (1.0 + 0.5 * (k == 2))
    if instrument == "strings":  # sawtooth-like: all harmonics, slow roll-off
        return k ** -(0.5 * tilt + 0.4)
    if instrument == "flute":  # near sine
        return np.where(k == 1, 1.0, 0.15 * (k <= 3) * k ** -(2 * tilt))
    if instrument == "bass":  # triangle-like: odd harmonics
        return (k % 2 == 1) * k ** -(1.0 + tilt) * (-1.0) ** ((k - 1) // 2)
    raise ValueError(f"no harmonic timbre for instrument {instrument!r}")


def _envelope(
    *, rng: np.random.Generator, instrument: str, starts: np.ndarray, n_samples: int, sample_rate: int
) -> np.ndarray:
    """Amplitude envelope ``[n_samples]`` of notes starting at samples ``starts [n_notes]``.

    Each note sounds for 60-95% of the gap to the next onset: plucked (piano, bass: 4 ms attack,
    0.2-0.6 s exponential decay) or sustained (strings: 50-100 ms attack, flute: 40 ms); 50 ms
    linear release. Attack and release shrink to 30% of the note for short notes.
    """
    env = np.zeros(n_samples)
    for start, gap in zip(starts, np.diff(starts, append=n_samples)):
        length = int(gap * rng.uniform(0.6, 0.95))
        if instrument in ("piano", "bass"):
            attack_s = 0.004
            env[start : start + length] = np.exp(np.arange(length) / (-rng.uniform(0.2, 0.6) * sample_rate))
        else:
            attack_s = rng.uniform(0.05, 0.1) if instrument == "strings" else 0.04
            env[start : start + length] = 1.0
        attack = max(1, min(int(attack_s * sample_rate), int(0.3 * length)))
        release = max(1, min(int(0.05 * sample_rate), int(0.3 * length)))
        env[start : start + attack] *= np.arange(attack) / attack
        env[start + length - release : start + length] *= np.arange(release, 0, -1) / release
    return env


def _pitched_line(
    *, rng: np.random.Generator, instrument: str, onsets_s: np.ndarray, midi: np.ndarray, tilt: float,
    n_samples: int, sample_rate: int,
) -> np.ndarray:  # fmt: skip
    """One instrument playing MIDI notes ``midi [n_notes]`` at ``onsets_s``: ``[n_samples]``.

    A wavetable oscillator (one period of the instrument's harmonics, band-limited below
    0.45 * ``sample_rate`` for the highest note) read at the melody's frequency.
    """
    freqs_hz = 440.0 * 2.0 ** ((midi - 69) / 12)
    n_harmonics = int(np.clip(0.45 * sample_rate / freqs_hz.max(), 1, 24))
    amps = _harmonic_amplitudes(instrument=instrument, tilt=tilt, n_harmonics=n_harmonics)
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=complex)
    spectrum[1 : n_harmonics + 1] = -0.5j * _TABLE_SIZE * amps  # irfft -> sum_k amps[k-1] * sin(2 pi k phase)
    table = np.fft.irfft(spectrum, n=_TABLE_SIZE)

    starts = np.round(onsets_s * sample_rate).astype(np.int64)
    freq_track = np.zeros(n_samples)
    freq_track[starts[0] :] = np.repeat(freqs_hz, np.diff(starts, append=n_samples))
    if instrument == "flute":  # vibrato: 4.5-6.5 Hz, +-0.6%
        t_s = np.arange(n_samples, dtype=np.float32) / sample_rate
        freq_track *= 1.0 + 0.006 * np.sin(np.float32(2 * np.pi * rng.uniform(4.5, 6.5)) * t_s)
    table_index = (np.cumsum(freq_track) * (_TABLE_SIZE / sample_rate)).astype(np.int64) & (_TABLE_SIZE - 1)
    env = _envelope(rng=rng, instrument=instrument, starts=starts, n_samples=n_samples, sample_rate=sample_rate)
    y = table[table_index] * env
    if instrument == "flute":  # breath noise
        y += 0.05 * env * (rng.random(n_samples, dtype=np.float32) - 0.5)
    return y


def _drum_line(*, rng: np.random.Generator, onsets_s: np.ndarray, n_samples: int, sample_rate: int) -> np.ndarray:
    """Percussive hits ``[n_samples]``: a noise burst plus a falling-pitch kick at every onset."""
    y = np.zeros(n_samples)
    hit_samples = int(0.25 * sample_rate)
    t_s = np.arange(hit_samples) / sample_rate
    kick_phase = 2 * np.pi * (50.0 * t_s + 70.0 * 0.03 * (1.0 - np.exp(-t_s / 0.03)))  # 120 Hz -> 50 Hz
    for start in np.round(onsets_s * sample_rate).astype(int):
        hit = rng.uniform(0.6, 2.0) * (rng.random(hit_samples) - 0.5) * np.exp(-t_s / rng.uniform(0.02, 0.06))
        hit += rng.uniform(0.3, 1.0) * np.sin(kick_phase) * np.exp(-t_s / 0.08)
        stop = min(n_samples, start + hit_samples)
        y[start:stop] += hit[: stop - start]
    return y
