"""``write_viewer``: one self-contained HTML page to explore a song embedding space.

The page inlines its CSS, its JavaScript (``assets/viewer.js``, hand-written, no library) and its data,
so it opens from disk with no server and no network. The data holds the 2-D maps, the track metadata
and the *full* normalised song and tag embeddings (for cosine rankings in the page), rounded to 4
decimals and packed as little-endian int16 in base64: about 2.7 characters per value instead of ~8 as
JSON text. Size grows as ``n_tracks * D * 2.7`` bytes: about 1 MB for 1,200 songs at ``D = 256``,
15 MB for 20,000; beyond ``max_tracks`` songs a seeded subsample is shown, with a warning.

Audio (``audio=``): ``"relative"`` writes each song's audio path relative to the page's folder (no local absolute
path, no ``file://`` URL in the page: it keeps playing when the page's folder and the audio move together),
``"copy"`` copies the files into ``audio/`` next to the page (a folder to move or share as it is), ``"none"`` writes
no audio. The page is written atomically.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from tagretrieval.runtime.files import atomic_write, atomic_write_text
from tagretrieval.viewer.clusters import normalise_rows, spherical_kmeans, split_tags
from tagretrieval.viewer.projection import methods_for, project

REQUIRED_COLUMNS: tuple[str, ...] = ("track_id", "artist", "tags", "split", "audio_path")
EMBEDDING_DECIMALS = 4
DATA_FORMAT_VERSION = 1
AUDIO_MODES: tuple[str, ...] = ("relative", "copy", "none")
AUDIO_DIR = "audio"
"""With ``audio="copy"``: the folder next to the page that receives the audio files."""


def default_n_clusters(n_tracks: int) -> int:
    """``round(sqrt(n_tracks / 10))`` clamped to ``[2, 12]`` (1,200 songs -> 11); 1 for a single song."""
    if n_tracks < 2:
        return 1
    return int(min(12, max(2, round(np.sqrt(n_tracks / 10)))))


def write_viewer(
    path: str | Path,
    *,
    track_embeddings: np.ndarray,
    tracks: pd.DataFrame,
    tag_embeddings: np.ndarray,
    tags: Sequence[str],
    categories: Sequence[str],
    projection: str = "tsne",
    seed: int = 0,
    n_clusters: int | None = None,
    audio_base: str | Path | None = None,
    audio: str = "relative",
    max_tracks: int = 20_000,
    title: str = "tagretrieval embedding viewer",
) -> Path:
    """Write the viewer page for one embedding space.

    Args:
        path: the HTML file to write (parent folders are created).
        track_embeddings: ``[n_tracks, D]`` song embeddings, any scale (rows are L2-normalised here).
        tracks: ``n_tracks`` rows, columns ``track_id, artist, tags, split, audio_path``; ``tags`` is
            ``';'``-joined tag names; ``audio_path`` may be empty (no audio for that song).
        tag_embeddings: ``[n_tags, D]`` tag embeddings in the same space, row ``j`` for ``tags[j]``.
        tags: ``n_tags`` unique tag names; track tags outside this list are shown but not used for colours.
        categories: ``n_tags`` category names (``"genre"``, ``"mood"``), one per tag.
        projection: ``"tsne"``, ``"umap"`` (needs ``umap-learn``) or ``"both"`` (a switch in the page).
        seed: seeds the maps, the clustering and the subsample.
        n_clusters: spherical k-means clusters; None -> :func:`default_n_clusters`.
        audio_base: folder that relative ``audio_path`` values are relative to; None: relative to the page's
            folder (where the browser resolves them).
        audio: ``"relative"`` (paths relative to the page's folder), ``"copy"`` (files copied into
            ``AUDIO_DIR`` next to the page; a file that cannot be found is left out, with a warning) or
            ``"none"`` (no audio in the page).
        max_tracks: above this many songs, a seeded random subsample of ``max_tracks`` is shown (warning).
        title: the page title.

    Returns:
        ``path``.

    Raises:
        ValueError: missing columns, mismatched shapes, duplicate track ids or tags, NaN/inf or
            zero-norm embeddings (the offending tracks/tags are named), an unknown ``audio`` mode.
        FileWriteError: the page (or a copied audio file) could not be written; nothing partial is left.
    """
    path = Path(path)
    if audio not in AUDIO_MODES:
        raise ValueError(f"unknown audio mode {audio!r}; expected one of {AUDIO_MODES}")
    names = _check_inputs(track_embeddings=track_embeddings, tracks=tracks, tag_embeddings=tag_embeddings,
                          tags=tags, categories=categories, max_tracks=max_tracks)
    songs = normalise_rows(track_embeddings, names=names)
    tag_vectors = normalise_rows(tag_embeddings, names=list(tags))
    methods = methods_for(projection)

    n_total = len(tracks)
    rows = np.arange(n_total)
    if n_total > max_tracks:
        rows = np.sort(np.random.default_rng(seed).choice(n_total, size=max_tracks, replace=False))
        warnings.warn(f"{n_total} tracks: the viewer shows a random subsample of {max_tracks} (seed {seed}); "
                      f"raise max_tracks for all of them (page size ~{_size_mb(n_total, songs.shape[1]):.0f} MB)",
                      stacklevel=2)
    songs, shown = songs[rows], tracks.iloc[rows].reset_index(drop=True)

    k = default_n_clusters(len(shown)) if n_clusters is None else n_clusters
    labels, _ = spherical_kmeans(songs, k, seed)
    tag_lists = split_tags(shown["tags"])
    _warn_unknown_tags(tag_lists, tags)
    column = {t: j for j, t in enumerate(tags)}
    data = {
        "format_version": DATA_FORMAT_VERSION,
        "title": title,
        "n_tracks_total": n_total,
        "dim": int(songs.shape[1]),
        "tags": list(map(str, tags)),
        "categories": list(map(str, categories)),
        "tracks": {
            "id": shown["track_id"].astype(str).tolist(),
            "artist": _text(shown["artist"]),
            "tag_text": ["; ".join(t) for t in tag_lists],
            "tag_ids": [[column[t] for t in tag_list if t in column] for tag_list in tag_lists],
            "split": _text(shown["split"]),
            "audio": _audio_sources(shown, html_dir=path.parent, audio_base=audio_base, mode=audio),
            "cluster": labels.tolist(),
        },
        "n_clusters": int(k),
        "track_embeddings": pack_embeddings(songs),
        "tag_embeddings": pack_embeddings(tag_vectors),
        "embedding_scale": 10.0 ** -EMBEDDING_DECIMALS,
        "projections": {m: np.round(project(songs, method=m, seed=seed), 4).ravel().tolist() for m in methods},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, render_html(data))


def pack_embeddings(X: np.ndarray) -> str:
    """Base64 of ``X [n, D]`` (values in ``[-1, 1]``) rounded to 4 decimals, as little-endian int16 ``x * 1e4``.

    :func:`unpack_embeddings` (and the page's ``decode``) read it back.
    """
    ints = np.round(np.asarray(X, dtype=np.float64) * 10**EMBEDDING_DECIMALS).astype("<i2")
    return base64.b64encode(ints.tobytes()).decode("ascii")


def unpack_embeddings(text: str, dim: int) -> np.ndarray:
    """``float64 [n, dim]`` from :func:`pack_embeddings` (4 decimals, not re-normalised)."""
    ints = np.frombuffer(base64.b64decode(text), dtype="<i2")
    return ints.reshape(-1, dim).astype(np.float64) * 10.0 ** -EMBEDDING_DECIMALS


def read_viewer_data(path: str | Path) -> dict:
    """The data object embedded in a viewer page (for tests and scripts)."""
    text = Path(path).read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="viewer-data">')
    start = text.index(">", start) + 1
    return json.loads(text[start:text.index("</script>", start)])


def render_html(data: dict) -> str:
    """The page: ``assets/template.html`` with the CSS, the JS and ``data`` inlined."""
    assets = resources.files("tagretrieval.viewer") / "assets"
    template = (assets / "template.html").read_text(encoding="utf-8")
    # "</" would end the <script> element early; "<\/" is the same string to JSON
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    payload = payload.replace("<!--", "<\\u0021--")
    parts = {
        "__TITLE__": html.escape(data["title"]),
        "/*__CSS__*/": (assets / "viewer.css").read_text(encoding="utf-8"),
        "/*__JS__*/": (assets / "viewer.js").read_text(encoding="utf-8"),
        "__DATA__": payload,
    }
    for token in parts:
        if template.count(token) != 1:
            raise RuntimeError(f"viewer template must hold {token} exactly once")
    # one pass: text inserted for one token is never searched for another
    return re.sub("|".join(map(re.escape, parts)), lambda match: parts[match.group(0)], template)


def _check_inputs(*, track_embeddings, tracks, tag_embeddings, tags, categories, max_tracks) -> list[str]:
    missing = [c for c in REQUIRED_COLUMNS if c not in tracks.columns]
    if missing:
        raise ValueError(f"tracks is missing columns {missing} (needs {list(REQUIRED_COLUMNS)})")
    track_embeddings, tag_embeddings = np.asarray(track_embeddings), np.asarray(tag_embeddings)
    if track_embeddings.ndim != 2 or track_embeddings.shape[0] != len(tracks):
        raise ValueError(f"track_embeddings has shape {track_embeddings.shape}, expected [{len(tracks)}, D] "
                         "(one row per track)")
    if tag_embeddings.ndim != 2 or tag_embeddings.shape != (len(tags), track_embeddings.shape[1]):
        raise ValueError(f"tag_embeddings has shape {tag_embeddings.shape}, expected "
                         f"[{len(tags)}, {track_embeddings.shape[1]}] (one row per tag, same D as the tracks)")
    if len(categories) != len(tags):
        raise ValueError(f"{len(categories)} categories for {len(tags)} tags: need one category per tag")
    for what, values in (("track_id", tracks["track_id"].astype(str).tolist()), ("tag", list(tags))):
        seen, dupes = set(), []
        for v in values:
            (dupes.append(v) if v in seen else seen.add(v))
        if dupes:
            raise ValueError(f"duplicate {what}s: {sorted(set(dupes))[:20]}")
    if max_tracks < 1:
        raise ValueError(f"max_tracks must be >= 1, got {max_tracks}")
    return tracks["track_id"].astype(str).tolist()


def _text(column: pd.Series) -> list[str]:
    return ["" if pd.isna(v) else str(v) for v in column.tolist()]


def _audio_sources(tracks: pd.DataFrame, *, html_dir: Path, audio_base: str | Path | None, mode: str) -> list[str]:
    """The ``<audio src>`` of each track (URL-quoted, relative to the page's folder; "" for none), see ``audio``."""
    if mode == "none":
        return [""] * len(tracks)
    html_dir = html_dir.resolve()
    base = Path(audio_base).resolve() if audio_base is not None else html_dir
    sources, missing = [], []
    for row, (track_id, value) in enumerate(zip(_text(tracks["track_id"]), _text(tracks["audio_path"]))):
        if not value.strip():
            sources.append("")
            continue
        full = (base / value).resolve()  # an absolute value stays as it is
        if mode == "copy":
            if not full.is_file():
                missing.append(value)
                sources.append("")
                continue
            full = _copy_audio(full, html_dir / AUDIO_DIR / f"{row:06d}-{_file_name(track_id)}{full.suffix.lower()}")
        sources.append(quote(Path(os.path.relpath(full, html_dir)).as_posix()))
    if missing:
        warnings.warn(f"{len(missing)} audio file(s) not found, left out of the page: {missing[:5]}", stacklevel=3)
    return sources


def _file_name(track_id: str) -> str:
    """A track id usable in a file name (``a/b c`` -> ``a_b_c``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", track_id)[:100]


def _copy_audio(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as file:
        return atomic_write(target, lambda f: shutil.copyfileobj(file, f))


def _warn_unknown_tags(tag_lists: list[list[str]], tags: Sequence[str]) -> None:
    known = set(tags)
    unknown = sorted({t for tag_list in tag_lists for t in tag_list if t not in known})
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
        warnings.warn(f"track tags not in the tag list are shown on hover but not used for colours: {shown}",
                      stacklevel=3)


def _size_mb(n_tracks: int, dim: int) -> float:
    return n_tracks * dim * 8 / 3 / 1e6
