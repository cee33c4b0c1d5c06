"""The song inputs a prepared dataset can hold, by name: what ``model=auto`` picks from and ``model=`` is checked
against (:mod:`tagretrieval.models.choice`).

An importer tells what its import will hold before importing (``importer.song_inputs()``, from its settings and
a glance at its folder), so that a model that cannot work on it is refused before a long import;
:func:`dataset_inputs` tells what a prepared dataset holds.
"""

from __future__ import annotations

from collections.abc import Iterable

AUDIO = "audio"        # log-mels in the mel store (prepared/mels)
CF = "cf"              # collaborative-filtering vectors of the listening data (cf.npy)
FEATURES = "features"  # precomputed song features (features.npy)
SONG_INPUTS: tuple[str, ...] = (AUDIO, CF, FEATURES)
_DESCRIPTION = {AUDIO: "audio", CF: "CF vectors (listening data)", FEATURES: "precomputed song features"}


def describe(inputs: Iterable[str]) -> str:
    """``{"audio", "cf"}`` -> ``"audio and CF vectors (listening data)"``; empty -> ``"no song input"``."""
    names = [_DESCRIPTION[name] for name in SONG_INPUTS if name in set(inputs)]
    if not names:
        return "no song input"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def dataset_inputs(dataset) -> frozenset[str]:
    """The song inputs a :class:`~tagretrieval.data.prepared.PreparedDataset` holds."""
    return frozenset(name for name, present in ((AUDIO, dataset.has_mels), (CF, dataset.cf is not None),
                                                (FEATURES, dataset.features is not None)) if present)
