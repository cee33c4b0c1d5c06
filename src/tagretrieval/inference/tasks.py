"""``main.py`` modes of a trained model: ``retrieve`` (songs for queries), ``tag`` (tags for songs), ``export``;
``mode=tag pretrained=MTT_musicnn``: a musicnn network of the wheel tags with its own 50 tags, without training.

The only code of :mod:`tagretrieval.inference` that reads the Hydra config; see ``docs/usage/retrieval.md``.
"""

from __future__ import annotations

import difflib
import io
import logging
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich import box
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from tagretrieval.training.checkpoints import is_ours, module_from_checkpoint, read_checkpoint
from tagretrieval.data.prepared import SPLITS, PreparedDataset, normalise_split
from tagretrieval.runtime.files import atomic_write_json
from tagretrieval.inference.export import track_table, write_export
from tagretrieval.inference.queries import encoder_name
from tagretrieval.inference.search import Searcher
from tagretrieval.models.reference import model_from_reference
from tagretrieval.audio import AUDIO_EXTENSIONS, AudioDecodeError
from tagretrieval.pretrained.embedder import MusicnnEmbedder
from tagretrieval.runtime.errors import ConfigError, DataError
from tagretrieval.tasks import Prepared, prepare_data, tag_vectors

log = logging.getLogger(__name__)


def _as_list(value, key: str) -> list[str]:
    """``query=piano`` or ``'query=[piano,"sad guitar"]'`` -> ``["piano", "sad guitar"]``."""
    if value is None:
        raise ConfigError(f"give {key}=VALUE or '{key}=[VALUE,VALUE]'")
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if not values:
        raise ConfigError(f"{key} is an empty list")
    return [str(v) for v in values]


def _read_checkpoint(cfg: DictConfig) -> dict:
    if not cfg.ckpt_path:
        raise ConfigError(f"mode={cfg.mode} needs ckpt_path=PATH (a checkpoint of ours or a reference one)")
    return read_checkpoint(cfg.ckpt_path, trusted=cfg.trust_pickles)


def build_searcher(cfg: DictConfig, checkpoint: dict, dataset: PreparedDataset | None) -> Searcher:
    """The searcher of ``checkpoint`` (read from ``cfg.ckpt_path``); a reference checkpoint takes its tags from
    ``dataset`` and ``cfg.tag_encoder`` (as ``mode=test`` does), so it needs one."""
    if is_ours(checkpoint):
        return Searcher.from_module(module_from_checkpoint(checkpoint), word_vectors=cfg.inference.word_vectors,
                                    device=cfg.inference.device, trusted=cfg.trust_pickles,
                                    local_encoder=OmegaConf.to_container(cfg.tag_encoder, resolve=True))
    if dataset is None:
        raise ConfigError(f"{cfg.ckpt_path} is a reference checkpoint (no tag vocabulary inside): its tags come from "
                         "the configured dataset and tag_encoder")
    dataset, vectors, _ = tag_vectors(cfg, dataset)
    encoder = instantiate(cfg.tag_encoder)
    spec = OmegaConf.to_container(cfg.tag_encoder, resolve=True)
    return Searcher(model=model_from_reference(checkpoint["state_dict"]), tags=dataset.tags,
                    categories=dataset.categories, tag_vectors=vectors,
                    encoder=encoder if callable(getattr(encoder, "lookup", None)) else None,
                    encoder_label=encoder_name(spec, encoder), device=cfg.inference.device)


def split_rows(dataset: PreparedDataset, split: str) -> np.ndarray:
    """Row indices of ``split`` (``all`` or one of the dataset splits, aliases like ``val`` accepted)."""
    if str(split).lower() == "all":
        return np.arange(len(dataset.tracks))
    try:
        return dataset.split_indices(normalise_split(split))
    except ValueError:
        raise ConfigError(f"inference.split={split!r}: expected all or one of {SPLITS}") from None


def _embed_split(cfg: DictConfig, searcher: Searcher, prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``cfg.inference.split`` and their song embeddings ``[n_rows, D]``."""
    rows = split_rows(prepared.dataset, cfg.inference.split)
    if len(rows) == 0:
        raise DataError(f"dataset '{prepared.dataset.name}' has no track in split {cfg.inference.split!r}")
    embeddings = searcher.embed_dataset(prepared.dataset, frontend=prepared.frontend, rows=rows,
                                        batch_size=cfg.inference.batch_size, progress=cfg.progress)
    return rows, embeddings


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title, box=box.ASCII2)
    for name in columns:
        table.add_column(name, justify="right" if name in ("rank", "score") else "left")
    for row in rows:
        table.add_row(*row)
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None, force_terminal=False).print(table)
    print(buffer.getvalue(), end="")


def retrieve(cfg: DictConfig, output_dir: Path) -> dict[str, list[dict]]:
    """Rank the tracks of ``cfg.inference.split`` for every ``cfg.query``; print them, write ``retrieval.json``."""
    queries = _as_list(cfg.query, "query")
    checkpoint = _read_checkpoint(cfg)
    prepared = prepare_data(cfg, output_dir)
    searcher = build_searcher(cfg, checkpoint, prepared.dataset)
    query_embeddings = searcher.embed_queries(queries)          # unknown queries fail before the songs are embedded
    rows, songs = _embed_split(cfg, searcher, prepared)
    index = instantiate(cfg.index)(songs)
    scores, hits = index.search(query_embeddings, cfg.inference.top_k)
    tracks = track_table(prepared.dataset)
    results: dict[str, list[dict]] = {}
    for query, query_scores, query_hits in zip(queries, scores, hits):
        found = [(float(s), int(rows[h])) for s, h in zip(query_scores, query_hits) if h >= 0]
        results[query] = [{"track_id": tracks.at[r, "track_id"], "score": s} for s, r in found]
        _print_table(f"{query!r}: top {len(found)} of {len(rows)} tracks ({cfg.inference.split})",
                     ["rank", "score", "track_id", "artist", "tags"],
                     [[str(i + 1), f"{s:.4f}", tracks.at[r, "track_id"], tracks.at[r, "artist"],
                       tracks.at[r, "tags"].replace(";", ", ")] for i, (s, r) in enumerate(found)])
    output_dir.mkdir(parents=True, exist_ok=True)
    path = atomic_write_json(output_dir / "retrieval.json", results)
    print(f"retrieval written to {path}")
    return results


def tag(cfg: DictConfig, output_dir: Path) -> dict[str, list[dict]]:
    """The top tags of every ``cfg.tracks`` entry (a track id of the dataset, or an audio file); ``tags.json``.

    An entry that is an existing file is an audio file, an existing folder stands for the audio files in it (and
    below); any other entry is a track id of ``cfg.data``. The dataset is only prepared when an entry is a track id
    or the checkpoint is a reference one. With ``cfg.pretrained``: :func:`tag_pretrained`.
    """
    if cfg.get("pretrained"):
        return tag_pretrained(cfg, output_dir)
    entries = expand_folders(_as_list(cfg.tracks, "tracks"))
    checkpoint = _read_checkpoint(cfg)
    files = [e for e in entries if Path(e).is_file()]
    ids = [e for e in entries if e not in set(files)]
    prepared = prepare_data(cfg, output_dir) if ids or not is_ours(checkpoint) else None
    searcher = build_searcher(cfg, checkpoint, None if prepared is None else prepared.dataset)
    embeddings = {}
    if ids:
        songs = searcher.embed_dataset(prepared.dataset, frontend=prepared.frontend, rows=_rows_of(prepared.dataset, ids),
                                       batch_size=cfg.inference.batch_size)
        embeddings.update(zip(ids, songs))
    if files:
        frontend = prepared.frontend if prepared is not None else instantiate(cfg.audio)
        embeddings.update(zip(files, searcher.embed_audio_files(files, frontend=frontend)))
    scores, columns = searcher.tag(np.stack([embeddings[e] for e in entries]), k=cfg.inference.top_k)
    results = {}
    for entry, entry_scores, entry_columns in zip(entries, scores, columns):
        results[entry] = [{"tag": searcher.tags[j], "score": float(s)} for s, j in zip(entry_scores, entry_columns)]
        _print_table(f"{entry}: top {len(entry_columns)} of {len(searcher.tags)} tags", ["rank", "score", "tag",
                     "category"], [[str(i + 1), f"{s:.4f}", searcher.tags[j], searcher.categories[j]]
                                   for i, (s, j) in enumerate(zip(entry_scores, entry_columns))])
    return _write_tags(output_dir, results)


def _rows_of(dataset: PreparedDataset, ids: list[str]) -> list[int]:
    """The rows of track ``ids`` of ``dataset``; an unknown id is a ConfigError naming close matches."""
    row_of = {t: i for i, t in enumerate(dataset.track_ids)}
    unknown = [t for t in ids if t not in row_of]
    if unknown:
        hints = {t: difflib.get_close_matches(t, list(row_of), n=3) for t in unknown}
        raise ConfigError(
            f"tracks: neither existing files nor track ids of dataset '{dataset.name}': "
            + "; ".join(f"{t!r}" + (f" (did you mean {', '.join(h)}?)" if h else "") for t, h in hints.items()))
    return [row_of[t] for t in ids]


def _write_tags(output_dir: Path, results: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """``results`` written to ``output_dir/tags.json`` (and returned)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = atomic_write_json(output_dir / "tags.json", results)
    print(f"tags written to {path}")
    return results


def expand_folders(entries: list[str]) -> list[str]:
    """``entries`` with every existing folder replaced by the audio files in it and below (sorted); a folder
    without any is a ConfigError."""
    out = []
    for entry in entries:
        if not Path(entry).is_dir():
            out.append(entry)
            continue
        found = sorted(str(p) for p in Path(entry).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not found:
            raise ConfigError(f"tracks: folder {entry} holds no audio file ({', '.join(AUDIO_EXTENSIONS)})")
        out.extend(found)
    return out


def _dataset_entries(cfg: DictConfig, prepared: Prepared, ids: list[str] | None) -> dict[str, str]:
    """Track id -> audio path of the ``ids`` (None: the tracks of ``cfg.inference.split``) of the dataset."""
    dataset = prepared.dataset
    if ids is None:
        rows = split_rows(dataset, cfg.inference.split)
        if len(rows) == 0:
            raise DataError(f"dataset '{dataset.name}' has no track in split {cfg.inference.split!r}")
    else:
        rows = _rows_of(dataset, ids)
    return {dataset.track_ids[r]: str(dataset.tracks.at[r, "audio_path"]) for r in rows}


def tag_pretrained(cfg: DictConfig, output_dir: Path) -> dict[str, list[dict]]:
    """The top ``cfg.inference.top_k`` of the 50 tags of the musicnn network ``cfg.pretrained`` for every song, from its
    taggram averaged over the song's 3-s patches (audio resampled to 16 kHz; :mod:`tagretrieval.pretrained.embedder`);
    printed as one table and written to ``tags.json`` (``{song: [{"tag", "score"}, ...]}``, best first).

    The songs: ``cfg.tracks`` (audio files, folders of them, track ids of ``cfg.data``) or, without ``tracks``, the
    tracks of ``cfg.inference.split`` of ``cfg.data``. A song whose audio cannot be decoded is left out, with a warning.
    """
    embedder = MusicnnEmbedder(model=str(cfg.pretrained), layer="taggram", batch_size=cfg.inference.batch_size,
                               device=cfg.inference.device)
    entries = None if cfg.tracks is None else expand_folders(_as_list(cfg.tracks, "tracks"))
    audio = {e: e for e in entries or [] if Path(e).is_file()}
    ids = None if entries is None else [e for e in entries if e not in audio]
    if ids is None or ids:
        audio.update(_dataset_entries(cfg, prepare_data(cfg, output_dir), ids))
    k = min(int(cfg.inference.top_k), len(embedder.tags))
    results, failed = {}, {}
    for entry, path in tqdm(audio.items(), unit="song", desc=f"{embedder.model} tags", disable=not cfg.progress):
        try:
            taggram = embedder.taggram(embedder.load(path)) if path else None
        except AudioDecodeError as error:
            taggram, failed[entry] = None, str(error)
        if taggram is None:
            failed.setdefault(entry, "no audio_path in tracks.csv")
            continue
        best = np.argsort(-taggram, kind="stable")[:k]
        results[entry] = [{"tag": embedder.tags[j], "score": float(taggram[j])} for j in best]
    if failed:
        log.warning("%d song(s) not tagged: %s", len(failed), "; ".join(f"{e}: {r}" for e, r in list(failed.items())[:5]))
    if not results:
        raise DataError(f"mode=tag pretrained={embedder.model}: no song could be tagged ({len(failed)} failed)")
    _print_table(f"{embedder.model}: top {k} of its {len(embedder.tags)} tags (mean taggram over 3-s patches)",
                 ["song", "tags"], [[entry, ", ".join(f"{t['tag']} {t['score']:.2f}" for t in tags)]
                                    for entry, tags in results.items()])
    return _write_tags(output_dir, results)


def export(cfg: DictConfig, output_dir: Path) -> dict[str, Path]:
    """Write ``DIR/export/`` (layout in :mod:`tagretrieval.inference.export`) and, with it, ``viewer.html``."""
    checkpoint = _read_checkpoint(cfg)
    prepared = prepare_data(cfg, output_dir)
    searcher = build_searcher(cfg, checkpoint, prepared.dataset)
    rows, songs = _embed_split(cfg, searcher, prepared)
    tracks = track_table(prepared.dataset).iloc[rows].reset_index(drop=True)
    tag_embeddings = searcher.tag_embeddings()
    folder = output_dir / "export"
    info = {"checkpoint": str(Path(cfg.ckpt_path).resolve()), "dataset": prepared.dataset.name,
            "prepared_dir": str(prepared.prepared_dir.resolve()), "split": str(cfg.inference.split)}
    paths = write_export(folder, track_embeddings=songs, tracks=tracks, tag_embeddings=tag_embeddings,
                         tags=searcher.tags, categories=searcher.categories, info=info)
    if cfg.inference.viewer:
        from tagretrieval.viewer import write_viewer

        paths["viewer.html"] = write_viewer(folder / "viewer.html", track_embeddings=songs, tracks=tracks,
                                            tag_embeddings=tag_embeddings, tags=searcher.tags,
                                            categories=searcher.categories, audio=cfg.inference.viewer_audio)
    print(f"exported {len(tracks)} tracks x {searcher.embedding_dim} dims and {len(searcher.tags)} tags to {folder}")
    return paths
