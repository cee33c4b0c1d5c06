"""`mode=export`: the embedding space as plain files (and the viewer page) that agree with each other and the model."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from tagretrieval.audio import MelFrontend
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.inference import Searcher
from tagretrieval.viewer import read_viewer_data

from conftest import run_task


@pytest.fixture(scope="module")
def exported(tmp_path_factory, smoke_overrides, trained_run):
    out = tmp_path_factory.mktemp("export_run")
    run_task([*smoke_overrides, "mode=export", f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}"], out)
    return out / "export"


def test_export_files_have_consistent_shapes_ids_and_unit_rows(exported, trained_run, synthetic_root):
    dataset = PreparedDataset.load(synthetic_root / "prepared")
    dim = Searcher.from_checkpoint(trained_run / "checkpoints" / "best.ckpt").embedding_dim
    songs = np.load(exported / "track_embeddings.npy")
    tag_embeddings = np.load(exported / "tag_embeddings.npy")
    tracks = pd.read_csv(exported / "tracks.csv", dtype=str, keep_default_na=False)
    tags = pd.read_csv(exported / "tags.csv", dtype=str, keep_default_na=False)
    info = json.loads((exported / "export.json").read_text())

    assert songs.dtype == tag_embeddings.dtype == np.float32
    assert songs.shape == (len(dataset.tracks), dim) and tag_embeddings.shape == (len(dataset.tags), dim)
    np.testing.assert_allclose(np.linalg.norm(songs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(tag_embeddings, axis=1), 1.0, atol=1e-5)
    assert list(tracks.columns) == ["track_id", "artist", "tags", "split", "audio_path"]
    assert tracks["track_id"].tolist() == dataset.track_ids                   # row i of the table = embedding row i
    assert tracks["split"].tolist() == dataset.tracks["split"].tolist()
    first = set(tracks.loc[0, "tags"].split(";"))
    assert first == {t for t, on in zip(dataset.tags, dataset.labels[0]) if on}
    assert tags.to_dict("list") == {"tag": dataset.tags, "category": dataset.categories}
    pd.testing.assert_frame_equal(pd.read_parquet(exported / "tracks.parquet"), tracks)
    assert info["normalized"] is True and (info["n_tracks"], info["n_tags"], info["embedding_dim"]) == (
        len(dataset.tracks), len(dataset.tags), dim)
    # the viewer plays the dataset's audio through paths relative to the export folder: no local absolute path
    sources = read_viewer_data(exported / "viewer.html")["tracks"]["audio"]
    assert len(sources) == len(dataset.tracks) and not any(s.startswith(("file:", "/")) for s in sources)
    assert all((exported / unquote(source)).resolve() == Path(audio).resolve()
               for source, audio in zip(sources, dataset.tracks["audio_path"]))


def test_exported_embeddings_are_the_models_embeddings(exported, trained_run, synthetic_root):
    searcher = Searcher.from_checkpoint(trained_run / "checkpoints" / "best.ckpt")
    dataset = PreparedDataset.load(synthetic_root / "prepared")
    rows = [0, 7, len(dataset.tracks) - 1]
    np.testing.assert_allclose(np.load(exported / "track_embeddings.npy")[rows],
                               searcher.embed_dataset(dataset, rows=rows, frontend=MelFrontend()), atol=1e-5)
    np.testing.assert_allclose(np.load(exported / "tag_embeddings.npy"), searcher.tag_embeddings(), atol=1e-6)


def test_export_of_one_split(tmp_path, smoke_overrides, trained_run, synthetic_root):
    run_task([*smoke_overrides, "mode=export", f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}",
              "inference.split=valid", "inference.viewer=false"], tmp_path)
    tracks = pd.read_csv(tmp_path / "export" / "tracks.csv", dtype=str, keep_default_na=False)
    dataset = PreparedDataset.load(synthetic_root / "prepared")
    assert tracks["track_id"].tolist() == [dataset.track_ids[i] for i in dataset.split_indices("valid")]
    assert np.load(tmp_path / "export" / "track_embeddings.npy").shape[0] == len(tracks) > 0
    assert not (tmp_path / "export" / "viewer.html").exists()


def test_export_can_copy_the_audio_for_a_folder_to_share(tmp_path, smoke_overrides, trained_run, synthetic_root):
    run_task([*smoke_overrides, "mode=export", f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}",
              "inference.split=test", "inference.viewer_audio=copy"], tmp_path)
    sources = read_viewer_data(tmp_path / "export" / "viewer.html")["tracks"]["audio"]
    n_test = len(PreparedDataset.load(synthetic_root / "prepared").split_indices("test"))
    assert len(sources) == n_test and all(source.startswith("audio/") for source in sources)
    assert len(list((tmp_path / "export" / "audio").iterdir())) == n_test
