"""Audio front end: decoding (``io``), the log-mel module (``frontend``) and the mel cache (``cache``)."""

from tagretrieval.audio.cache import CacheMismatchError, MelCache, PrepareOutcome, cache_params, prepare_mels
from tagretrieval.audio.frontend import FRONTEND_VERSION, MelFrontend, mel_from_file
from tagretrieval.audio.io import AUDIO_EXTENSIONS, AudioDecodeError, load_audio

__all__ = [
    "AUDIO_EXTENSIONS",
    "FRONTEND_VERSION",
    "AudioDecodeError",
    "CacheMismatchError",
    "MelCache",
    "MelFrontend",
    "PrepareOutcome",
    "cache_params",
    "load_audio",
    "mel_from_file",
    "prepare_mels",
]
