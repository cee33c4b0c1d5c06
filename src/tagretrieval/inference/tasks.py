"""``main.py`` modes of a trained model: ``retrieve`` (songs for queries), ``tag`` (tags for songs), ``export``.

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

from tagretrieval.training.checkpoints import is_ours, module_from_checkpoint, read_checkpoint
from tagretrieval.data.prepared import SPLITS, PreparedDataset, normalise_split
from tagretrieval.runtime.files import atomic_write_json
from tagretrieval.inference.export import track_table, write_export
from tagretrieval.inference.queries import encoder_name
from tagretrieval.inference.search import Searcher
from tagretrieval.models.reference import model_from_reference
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

    An entry that is an existing file is an audio file; any other entry is a track id of ``cfg.data``. The
    dataset is only prepared when an entry is a track id or the checkpoint is a reference one.
    """
    entries = _as_list(cfg.tracks, "tracks")
    checkpoint = _read_checkpoint(cfg)
    files = [e for e in entries if Path(e).is_file()]
    ids = [e for e in entries if e not in set(files)]
    prepared = prepare_data(cfg, output_dir) if ids or not is_ours(checkpoint) else None
    searcher = build_searcher(cfg, checkpoint, None if prepared is None else prepared.dataset)
    embeddings = {}
    if ids:
        row_of = {t: i for i, t in enumerate(prepared.dataset.track_ids)}
        unknown = [t for t in ids if t not in row_of]
        if unknown:
            hints = {t: difflib.get_close_matches(t, list(row_of), n=3) for t in unknown}
            raise ConfigError(
                f"tracks: neither existing files nor track ids of dataset '{prepared.dataset.name}': "
                + "; ".join(f"{t!r}" + (f" (did you mean {', '.join(h)}?)" if h else "") for t, h in hints.items()))
        songs = searcher.embed_dataset(prepared.dataset, frontend=prepared.frontend, rows=[row_of[t] for t in ids],
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
    output_dir.mkdir(parents=True, exist_ok=True)
    path = atomic_write_json(output_dir / "tags.json", results)
    print(f"tags written to {path}")
    return results


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
