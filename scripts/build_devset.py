"""Build the real-music development set: scores of the music21 corpus rendered with FluidSynth, as a ``data=folder``.

    python scripts/build_devset.py --out DEV [--n-clips 1000] [--seed 0] [--jobs 2] [--soundfont SF2] [--plain]

Prerequisites (Debian; see docs/datasets/devset.md)::

    apt-get install fluidsynth fluid-soundfont-gm      # the synthesizer and the FluidR3 General MIDI soundfont
    pip install -e ".[devset]"                         # music21 (the scores) and mido (MIDI files)

What it writes into ``--out`` (which must be empty or absent)::

    audio/<collection>/<track_id>.flac   mono, 22,050 Hz, 16 bit, 10-20 s
    tags.csv                             track_id, tags (';'), artist (the piece), split (by piece, 70/15/15)
    tag_categories.csv                   tag, category (7 categories, 32 tags)
    clips.csv                            how each clip was made (piece, bars, tempo, key, transposition, programs)
    devset_manifest.json                 builder version, arguments, tool versions, tag counts per split

Each clip is an excerpt of a real piece (whole bars, one time signature), played at a drawn tempo with tempo drift,
micro-timing and velocity jitter, downbeat accents, a random transposition of up to 4 semitones, General MIDI
instruments drawn per clip (and fitted to each part's register), and the synth's reverb and chorus drawn per
clip; the audio is cut at a drawn length of 10-20 s and peak-normalised to a drawn level. ``--plain`` turns the
performance and render variation off (no tempo drift, micro-timing, velocity jitter or accents; fixed articulation,
channel volume, FluidSynth's default reverb and chorus, one level): with another ``--soundfont`` and ``--seed`` it
makes a second set of another make to check a tuning against. The tags:

- instrument: the GM families that play (piano, organ, harpsichord, guitar, strings, woodwinds, brass, choir);
  a multi-part clip is one family, or (30%) its top part on one family and the others on another;
- texture: monophonic (one line: folk tunes, or 15% of multi-part clips rendered as their top voice alone),
  homophonic (chorales, string quartets) or polyphonic (masses, madrigals), by the repertory's texture;
- composer: bach, palestrina, monteverdi, beethoven, mozart, haydn, traditional;
- collection: chorale, mass, madrigal, string quartet, folk song, fiddle tune;
- tempo: slow (50-68 beats per minute), moderate (84-108), fast (128-160), drawn per clip, independent of the
  piece; the beat is the time signature's (a half note in 2/2, a dotted quarter in 6/8); the drift stays within
  6%, so the classes never overlap;
- mode: major or minor, by music21's Krumhansl-Schmuckler key finding on the excerpt's notes (an excerpt whose
  best key correlates below 0.7 is not used);
- meter: duple (2 or 4 beats), triple (3), compound (6, 9, 12: beats divided in three), from the time signature.

The same ``--seed`` and ``--n-clips`` give the same clips (tags, parameters and audio samples), whatever ``--jobs``.

Licences: music21 is BSD-3-Clause; its corpus is distributed "with the permission of the encoders ... though
there may be restrictions on commercial use" (``music21/corpus/license.txt``); the Essen folksong encodings are
distributed for non-commercial use (``corpus/essenFolksong/license.txt``); the works are out of copyright.
FluidSynth is LGPL-2.1; the FluidR3_GM soundfont (Frank Wen) is MIT; mido is MIT. Build the set locally for
research; do not redistribute it commercially (and never commit it to this repository).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from tagretrieval.runtime.files import atomic_write, atomic_write_json, atomic_write_text

BUILDER_VERSION = 1
SAMPLE_RATE_HZ = 22_050
CLIP_SECONDS = (10.0, 20.0)
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
PREREQUISITES = 'apt-get install fluidsynth fluid-soundfont-gm && pip install -e ".[devset]"'

TEMPO_BANDS_BPM = {"slow": (50.0, 68.0), "moderate": (84.0, 108.0), "fast": (128.0, 160.0)}
MAX_TEMPO_DRIFT = 0.06            # the per-bar tempo random walk stays within +-6% of the drawn tempo
TEMPO_DRIFT_STEP = 0.012          # standard deviation of one bar's step of that walk
ONSET_JITTER_SECONDS = 0.008      # standard deviation of each note's micro-timing
MAX_TRANSPOSE_SEMITONES = 4
MIN_KEY_CORRELATION = 0.7
MELODY_ONLY_PROBABILITY = 0.15
MIXED_ENSEMBLE_PROBABILITY = 0.3
MIN_NOTES_PER_CLIP = 8
WINDOW_ATTEMPTS = 8               # excerpts tried per clip before the piece gives up on it
SPLITS = (("train", 0.70), ("valid", 0.15), ("test", 0.15))
PLAIN_LEGATO, PLAIN_VELOCITY, PLAIN_LEVEL = 0.9, 80.0, 0.7   # --plain: the fixed articulation, velocity, peak
PLAIN_CONTROLS = (100, 40, 0)     # --plain: channel volume, reverb send, chorus send (General MIDI defaults)
MIDI_TICKS_PER_SECOND = 1920      # 960 ticks per beat at MIDI's default 120 beats per minute
FADE_OUT_SECONDS = 0.1
FLUIDSYNTH_TIMEOUT_SECONDS = 120

CATEGORY_TAGS = {
    "instrument": ["piano", "organ", "harpsichord", "guitar", "strings", "woodwinds", "brass", "choir"],
    "texture": ["monophonic", "homophonic", "polyphonic"],
    "composer": ["bach", "palestrina", "monteverdi", "beethoven", "mozart", "haydn", "traditional"],
    "collection": ["chorale", "mass", "madrigal", "string quartet", "folk song", "fiddle tune"],
    "tempo": list(TEMPO_BANDS_BPM),
    "mode": ["major", "minor"],
    "meter": ["duple", "triple", "compound"],
}

# GM programs per family: (program, lowest, highest median MIDI pitch of a part it plays)
FAMILIES: dict[str, list[tuple[int, int, int]]] = {
    "piano": [(0, 21, 108), (1, 21, 108)],
    "organ": [(19, 24, 96), (20, 36, 96), (16, 24, 96)],
    "harpsichord": [(6, 29, 89)],
    "guitar": [(24, 40, 84), (25, 40, 84)],
    "strings": [(40, 62, 100), (41, 53, 79), (42, 38, 67), (43, 28, 52)],
    "woodwinds": [(73, 65, 96), (68, 60, 88), (71, 52, 84), (70, 36, 67)],
    "brass": [(56, 60, 82), (60, 48, 74), (57, 43, 67), (58, 28, 55)],
    "choir": [(52, 43, 81), (53, 43, 81)],
}
MELODY_FAMILIES = ["strings", "woodwinds", "brass", "choir"]
ACCOMPANIMENT_FAMILIES = ["piano", "organ", "harpsichord", "guitar", "strings", "choir"]


@dataclass(frozen=True)
class Collection:
    tag: str
    texture: str                  # of a full rendering
    weight: float                 # share of the clips
    folder: str                   # under audio/


@dataclass(frozen=True)
class Piece:
    piece_id: str                 # e.g. "chorale/bwv66.6", "folk song/ballad80#12"
    collection: str
    composer: str
    path: str                     # absolute path of the score
    number: int | None = None     # tune number inside an ABC collection file


COLLECTIONS = [
    Collection("chorale", "homophonic", 0.19, "chorale"),
    Collection("mass", "polyphonic", 0.17, "mass"),
    Collection("madrigal", "polyphonic", 0.14, "madrigal"),
    Collection("string quartet", "homophonic", 0.20, "string-quartet"),
    Collection("folk song", "monophonic", 0.15, "folk-song"),
    Collection("fiddle tune", "monophonic", 0.15, "fiddle-tune"),
]
ESSEN_FILES = ("ballad80", "ballad20", "ballad40", "boehme10")   # German songs with measured meters
QUARTET_FOLDERS = {"beethoven": "beethoven", "haydn": "haydn", "mozart/k80": "mozart", "mozart/k155": "mozart",
                   "mozart/k156": "mozart", "mozart/k458": "mozart"}
QUARTETS_LEFT_OUT = {"opus133"}  # the Grosse Fuge: a fugue, not a homophonic texture
NOT_CHORALES = {"bwv846"}        # the C major prelude of the Well-Tempered Clavier, in the folder of the chorales


class BuildError(RuntimeError):
    """The dev set cannot be built as asked (missing prerequisite, non-empty output folder, ...)."""


# ------------------------------------------------------------------------------------------------ the catalogue

def corpus_root() -> Path:
    import music21.corpus

    root = Path(music21.corpus.__file__).parent
    if not (root / "bach").is_dir():
        raise BuildError(f"the music21 corpus is not installed under {root} (pip install music21 ships it)")
    return root


def catalogue(root: Path) -> dict[str, list[Piece]]:
    """Every usable piece of each collection, sorted by id (no score is parsed here)."""
    pieces: dict[str, list[Piece]] = {c.tag: [] for c in COLLECTIONS}
    chorales: dict[str, Path] = {}
    for path in sorted((root / "bach").iterdir()):   # one file per chorale: MusicXML before Humdrum
        if path.suffix in {".mxl", ".xml", ".krn"} and path.stem not in chorales and path.stem not in NOT_CHORALES:
            chorales[path.stem] = path
    pieces["chorale"] = [Piece(f"chorale/{s}", "chorale", "bach", str(p)) for s, p in sorted(chorales.items())]
    pieces["mass"] = [Piece(f"mass/{p.stem}", "mass", "palestrina", str(p))
                      for p in sorted((root / "palestrina").glob("*.krn"))]
    pieces["madrigal"] = [Piece(f"madrigal/{p.stem}", "madrigal", "monteverdi", str(p))
                          for p in sorted((root / "monteverdi").glob("*.mxl"))]
    for folder, composer in QUARTET_FOLDERS.items():
        for path in sorted((root / folder).rglob("*.mxl")):
            name = path.relative_to(root).with_suffix("").as_posix()
            if not QUARTETS_LEFT_OUT & set(Path(name).parts):
                pieces["string quartet"].append(Piece(f"string quartet/{name}", "string quartet", composer, str(path)))
    for stem in ESSEN_FILES:
        path = root / "essenFolksong" / f"{stem}.abc"
        numbers = re.findall(r"^X:\s*(\d+)", path.read_text(encoding="latin-1"), flags=re.M)
        pieces["folk song"] += [Piece(f"folk song/{stem}#{n}", "folk song", "traditional", str(path), int(n))
                                for n in numbers]
    pieces["fiddle tune"] = [Piece(f"fiddle tune/{p.stem}", "fiddle tune", "traditional", str(p))
                             for p in sorted((root / "ryansMammoth").glob("*.abc"))]
    for tag, found in pieces.items():
        found.sort(key=lambda p: p.piece_id)
        if not found:
            raise BuildError(f"no pieces found for collection {tag!r} in {root}")
    return pieces


def clip_quotas(n_clips: int) -> dict[str, int]:
    """Clips per collection: ``n_clips`` shared by weight (largest remainders), every collection at least one."""
    if n_clips < len(COLLECTIONS):
        raise BuildError(f"--n-clips must be at least {len(COLLECTIONS)} (one per collection), got {n_clips}")
    weights = np.array([c.weight for c in COLLECTIONS])
    exact = (n_clips - len(COLLECTIONS)) * weights / weights.sum()
    quotas = np.floor(exact).astype(int) + 1
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable")[: n_clips - quotas.sum()]:
        quotas[i] += 1
    return {c.tag: int(q) for c, q in zip(COLLECTIONS, quotas)}


def track_slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ------------------------------------------------------------------------------------------------ reading a score

@dataclass
class Music:
    """A score as plain arrays: bars of the first part and every part's notes (in quarter lengths)."""
    bar_starts_ql: np.ndarray                  # [n_bars]
    bar_ends_ql: np.ndarray                    # [n_bars]
    bar_meters: list[tuple[int, int] | None]   # time signature (numerator, denominator) in force in each bar
    parts: list[np.ndarray]                    # per part [n_notes, 3]: onset_ql, duration_ql, midi pitch


def read_music(piece: Piece) -> Music:
    from music21 import converter, stream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = (converter.parse(piece.path, number=piece.number) if piece.number is not None
                 else converter.parse(piece.path))
        parts = list(score.parts) or [score]
        bars = list(parts[0].getElementsByClass(stream.Measure))
        meters, meter = [], None
        for bar in bars:
            if bar.timeSignature is not None:
                meter = (int(bar.timeSignature.numerator), int(bar.timeSignature.denominator))
            meters.append(meter)
        starts = np.array([float(b.offset) for b in bars])
        ends = np.array([*starts[1:], starts[-1] + float(bars[-1].duration.quarterLength)]) if bars else starts
        notes = [tied_notes(part.flatten().notes) for part in parts]
    return Music(starts, ends, meters, [n for n in notes if len(n)])


def tied_notes(notes) -> np.ndarray:
    """[n, 3] onset_ql, duration_ql, midi pitch of a part's notes and chords, tied notes merged into one.

    What music21's ``stripTies`` gives for our purpose (checked on the corpus: the same notes, except that a tie
    from a chord into a chord of other pitches is kept per pitch here), without its deep copy of the part, which
    took ~8 s per quartet movement, most of the build's time. Chord symbols and grace notes are left out.
    """
    from music21 import harmony

    rows: list[list[float]] = []
    open_rows: dict[int, int] = {}   # pitch -> row of the note a tie carries on
    for element in notes:
        if isinstance(element, harmony.ChordSymbol) or element.quarterLength <= 0:
            continue
        onset, length = float(element.offset), float(element.quarterLength)
        members = list(element.notes) if element.isChord else [element]
        for member in members:
            pitch, tie = member.pitch.midi, member.tie or element.tie
            tie_type = None if tie is None else tie.type
            tied_row = rows[open_rows[pitch]] if pitch in open_rows else None
            # a tie carries on into the next note of its pitch that starts where it ends, whether or not the
            # encoding marked that note's end of the tie (some MusicXML files of the corpus do not)
            if tied_row is not None and abs(tied_row[0] + tied_row[1] - onset) < 1e-6:
                tied_row[1] += length
            else:
                rows.append([onset, length, pitch])
                open_rows[pitch] = len(rows) - 1
            if tie_type not in ("start", "continue"):
                open_rows.pop(pitch, None)
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def meter_class(meter: tuple[int, int] | None) -> tuple[str, float] | None:
    """(meter tag, beat in quarter lengths) of a time signature, None for one we do not tag (5/4, 7/8, none)."""
    if meter is None:
        return None
    numerator, denominator = meter
    if numerator in (2, 4):
        return "duple", 4.0 / denominator
    if numerator == 3:
        return "triple", 4.0 / denominator
    if numerator in (6, 9, 12):
        return "compound", 12.0 / denominator
    return None


# ------------------------------------------------------------------------------------------------ one clip

@dataclass
class Excerpt:
    bars: list[int]
    bar_starts_s: np.ndarray      # [n_bars] start of each chosen bar in the clip
    seconds_per_ql: np.ndarray    # [n_bars] at each bar's (drifting) tempo
    meter: str
    beat_ql: float
    tempo: str
    bpm: float
    duration_s: float


@dataclass
class Clip:
    notes: list[np.ndarray] = field(default_factory=list)   # per part [n, 4]: onset_s, duration_s, pitch, velocity
    programs: list[int] = field(default_factory=list)
    families: list[str] = field(default_factory=list)


def draw_excerpt(music: Music, rng: np.random.Generator, *, segment: tuple[float, float], plain: bool = False
                 ) -> Excerpt | None:
    """Whole bars of one time signature lasting at least the drawn clip length, at a drawn tempo (None: no fit).

    ``plain``: no tempo drift. The drift is drawn anyway, so that the varied sets stay as they were, but a plain set
    is not the varied set of the same seed rendered plainly: the bars' count changes the later draws.
    """
    n_bars = len(music.bar_starts_ql)
    lo, hi = int(segment[0] * n_bars), max(int(segment[0] * n_bars) + 1, int(segment[1] * n_bars))
    first = int(rng.integers(lo, min(hi, n_bars))) if n_bars else 0
    if n_bars == 0 or meter_class(music.bar_meters[first]) is None:
        return None
    meter, beat_ql = meter_class(music.bar_meters[first])
    tempo = str(rng.choice(list(TEMPO_BANDS_BPM)))
    bpm = float(rng.uniform(*TEMPO_BANDS_BPM[tempo]))
    duration_s = float(rng.uniform(*CLIP_SECONDS))
    same_meter = [i for i in range(n_bars) if music.bar_meters[i] == music.bar_meters[first]]
    loops = len(same_meter) == n_bars  # a piece in one meter may be repeated (strophes, repeats) to fill the clip
    bars, starts, spq, t_s, drift, i = [], [], [], 0.0, 0.0, first
    while t_s < duration_s:
        if i >= n_bars or music.bar_meters[i] != music.bar_meters[first]:
            if not loops or len(bars) > 4 * n_bars:
                return None
            i = 0
        drift = float(np.clip(drift + rng.normal(0.0, TEMPO_DRIFT_STEP), -MAX_TEMPO_DRIFT, MAX_TEMPO_DRIFT))
        seconds_per_ql = 60.0 / (bpm * (1.0 + (0.0 if plain else drift)) * beat_ql)
        bars.append(i)
        starts.append(t_s)
        spq.append(seconds_per_ql)
        t_s += (music.bar_ends_ql[i] - music.bar_starts_ql[i]) * seconds_per_ql
        i += 1
    return Excerpt(bars, np.array(starts), np.array(spq), meter, beat_ql, tempo, bpm, duration_s)


def excerpt_notes(music: Music, excerpt: Excerpt) -> list[np.ndarray]:
    """Per part [n, 3]: onset_s, duration_s, pitch of the notes starting in the excerpt's bars (unperformed)."""
    out = []
    for part in music.parts:
        rows = []
        for bar, start_s, spq in zip(excerpt.bars, excerpt.bar_starts_s, excerpt.seconds_per_ql):
            lo, hi = music.bar_starts_ql[bar], music.bar_ends_ql[bar]
            inside = part[(part[:, 0] >= lo) & (part[:, 0] < hi)]
            if len(inside):
                rows.append(np.stack([start_s + (inside[:, 0] - lo) * spq, inside[:, 1] * spq, inside[:, 2]], 1))
        out.append(np.concatenate(rows) if rows else np.zeros((0, 3)))
    return out


def find_key(parts: list[np.ndarray]) -> tuple[str, str, float]:
    """(tonic, mode, correlation) by music21's key finding (``analyze('key')``) on the notes.

    The analysis reads only the duration-weighted pitch-class distribution, so it is given one note per pitch
    class holding that class's total duration: the same answer, without building a stream of every note.
    """
    from music21 import note, stream

    notes = np.concatenate(parts)
    weights = np.bincount(notes[:, 2].astype(int) % 12, weights=notes[:, 1], minlength=12)
    summary = stream.Stream()
    for pitch_class, seconds in enumerate(weights):
        if seconds > 0:
            summary.append(note.Note(60 + pitch_class, quarterLength=round(float(seconds), 2) or 0.01))
    key = summary.analyze("key")
    return key.tonic.name, key.mode, float(key.correlationCoefficient)


def fit_program(family: str, median_pitch: float, rng: np.random.Generator) -> tuple[int, int]:
    """(GM program, octave shift in semitones) for a part of ``family`` whose median pitch is ``median_pitch``.

    A program whose register holds the part is drawn; when none does, the part moves by octaves into the register
    of a drawn one (a bass line on a flute sounds an octave or two up, as an arranger would write it).
    """
    options = FAMILIES[family]
    fitting = [o for o in options if o[1] <= median_pitch <= o[2]]
    program, low, high = (fitting or options)[int(rng.integers(len(fitting or options)))]
    shift = 0
    while median_pitch + shift < low and shift < 36:
        shift += 12
    while median_pitch + shift > high and shift > -36:
        shift -= 12
    return program, shift


def perform(parts: list[np.ndarray], excerpt: Excerpt, rng: np.random.Generator, *, transpose: int,
            plain: bool = False) -> Clip:
    """Instruments, octave placement, velocities, micro-timing and articulation for the excerpt's parts.

    ``plain``: the instruments only; fixed articulation and velocity, no accents, lead-in or micro-timing.
    """
    active = [p for p in parts if len(p)]
    order = np.argsort([-np.median(p[:, 2]) for p in active], kind="stable")   # top part first
    active = [active[i] for i in order]
    if len(active) > 1 and rng.random() < MIXED_ENSEMBLE_PROBABILITY:
        melody = str(rng.choice(MELODY_FAMILIES))
        rest = str(rng.choice([f for f in ACCOMPANIMENT_FAMILIES if f != melody]))
        families = [melody] + [rest] * (len(active) - 1)
    else:
        families = [str(rng.choice(list(FAMILIES)))] * len(active)
    legato = rng.uniform(0.75, 0.98)
    base_velocity = rng.uniform(55, 100)
    accent = rng.uniform(0, 14)
    lead_in_s = rng.uniform(0.0, 0.25)
    if plain:
        legato, base_velocity, accent, lead_in_s = PLAIN_LEGATO, PLAIN_VELOCITY, 0.0, 0.0
    jitter = 0.0 if plain else 1.0
    clip = Clip()
    for k, (part, family) in enumerate(zip(active, families)):
        pitch = part[:, 2] + transpose
        program, shift = fit_program(family, float(np.median(pitch)), rng)
        onset = part[:, 0] + lead_in_s + jitter * rng.normal(0.0, ONSET_JITTER_SECONDS, len(part))
        on_downbeat = np.isin(np.round(part[:, 0], 6), np.round(excerpt.bar_starts_s, 6))
        melody_bonus = 6.0 if k == 0 and len(active) > 1 else 0.0
        velocity = base_velocity + melody_bonus + accent * on_downbeat + jitter * rng.normal(0.0, 6.0, len(part))
        notes = np.stack([np.maximum(onset, 0.0), np.maximum(part[:, 1] * legato, 0.05), pitch + shift,
                          np.clip(np.round(velocity), 1, 127)], axis=1)
        clip.notes.append(notes[(notes[:, 2] >= 12) & (notes[:, 2] <= 115)])
        clip.programs.append(program)
        clip.families.append(family)
    return clip


def write_midi(clip: Clip, path: Path, rng: np.random.Generator, *, end_s: float, plain: bool = False) -> None:
    import mido

    midi = mido.MidiFile(type=1, ticks_per_beat=MIDI_TICKS_PER_SECOND // 2)   # 120 bpm: 1 beat = 0.5 s
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0)]))
    channels = [c for c in range(16) if c != 9]   # channel 10 is percussion in General MIDI
    for k, (notes, program) in enumerate(zip(clip.notes, clip.programs)):
        channel = channels[k % len(channels)]
        events = []
        for onset_s, duration_s, pitch, velocity in notes:
            if onset_s >= end_s:
                continue
            on, off = round(onset_s * MIDI_TICKS_PER_SECOND), round(min(onset_s + duration_s, end_s + 0.3) *
                                                                    MIDI_TICKS_PER_SECOND)
            events.append((on, 1, mido.Message("note_on", channel=channel, note=int(pitch), velocity=int(velocity))))
            events.append((max(off, on + 1), 0, mido.Message("note_off", channel=channel, note=int(pitch))))
        events.sort(key=lambda e: (e[0], e[1]))
        drawn = (int(rng.integers(85, 121)), int(rng.integers(10, 101)), int(rng.integers(0, 51)))
        volume, reverb, chorus = PLAIN_CONTROLS if plain else drawn
        track = mido.MidiTrack([
            mido.Message("program_change", channel=channel, program=program, time=0),
            mido.Message("control_change", channel=channel, control=7, value=volume, time=0),
            mido.Message("control_change", channel=channel, control=91, value=reverb, time=0),
            mido.Message("control_change", channel=channel, control=93, value=chorus, time=0),
        ])
        now = 0
        for tick, _, message in events:
            track.append(message.copy(time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(str(path))


def render(midi_path: Path, wav_path: Path, rng: np.random.Generator, *, fluidsynth: str, soundfont: str,
           plain: bool = False) -> dict[str, float]:
    """FluidSynth renders the MIDI file offline at 22,050 Hz with drawn reverb and chorus settings (its own: plain)."""
    synth = {"synth.reverb.room-size": rng.uniform(0.1, 0.9), "synth.reverb.damp": rng.uniform(0.0, 0.8),
             "synth.reverb.width": rng.uniform(0.2, 1.0), "synth.reverb.level": rng.uniform(0.2, 0.9),
             "synth.chorus.depth": rng.uniform(1.0, 12.0), "synth.chorus.level": rng.uniform(0.5, 3.0)}
    if plain:
        synth = {}
    options = [a for k, v in synth.items() for a in ("-o", f"{k}={v:.3f}")]
    command = [fluidsynth, "-ni", "-q", "-F", str(wav_path), "-T", "wav", "-O", "float", "-r", str(SAMPLE_RATE_HZ),
               "-g", "0.4", "-o", "synth.dynamic-sample-loading=1", *options, soundfont, str(midi_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=FLUIDSYNTH_TIMEOUT_SECONDS)
    if done.returncode != 0 or not wav_path.exists():
        raise RuntimeError(f"fluidsynth failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return {k.removeprefix("synth."): round(v, 3) for k, v in synth.items()}


def finish_audio(wav_path: Path, rng: np.random.Generator, *, duration_s: float, plain: bool = False) -> np.ndarray:
    """Mono, cut at the clip length with a short fade-out, peak-normalised to a drawn level (plain: one) [n_samples]."""
    y, sample_rate = sf.read(str(wav_path), dtype="float64", always_2d=True)
    if sample_rate != SAMPLE_RATE_HZ:
        raise RuntimeError(f"fluidsynth wrote {sample_rate} Hz, asked for {SAMPLE_RATE_HZ}")
    y = y.mean(axis=1)
    n_samples = int(round(duration_s * SAMPLE_RATE_HZ))
    y = np.pad(y[:n_samples], (0, max(0, n_samples - len(y))))
    fade = int(FADE_OUT_SECONDS * SAMPLE_RATE_HZ)
    y[-fade:] *= np.linspace(1.0, 0.0, fade)
    peak = np.abs(y).max()
    if not np.isfinite(peak) or peak < 1e-4:
        raise RuntimeError("rendered audio is silent")
    level = rng.uniform(0.3, 0.9)
    return y * ((PLAIN_LEVEL if plain else level) / peak)


# ------------------------------------------------------------------------------------------------ one piece (a job)

@dataclass(frozen=True)
class Job:
    piece: Piece
    n_clips: int
    seed: tuple[int, ...]         # entropy of the piece's random stream
    out: str
    fluidsynth: str
    soundfont: str
    texture: str
    folder: str
    plain: bool = False           # no performance or render variation (--plain)


def render_piece(job: Job) -> tuple[list[dict], list[str]]:
    """Up to ``job.n_clips`` clips of one piece: (rows of clips.csv, reasons for clips that could not be made)."""
    rng = np.random.default_rng(np.random.SeedSequence(job.seed))
    try:
        music = read_music(job.piece)
    except Exception as error:   # an unreadable score is reported, not fatal: another piece takes its place
        return [], [f"{job.piece.piece_id}: cannot read score ({type(error).__name__}: {error})"]
    if not music.parts or len(music.bar_starts_ql) == 0:
        return [], [f"{job.piece.piece_id}: no notes or no bars"]
    rows, failures = [], []
    with tempfile.TemporaryDirectory(prefix="devset-") as scratch:
        for k in range(job.n_clips):
            row = make_clip(job, music, rng, index=k, scratch=Path(scratch))
            if isinstance(row, str):
                failures.append(f"{job.piece.piece_id} clip {k}: {row}")
            else:
                rows.append(row)
    return rows, failures


def make_clip(job: Job, music: Music, rng: np.random.Generator, *, index: int, scratch: Path) -> dict | str:
    segment = (index / job.n_clips, (index + 1) / job.n_clips)   # clips of one piece come from different places
    reason = "no excerpt in one tagged meter"
    for _ in range(WINDOW_ATTEMPTS):
        excerpt = draw_excerpt(music, rng, segment=segment, plain=job.plain)
        if excerpt is None:
            continue
        parts = excerpt_notes(music, excerpt)
        if len(music.parts) > 1 and rng.random() < MELODY_ONLY_PROBABILITY:
            top = max((p for p in parts if len(p)), key=lambda p: np.median(p[:, 2]), default=None)
            parts, texture = ([] if top is None else [top]), "monophonic"
        else:
            texture = job.texture
        active = [p for p in parts if len(p)]
        if sum(len(p) for p in active) < MIN_NOTES_PER_CLIP:
            reason = "too few notes"
            continue
        if texture != "monophonic" and len(active) < 2:
            reason = "one voice only in a multi-part excerpt"
            continue
        tonic, mode, correlation = find_key(active)
        if correlation < MIN_KEY_CORRELATION or mode not in ("major", "minor"):
            reason = f"ambiguous key ({tonic} {mode}, r={correlation:.2f})"
            continue
        transpose = int(rng.integers(-MAX_TRANSPOSE_SEMITONES, MAX_TRANSPOSE_SEMITONES + 1))
        clip = perform(active, excerpt, rng, transpose=transpose, plain=job.plain)
        track_id = track_slug(f"{job.piece.piece_id}-{index}")
        midi_path, wav_path = scratch / f"{track_id}.mid", scratch / f"{track_id}.wav"
        write_midi(clip, midi_path, rng, end_s=excerpt.duration_s, plain=job.plain)
        synth = render(midi_path, wav_path, rng, fluidsynth=job.fluidsynth, soundfont=job.soundfont, plain=job.plain)
        try:
            y = finish_audio(wav_path, rng, duration_s=excerpt.duration_s, plain=job.plain)
        except RuntimeError as error:
            reason = str(error)
            continue
        audio_path = Path(job.out) / "audio" / job.folder / f"{track_id}.flac"
        audio_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(audio_path, lambda f: sf.write(f, y, SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16"))
        instruments = sorted(set(clip.families), key=CATEGORY_TAGS["instrument"].index)
        tags = [*instruments, texture, job.piece.composer, job.piece.collection, excerpt.tempo, mode, excerpt.meter]
        return {
            "track_id": track_id, "tags": ";".join(tags), "piece": job.piece.piece_id,
            "collection": job.piece.collection, "composer": job.piece.composer,
            "source": Path(job.piece.path).relative_to(corpus_root()).as_posix()
            + ("" if job.piece.number is None else f"#{job.piece.number}"),
            "first_bar": excerpt.bars[0], "n_bars": len(excerpt.bars), "duration_s": round(excerpt.duration_s, 3),
            "bpm": round(excerpt.bpm, 2), "beat_ql": excerpt.beat_ql, "meter": excerpt.meter,
            "key": f"{tonic} {mode}", "key_correlation": round(correlation, 3), "transpose_semitones": transpose,
            "melody_only": texture == "monophonic" and job.texture != "monophonic",
            "programs": " ".join(map(str, clip.programs)), "n_parts": len(clip.programs),
            "synth": json.dumps(synth, sort_keys=True),
        }
    return reason


# ------------------------------------------------------------------------------------------------ the whole set

def assign_splits(rows: list[dict], seed: int) -> dict[str, str]:
    """Piece -> split: the pieces of each (collection, composer) shuffled and cut 70/15/15 by clip count."""
    clips_per_piece = Counter(r["piece"] for r in rows)
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        groups.setdefault((r["collection"], r["composer"]), [])
        if r["piece"] not in groups[(r["collection"], r["composer"])]:
            groups[(r["collection"], r["composer"])].append(r["piece"])
    bounds = np.cumsum([f for _, f in SPLITS])
    split_of: dict[str, str] = {}
    for g, key in enumerate(sorted(groups)):
        rng = np.random.default_rng([seed, 7, g])
        pieces = [groups[key][i] for i in rng.permutation(len(groups[key]))]
        counts = np.array([clips_per_piece[p] for p in pieces], dtype=float)
        # a piece falls where the middle of its clips falls; the random rotation spreads small groups' pieces
        middle = (np.cumsum(counts) - counts / 2) / counts.sum()
        position = (middle + rng.uniform()) % 1.0
        for piece, x in zip(pieces, position):
            split_of[piece] = SPLITS[int(np.searchsorted(bounds, x, side="right"))][0]
    for name, _ in SPLITS:   # never leave a split empty: it takes the smallest piece of the largest split
        if name not in split_of.values() and len(split_of) >= len(SPLITS):
            largest = Counter(split_of.values()).most_common(1)[0][0]
            piece = min((p for p, s in split_of.items() if s == largest), key=lambda p: (clips_per_piece[p], p))
            split_of[piece] = name
    return split_of


def check_prerequisites(fluidsynth: str, soundfont: str) -> str:
    missing = []
    for module in ("music21", "mido"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"python package {module}")
    found = shutil.which(fluidsynth)
    if found is None:
        missing.append(f"fluidsynth executable ({fluidsynth!r} not on PATH)")
    if not Path(soundfont).is_file():
        missing.append(f"soundfont {soundfont}")
    if missing:
        raise BuildError("missing " + ", ".join(missing) + f"; install with: {PREREQUISITES}")
    return found


def tool_versions(fluidsynth: str) -> dict[str, str]:
    import importlib.metadata

    first = subprocess.run([fluidsynth, "--version"], capture_output=True, text=True).stdout.splitlines()
    return {"music21": importlib.metadata.version("music21"), "mido": importlib.metadata.version("mido"),
            "fluidsynth": first[0] if first else "unknown", "python": sys.version.split()[0]}


def write_table(path: Path, rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def build(*, out: Path, n_clips: int, seed: int, jobs: int, fluidsynth: str, soundfont: str,
          plain: bool = False) -> dict:
    """Build the dev set into ``out``; returns the manifest."""
    fluidsynth = check_prerequisites(fluidsynth, soundfont)
    if out.exists() and any(out.iterdir()):
        raise BuildError(f"--out {out} is not empty: give a new folder (the build never overwrites one)")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    pieces = catalogue(corpus_root())
    quotas = clip_quotas(n_clips)
    queues, pending = {}, []
    for c_index, collection in enumerate(COLLECTIONS):
        rng = np.random.default_rng([seed, 3, c_index])
        order = [pieces[collection.tag][i] for i in rng.permutation(len(pieces[collection.tag]))]
        queues[collection.tag] = [(rank, piece) for rank, piece in enumerate(order)]
    settings = {c.tag: c for c in COLLECTIONS}

    def take(tag: str, n_wanted: int) -> list[Job]:
        """Jobs for ``n_wanted`` more clips of a collection, from the next pieces in its shuffled queue."""
        per_piece = max(1, math.ceil(quotas[tag] / len(pieces[tag])))
        taken = []
        while n_wanted > 0 and queues[tag]:
            rank, piece = queues[tag].pop(0)
            k = min(per_piece, n_wanted)
            taken.append(Job(piece, k, (seed, COLLECTIONS.index(settings[tag]), rank), str(out), fluidsynth,
                             soundfont, settings[tag].texture, settings[tag].folder, plain))
            n_wanted -= k
        return taken

    for tag, quota in quotas.items():
        pending += take(tag, quota)
    rows, failures, n_round = [], [], 0
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with context.Pool(processes=max(1, jobs)) as pool:
        while pending:
            n_round += 1
            # big scores first, so that the last job to finish is a short one
            pending.sort(key=lambda j: (-os.path.getsize(j.piece.path) * j.n_clips, j.piece.piece_id))
            short: Counter = Counter()
            for i, (job_rows, job_failures) in enumerate(pool.imap(render_piece, pending)):
                rows += job_rows
                failures += job_failures
                short[pending[i].piece.collection] += pending[i].n_clips - len(job_rows)
                if (i + 1) % 25 == 0 or i + 1 == len(pending):
                    print(f"round {n_round}: {i + 1}/{len(pending)} pieces, {len(rows)}/{n_clips} clips, "
                          f"{time.time() - started:.0f} s", flush=True)
            pending = [job for tag, n in sorted(short.items()) if n for job in take(tag, n)]
    rows.sort(key=lambda r: r["track_id"])
    if not rows:
        raise BuildError("no clip could be made: " + "; ".join(failures[:5]))
    split_of = assign_splits(rows, seed)
    for row in rows:
        row["artist"] = row["piece"]
        row["split"] = split_of[row["piece"]]
    write_table(out / "tags.csv", rows, ["track_id", "tags", "artist", "split"])
    write_table(out / "clips.csv", rows, ["track_id", "split", "tags", "piece", "collection", "composer", "source",
                                          "first_bar", "n_bars", "duration_s", "bpm", "beat_ql", "meter", "key",
                                          "key_correlation", "transpose_semitones", "melody_only", "n_parts",
                                          "programs", "synth"])
    write_table(out / "tag_categories.csv", [{"tag": t, "category": c} for c, tags in CATEGORY_TAGS.items()
                                             for t in tags], ["tag", "category"])
    counts = {name: Counter(t for r in rows if r["split"] == name for t in r["tags"].split(";")) for name, _ in SPLITS}
    manifest = {
        "builder_version": BUILDER_VERSION, "n_clips_asked": n_clips, "n_clips": len(rows), "seed": seed,
        "sample_rate_hz": SAMPLE_RATE_HZ, "soundfont": soundfont, "plain": plain, "tools": tool_versions(fluidsynth),
        "clips_per_split": dict(Counter(r["split"] for r in rows)),
        "pieces_per_split": dict(Counter(split_of.values())),
        "tag_counts": {t: {name: counts[name][t] for name, _ in SPLITS} for tags in CATEGORY_TAGS.values()
                       for t in tags},
        "not_made": failures, "seconds": round(time.time() - started, 1),
    }
    atomic_write_json(out / "devset_manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="new folder for the dev set (data.root)")
    parser.add_argument("--n-clips", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="rendering processes")
    parser.add_argument("--fluidsynth", default="fluidsynth", help="the fluidsynth executable")
    parser.add_argument("--soundfont", default=DEFAULT_SOUNDFONT, help="a General MIDI .sf2 soundfont")
    parser.add_argument("--plain", action="store_true",
                        help="no performance or render variation (a second set of another make)")
    args = parser.parse_args(argv)
    try:
        manifest = build(out=args.out, n_clips=args.n_clips, seed=args.seed, jobs=args.jobs,
                         fluidsynth=args.fluidsynth, soundfont=args.soundfont, plain=args.plain)
    except BuildError as error:
        print(f"build_devset: {error}", file=sys.stderr)
        return 2
    print(f"{manifest['n_clips']} clips ({manifest['clips_per_split']}) in {args.out}, "
          f"{manifest['seconds']:.0f} s; {len(manifest['not_made'])} clips not made (see devset_manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
