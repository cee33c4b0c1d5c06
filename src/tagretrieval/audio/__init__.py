"""Audio front end: decoding (``io``), the log-mel module (``frontend``), the packed mel store (``store``) and the
job that fills it (``cache``)."""

from tagretrieval.audio.cache import PrepareOutcome, cache_params, open_for_prepare, prepare_mels
from tagretrieval.audio.frontend import FRONTEND_VERSION, MelFrontend, mel_from_file
from tagretrieval.audio.io import AUDIO_EXTENSIONS, AudioDecodeError, load_audio
from tagretrieval.audio.legacy_cache import LegacyMelCache
from tagretrieval.audio.store import CacheMismatchError, LegacyCacheError, MelStore

__all__ = [
    "AUDIO_EXTENSIONS",
    "FRONTEND_VERSION",
    "AudioDecodeError",
    "CacheMismatchError",
    "LegacyCacheError",
    "LegacyMelCache",
    "MelFrontend",
    "MelStore",
    "PrepareOutcome",
    "cache_params",
    "load_audio",
    "mel_from_file",
    "open_for_prepare",
    "prepare_mels",
]
