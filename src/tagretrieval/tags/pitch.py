"""Tag vectors for musical pitches (``tag_encoder=pitch``): note names -> sinusoidal codes of the MIDI number.

Word vectors know nothing about ``C#4``, and free learned vectors (``tag_encoder=learned``) know nothing
about which notes are neighbours. Here a note's vector is a fixed function of its MIDI number ``m``,

    code(m) = [sin(2 pi m / P_1), cos(2 pi m / P_1), ..., sin(2 pi m / P_n), cos(2 pi m / P_n)] / sqrt(n)

with ``n = dim / 2`` periods ``P_i`` spaced geometrically from ``min_period_semitones`` to
``max_period_semitones`` (the position code of transformers, with semitones as positions). Then
``code(a) . code(b) = mean_i cos(2 pi (a - b) / P_i)`` depends only on the interval ``a - b``: the same
for every pair a semitone apart, highest for neighbouring notes and falling off with distance (the long
periods), and the tag branch's MLP can learn any other pitch similarity on top (the periods near 12
semitones carry octave equivalence). Unit norm.

Note names: ``C4`` is MIDI 60 (scientific pitch notation), so MIDI 0 is ``C-1`` and 127 is ``G9``; sharps are
written ``C#4``. :func:`name_to_midi` also reads flats (``Db4``) and is the inverse of :func:`midi_to_name`.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

NOTE_NAMES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
N_MIDI_NOTES = 128
_NAME = re.compile(r"([A-Ga-g])([#b]?)(-?\d+)")
_PITCH_CLASS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def midi_to_name(midi: int) -> str:
    """``60 -> "C4"``, ``61 -> "C#4"``, ``0 -> "C-1"``; ``midi`` in ``[0, 127]``."""
    if not 0 <= int(midi) < N_MIDI_NOTES or int(midi) != midi:
        raise ValueError(f"MIDI note numbers are integers in [0, {N_MIDI_NOTES - 1}], got {midi!r}")
    midi = int(midi)
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def midi_octave(midi: int) -> int:
    """Octave number of ``midi`` in scientific pitch notation (``60 -> 4``, ``0 -> -1``)."""
    return int(midi) // 12 - 1


def name_to_midi(name: str) -> int | None:
    """``"C4" -> 60``, ``"C#4"``/``"Db4" -> 61``, ``"C-1" -> 0``; None if ``name`` is not a note in MIDI range."""
    match = _NAME.fullmatch(str(name).strip())
    if match is None:
        return None
    letter, accidental, octave = match.groups()
    midi = 12 * (int(octave) + 1) + _PITCH_CLASS[letter.upper()] + {"": 0, "#": 1, "b": -1}[accidental]
    return midi if 0 <= midi < N_MIDI_NOTES else None


class PitchEncoder:
    """Fixed sinusoidal codes of the MIDI number of each tag (module docstring); same interface as the
    encoders of :mod:`tagretrieval.tags.encoders`.

    Args:
        dim: vector size (even): ``dim / 2`` sine/cosine pairs.
        min_period_semitones, max_period_semitones: shortest and longest period, in semitones. The longest
            should exceed the MIDI range (128) so that distance keeps lowering similarity across it.
        drop_missing: tags that are not note names are dropped (True) or refused (False).
    """

    trainable = False

    def __init__(self, *, dim: int = 300, min_period_semitones: float = 2.0, max_period_semitones: float = 512.0,
                 drop_missing: bool = False) -> None:
        if dim < 2 or dim % 2:
            raise ValueError(f"tag_encoder.dim must be a positive even number, got {dim}")
        if not 0 < min_period_semitones < max_period_semitones:
            raise ValueError("need 0 < min_period_semitones < max_period_semitones, got "
                             f"{min_period_semitones} and {max_period_semitones}")
        self.dim = dim
        self.min_period_semitones = float(min_period_semitones)
        self.max_period_semitones = float(max_period_semitones)
        self.drop_missing = drop_missing

    @property
    def periods_semitones(self) -> np.ndarray:
        """The ``dim / 2`` periods, float64, geometric from ``min_period_semitones`` to ``max_period_semitones``."""
        return np.geomspace(self.min_period_semitones, self.max_period_semitones, self.dim // 2)

    def code(self, midi: Sequence[float] | np.ndarray) -> np.ndarray:
        """Unit-norm codes ``float32 [n, dim]`` of MIDI numbers ``[n]`` (fractional pitches allowed)."""
        midi = np.asarray(midi, dtype=np.float64)
        phase = 2 * np.pi * midi[:, None] / self.periods_semitones[None, :]  # [n, dim / 2]
        pairs = np.stack([np.sin(phase), np.cos(phase)], axis=-1).reshape(len(midi), self.dim)
        return (pairs / np.sqrt(self.dim // 2)).astype(np.float32)

    def vectors(self, tags: Sequence[str], *, train_tag_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
        """``([n_tags, dim] float32, tags that are not note names)``; missing rows are zero."""
        out = np.zeros((len(tags), self.dim), dtype=np.float32)
        midi = [name_to_midi(tag) for tag in tags]
        known = [j for j, m in enumerate(midi) if m is not None]
        if known:
            out[known] = self.code([midi[j] for j in known])
        return out, [tag for tag, m in zip(tags, midi) if m is None]
