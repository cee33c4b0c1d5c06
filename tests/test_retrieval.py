"""Using a trained model: `mode=retrieve` (songs for queries, zero-shot too), `mode=tag`, the indexes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate

from tagretrieval.evaluation import metric_keys
from tagretrieval.audio import MelFrontend
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.runtime.errors import ConfigError, DataError
from tagretrieval.inference import (
    ExactIndex,
    FaissFlatIndex,
    FaissHNSWIndex,
    FaissIVFIndex,
    Searcher,
    UnknownQueryError,
)

from conftest import CONF, compose_config, read_metrics, run_task

requires_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="needs faiss (faiss-cpu)")


def best_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.ckpt"


def prepared(synthetic_root: Path) -> PreparedDataset:
    return PreparedDataset.load(synthetic_root / "prepared")


@pytest.fixture(scope="module")
def word2vec_file(tmp_path_factory, synthetic_root) -> Path:
    """A tiny word2vec text file trained with gensim on the synthetic tag lists, plus the unseen word
    ``violin``, given exactly the vector of the training tag ``strings``."""
    from gensim.models import Word2Vec

    sentences = [t.split(";") for t in pd.read_csv(synthetic_root / "tags.csv")["tags"]]
    model = Word2Vec(sentences=sentences, vector_size=16, window=10, min_count=1, sg=1, epochs=5, seed=0, workers=1)
    model.wv.add_vector("violin", model.wv["strings"])
    path = tmp_path_factory.mktemp("w2v") / "tiny_w2v.txt"
    model.wv.save_word2vec_format(str(path))
    return path


@pytest.fixture(scope="module")
def acoustic_w2v_run(tmp_path_factory, smoke_overrides, word2vec_file) -> Path:
    """A smoke run of an audio-only model whose tag vectors come from a word-vector file (zero-shot capable)."""
    run_dir = tmp_path_factory.mktemp("acoustic_w2v")
    run_task([*smoke_overrides, "model=acoustic", "tag_encoder=word2vec", f"tag_encoder.path={word2vec_file}",
              "tag_encoder.dim=16", "trainer.max_epochs=1"], run_dir)
    return run_dir


def retrieve(overrides, run_dir: Path, out: Path, *, queries: str) -> dict:
    run_task([*overrides, "mode=retrieve", f"ckpt_path={best_checkpoint(run_dir)}", f"query={queries}"], out)
    return json.loads((out / "retrieval.json").read_text())


# -- mode=retrieve ------------------------------------------------------------------------------------------
def test_retrieve_command_prints_and_writes_top_k_tracks_for_several_queries(tmp_path, smoke_overrides, trained_run,
                                                                              synthetic_root, capsys):
    # in-process: the same override grammar as `python main.py ... 'query=[piano,"sad piano"]'`, without the
    # start-up of a new interpreter (main.py itself is run by test_end_to_end)
    run_task([*smoke_overrides, "mode=retrieve", f"ckpt_path={best_checkpoint(trained_run)}",
              'query=[piano,"sad piano"]', "inference.top_k=5"], tmp_path)
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "retrieval.json").read_text())
    assert list(results) == ["piano", "sad piano"]
    ids = set(prepared(synthetic_root).track_ids)
    for hits in results.values():
        assert len(hits) == 5 and all(set(hit) == {"track_id", "score"} for hit in hits)
        assert {hit["track_id"] for hit in hits} <= ids and len({hit["track_id"] for hit in hits}) == 5
        scores = [hit["score"] for hit in hits]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert f"'sad piano': top 5 of {len(ids)} tracks" in printed and results["piano"][0]["track_id"] in printed


def test_top_k_is_the_retrieval_depth_unless_inference_top_k_says_otherwise(tmp_path, smoke_overrides, trained_run):
    """`top_k` is the k of P@k and of retrieval alike (a user's `top_k=4` is not ignored); `inference.top_k` sets
    the retrieval depth alone."""
    assert len(retrieve([*smoke_overrides, "top_k=4"], trained_run, tmp_path / "b", queries="piano")["piano"]) == 4
    deeper = retrieve([*smoke_overrides, "top_k=4", "inference.top_k=6"], trained_run, tmp_path / "c", queries="piano")
    assert len(deeper["piano"]) == 6


def test_retrieving_a_training_tag_over_test_reproduces_the_evaluated_precision_at_10(tmp_path, smoke_overrides,
                                                                                      trained_run, synthetic_root):
    # the ranking printed to users is the ranking the evaluation measured: P@10 of every tag matches metrics/test.json
    metrics = read_metrics(trained_run)["per_tag"]
    tags = sorted(metrics)
    results = retrieve([*smoke_overrides, "inference.split=test"], trained_run, tmp_path,
                       queries="[" + ",".join(tags) + "]")
    dataset = prepared(synthetic_root)
    row_of = {t: i for i, t in enumerate(dataset.track_ids)}
    test_rows = set(dataset.split_indices("test").tolist())
    for tag in tags:
        rows = [row_of[hit["track_id"]] for hit in results[tag]]
        assert len(rows) == 10 and set(rows) <= test_rows
        precision = dataset.labels[rows, dataset.tags.index(tag)].mean()
        assert precision == pytest.approx(metrics[tag][metric_keys.p_at(10)]), tag


def test_a_multi_word_query_is_the_mean_of_its_tags_vectors(trained_run, synthetic_root):
    searcher = Searcher.from_checkpoint(best_checkpoint(trained_run))
    vectors = searcher.vocabulary.tag_vectors
    sad, piano = searcher.tags.index("sad"), searcher.tags.index("piano")
    np.testing.assert_allclose(searcher.query_vector("Sad  piano"), (vectors[sad] + vectors[piano]) / 2, rtol=1e-6)
    expected = searcher.model.embed_tags(torch.from_numpy((vectors[sad] + vectors[piano])[None] / 2)).detach()
    np.testing.assert_allclose(searcher.embed_queries(["sad piano"]), torch.nn.functional.normalize(expected).numpy(),
                               atol=1e-6)


def test_an_unknown_query_is_a_clear_error_listing_near_misses(tmp_path, smoke_overrides, trained_run):
    searcher = Searcher.from_checkpoint(best_checkpoint(trained_run))
    with pytest.raises(UnknownQueryError, match=r"'pianno'.*did you mean: piano.*Cooccurrence.*training tags"):
        searcher.embed_queries(["sad pianno"])
    with pytest.raises(ValueError, match="give query=VALUE"):
        run_task([*smoke_overrides, "mode=retrieve", f"ckpt_path={best_checkpoint(trained_run)}"], tmp_path)


def test_python_api_as_in_the_docs(trained_run, acoustic_w2v_run, synthetic_root, tmp_path):
    # docs/usage/retrieval.md, "Python API"
    searcher = Searcher.from_checkpoint(best_checkpoint(trained_run))
    dataset = PreparedDataset.load(synthetic_root / "prepared")
    test_rows = dataset.split_indices("test")
    songs = searcher.embed_dataset(dataset, frontend=MelFrontend(), rows=test_rows)
    index = ExactIndex(songs)
    scores, rows = searcher.search(["piano", "sad piano"], index, k=10)
    assert songs.shape == (len(test_rows), searcher.embedding_dim) and scores.shape == rows.shape == (2, 10)
    assert {dataset.track_ids[test_rows[r]] for r in rows[0]} <= set(dataset.tracks.loc[test_rows, "track_id"])
    assert np.all(np.diff(scores, axis=1) <= 0)
    scores, columns = searcher.tag(songs[:3], k=5)
    assert columns.shape == (3, 5) and all(searcher.tags[j] in dataset.tags for j in columns[0])

    audio_only = Searcher.from_checkpoint(best_checkpoint(acoustic_w2v_run))
    mine = audio_only.embed_audio_files([dataset.tracks.loc[0, "audio_path"]], frontend=MelFrontend())
    np.testing.assert_allclose(mine, audio_only.embed_dataset(dataset, rows=[0], frontend=MelFrontend()), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-6)


def test_zero_shot_query_with_word_vectors(tmp_path, smoke_overrides, acoustic_w2v_run):
    # "violin" is no training tag; the word-vector file gives it exactly the vector of "strings"
    # the checkpoint records its tag encoder: no model or tag_encoder overrides are needed to query it
    results = retrieve([*smoke_overrides, "inference.split=test"], acoustic_w2v_run, tmp_path,
                       queries='[violin,strings,"sad violin","sad strings"]')
    def same(a: str, b: str) -> bool:
        ids_a, ids_b = ([hit["track_id"] for hit in results[q]] for q in (a, b))
        scores_a, scores_b = ([hit["score"] for hit in results[q]] for q in (a, b))
        return ids_a == ids_b and np.allclose(scores_a, scores_b, atol=1e-6)

    assert len(results["violin"]) == 10 and same("violin", "strings") and same("sad violin", "sad strings")
    assert not same("violin", "sad violin")

    # the word-vector file moved: training tags still work, other words say where to point
    moved = Searcher.from_checkpoint(best_checkpoint(acoustic_w2v_run), word_vectors=tmp_path / "gone.txt")
    assert moved.embed_queries(["strings"]).shape == (1, moved.embedding_dim)
    with pytest.raises(UnknownQueryError, match="word_vectors"):
        moved.embed_queries(["violin"])
    with pytest.raises(UnknownQueryError, match=r"'xylophone'.*word vectors \(Word2VecFile"):
        Searcher.from_checkpoint(best_checkpoint(acoustic_w2v_run)).embed_queries(["xylophone"])
    # word vectors of another size (another file than the training one): a user's mistake, said as one
    other = tmp_path / "other.txt"
    other.write_text("1 3\nviolin 0.1 0.2 0.3\n")
    with pytest.raises(DataError, match=r"other.txt holds 3-d vectors, tag_encoder.dim is 16"):
        Searcher.from_checkpoint(best_checkpoint(acoustic_w2v_run), word_vectors=other).embed_queries(["violin"])


def test_word_vectors_for_a_checkpoint_whose_tags_are_not_word_vectors_are_refused(trained_run, tmp_path):
    with pytest.raises(ConfigError, match="reads no word-vector file"):
        Searcher.from_checkpoint(best_checkpoint(trained_run), word_vectors=tmp_path / "vectors.txt")


@requires_faiss
def test_retrieve_with_faiss_exact_index_gives_the_same_results(tmp_path, smoke_overrides, trained_run):
    overrides = [*smoke_overrides, "inference.split=valid"]
    exact = retrieve(overrides, trained_run, tmp_path / "exact", queries="[piano,brazil]")
    flat = retrieve([*overrides, "index=faiss_exact"], trained_run, tmp_path / "faiss", queries="[piano,brazil]")
    assert [h["track_id"] for h in exact["piano"]] == [h["track_id"] for h in flat["piano"]]
    assert [h["track_id"] for h in exact["brazil"]] == [h["track_id"] for h in flat["brazil"]]
    np.testing.assert_allclose([h["score"] for h in exact["piano"]], [h["score"] for h in flat["piano"]], atol=1e-5)


# -- mode=tag -----------------------------------------------------------------------------------------------
def test_tag_mode_on_a_dataset_track_and_the_same_song_as_an_outside_wav(tmp_path, smoke_overrides, acoustic_w2v_run,
                                                                         synthetic_root):
    dataset = prepared(synthetic_root)
    track_id, flac = dataset.tracks.loc[5, ["track_id", "audio_path"]]
    y, sr = sf.read(flac, dtype="int16")
    wav = tmp_path / "elsewhere" / "my song.wav"
    wav.parent.mkdir()
    sf.write(wav, y, sr, subtype="PCM_16")
    run_task([*smoke_overrides, "mode=tag", f"ckpt_path={best_checkpoint(acoustic_w2v_run)}",
              f"tracks=[{track_id},'{wav}']", "inference.top_k=3"], tmp_path / "run")
    results = json.loads((tmp_path / "run" / "tags.json").read_text())
    assert list(results) == [track_id, str(wav)]
    assert [r["tag"] for r in results[track_id]] == [r["tag"] for r in results[str(wav)]]
    assert len(results[track_id]) == 3 and {r["tag"] for r in results[track_id]} <= set(dataset.tags)
    np.testing.assert_allclose([r["score"] for r in results[track_id]], [r["score"] for r in results[str(wav)]],
                               atol=1e-5)
    # audio files alone need no dataset: a data folder that does not exist is never read
    run_task(["data=folder", f"data.root={tmp_path / 'no_data'}", "mode=tag",
              f"ckpt_path={best_checkpoint(acoustic_w2v_run)}", f"tracks=['{wav}']", "inference.top_k=3"],
             tmp_path / "alone")
    alone = json.loads((tmp_path / "alone" / "tags.json").read_text())[str(wav)]
    assert [r["tag"] for r in alone] == [r["tag"] for r in results[str(wav)]]
    np.testing.assert_allclose([r["score"] for r in alone], [r["score"] for r in results[str(wav)]], atol=1e-5)


def test_tag_mode_ranks_tags_by_cosine_and_refuses_what_it_cannot_embed(tmp_path, smoke_overrides, trained_run,
                                                                        synthetic_root):
    dataset = prepared(synthetic_root)
    track_id = dataset.track_ids[0]
    run_task([*smoke_overrides, "mode=tag", f"ckpt_path={best_checkpoint(trained_run)}", f"tracks={track_id}"],
             tmp_path / "ok")
    found = json.loads((tmp_path / "ok" / "tags.json").read_text())[track_id]
    searcher = Searcher.from_checkpoint(best_checkpoint(trained_run))
    song = searcher.embed_dataset(dataset, rows=[0], frontend=MelFrontend())
    oracle = searcher.tag_embeddings() @ song[0]          # naive full ranking over every tag
    assert [r["tag"] for r in found] == [searcher.tags[j] for j in np.argsort(-oracle)[:10]]

    with pytest.raises(ValueError, match=r"neither existing files nor track ids.*'track00001x' \(did you mean track"):
        run_task([*smoke_overrides, "mode=tag", f"ckpt_path={best_checkpoint(trained_run)}", "tracks=track00001x"],
                 tmp_path / "typo")
    # the hybrid model needs listening data, which a file outside the dataset does not have
    with pytest.raises(ValueError, match="needs a CF vector.*model=acoustic"):
        run_task([*smoke_overrides, "mode=tag", f"ckpt_path={best_checkpoint(trained_run)}",
                  f"tracks=[{dataset.tracks.loc[0, 'audio_path']}]"], tmp_path / "file")


def test_tag_mode_with_a_reference_checkpoint_takes_tags_from_the_dataset(tmp_path, smoke_overrides, synthetic_root):
    from test_reference_import import RefAudioModel, randomize, save_lightning_checkpoint

    save_lightning_checkpoint(randomize(RefAudioModel(), seed=0), tmp_path / "ref.ckpt")
    run_task([*smoke_overrides, "mode=tag", f"ckpt_path={tmp_path / 'ref.ckpt'}", "tracks=track00000"],
             tmp_path / "run")
    found = json.loads((tmp_path / "run" / "tags.json").read_text())["track00000"]
    assert len(found) == 10 and {r["tag"] for r in found} <= set(prepared(synthetic_root).tags)


# -- indexes ------------------------------------------------------------------------------------------------
def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, dim))
    return (centers[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


def naive_top_k(queries: np.ndarray, songs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = songs / np.linalg.norm(songs, axis=1, keepdims=True)
    scores = q.astype(np.float64) @ s.astype(np.float64).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


@pytest.mark.parametrize("index_class", [ExactIndex, pytest.param(FaissFlatIndex, marks=requires_faiss)])
def test_exact_indexes_match_a_naive_full_ranking(index_class):
    songs, queries = clustered(503, 7, seed=0), clustered(11, 7, seed=1) * 3.0   # any scale: cosine
    expected_scores, expected_rows = naive_top_k(queries, songs, 10)
    scores, rows = index_class(songs).search(queries, 10)
    assert scores.shape == rows.shape == (11, 10) and scores.dtype == np.float32 and rows.dtype == np.int64
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    scores, rows = index_class(songs[:4]).search(queries, 10)              # k larger than the collection
    assert rows.shape == (11, 4) and sorted(rows[0]) == [0, 1, 2, 3]


@requires_faiss
def test_approximate_indexes_find_most_true_neighbours():
    songs, queries = clustered(2000, 16, seed=2), clustered(50, 16, seed=3)
    _, truth = naive_top_k(queries, songs, 10)
    for index in (FaissIVFIndex(songs, n_probe=8), FaissHNSWIndex(songs)):
        _, rows = index.search(queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth)])
        assert recall >= 0.9, type(index).__name__
    _, rows = FaissIVFIndex(songs, n_lists=20, n_probe=20).search(queries, 10)   # probing every list is exact
    np.testing.assert_array_equal(rows, truth)


@pytest.mark.parametrize("name", [pytest.param(p.stem, marks=requires_faiss if "faiss" in p.stem else ())
                                  for p in sorted((CONF / "index").glob("*.yaml"))])
def test_every_index_config_builds_and_searches(tmp_path, name):
    cfg = compose_config([f"index={name}"], tmp_path)
    songs = clustered(300, 8, seed=4)
    scores, rows = instantiate(cfg.index)(songs).search(songs[:3], 5)
    assert rows.shape == (3, 5) and list(rows[:, 0]) == [0, 1, 2]   # a song is its own nearest neighbour
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_a_faiss_index_without_faiss_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)   # `import faiss` now raises ImportError
    with pytest.raises(ImportError, match="pip install faiss-cpu.*index=exact"):
        FaissFlatIndex(clustered(10, 4, seed=5))
