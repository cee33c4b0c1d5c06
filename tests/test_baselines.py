"""Baselines (docs/usage/baselines.md): every documented command on the tiny synthetic data, and the pieces
against analytic answers or naive references."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from tagretrieval.evaluation import metric_keys
from tagretrieval.audio import load_audio
from tagretrieval.baselines.analysis import (
    components_for,
    explained_variance,
    jaccard_index,
    knn_majority_vote,
)
from tagretrieval.baselines.context import BaselineContext
from tagretrieval.data.feature_cache import (
    FeatureCacheMismatchError,
    handcrafted_features,
)
from tagretrieval.audio.handcrafted import HandcraftedExtractor, feature_names
from tagretrieval.baselines.probe import ProbeBaseline
from tagretrieval.baselines.sources import PreparedFeaturesSource
from tagretrieval.baselines.topics import lda_topics, lsi_topics
from tagretrieval.data.prepared import PreparedDataset, write_prepared
from tagretrieval.reports.run_report import scores_path
from tagretrieval.reports.scores import ScoreMatrix

from conftest import REPO, compose_config, read_metrics, run_task

DOC = REPO / "docs" / "usage" / "baselines.md"
SR = 22050
AUDIO = {"sample_rate": SR, "n_fft": 1024, "hop_length": 512, "n_mels": 128}
# float32 features recomputed in another reduction order (BLAS/FFT threads, load): the error of a mean over ~100
# frames is ~sqrt(100) x float32 eps (1.2e-7) relative, i.e. ~1e-6; 1e-5 leaves 10x margin, atol covers values near 0
FLOAT32_RECOMPUTE_RTOL, FLOAT32_RECOMPUTE_ATOL = 1e-5, 1e-6
AUDIBLE, INAUDIBLE = ("instrument", "mood"), ("location", "era")  # synthetic data: heard in the audio or not


def documented_commands() -> list[list[str]]:
    """The ``python main.py ...`` lines of the doc's bash blocks, as argument lists."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    return [shlex.split(line)[2:] for block in blocks for line in block.splitlines()
            if line.startswith("python main.py ")]


def python_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def baseline_of(args: list[str]) -> str:
    return next(a.split("=", 1)[1] for a in args if a.lstrip("+").startswith("baseline="))


# test-only sizes; otherwise the commands run as documented, plus the smoke overrides (tiny data, tiny CNN)
FASTER = {
    "handcrafted_rf": ["baseline.estimator.n_estimators=10"],
    "handcrafted_hgb": ["baseline.estimator.max_iter=10", "baseline.param_grid.learning_rate=[0.1]",
                        "baseline.permutation_repeats=1"],
}


def category_means(metrics: dict, categories: tuple[str, ...]) -> float:
    return float(np.mean([metrics["per_category"][c][metric_keys.ROC_AUC] for c in categories]))


def test_the_doc_documents_every_baseline():
    documented = {baseline_of(args) for args in documented_commands()}
    assert documented == {p.stem for p in (REPO / "conf" / "baseline").glob("*.yaml")}


@pytest.mark.parametrize("args", documented_commands(), ids=" ".join)
def test_documented_command(args, tmp_path, smoke_overrides, synthetic_root, request):
    name = baseline_of(args)
    if name == "musicnn_probe" and importlib.util.find_spec("musicnn") is None:
        pytest.skip("the musicnn weights are not installed: pip install --no-deps musicnn==0.1.0")
    if any(a.startswith("ckpt_path=") for a in args):
        checkpoint = request.getfixturevalue("trained_run") / "checkpoints" / "best.ckpt"
        args = [f"ckpt_path={checkpoint}" if a.startswith("ckpt_path=") else a for a in args]
    run_task([*args, *smoke_overrides, *FASTER.get(name, [])], tmp_path)
    out = tmp_path / "baseline"

    if name == "topics":
        assert not (tmp_path / "metrics").exists()
        topics = json.loads((out / "topics.json").read_text())
        assert set(topics) == {"LSI", "LDA"} and all(len(t["tags"]) == 6 for t in topics["LDA"])
        assert "## LDA" in (out / "topics.md").read_text()
        return

    metrics = read_metrics(tmp_path)
    dataset = PreparedDataset.load(synthetic_root / "prepared")
    assert metrics["n_songs"] == len(dataset.split_indices("test"))
    assert set(metrics["macro"]) == set(metric_keys.metrics(10))
    # the stored scores give back the metrics: `mode=report run_dir=...` works on a baseline run
    reloaded = ScoreMatrix.load(scores_path(tmp_path)).results().macro
    assert reloaded == pytest.approx(metrics["macro"], abs=1e-9)

    if name == "bce_cnn":  # the doc's Python example reloads the checkpoint without the config tree
        example = python_examples()[0].replace("outputs/2024-05-01/12-00-00/checkpoints/best.ckpt",
                                               str(tmp_path / "checkpoints" / "best.ckpt"))
        namespace = {"mel": torch.zeros(2, 128, 173)}
        exec(compile(example, str(DOC), "exec"), namespace)  # noqa: S102 (our own docs)
        assert namespace["logits"].shape == (2, len(dataset.tags))
        assert namespace["tagger"].hparams["tags"] == dataset.tags
        return
    summary = json.loads((out / "summary.json").read_text())
    source = next((a.split("=", 1)[1] for a in args if a.startswith("baseline/source=")),
                  "musicnn" if name == "musicnn_probe" else "handcrafted")
    if "baseline.categories=[tempo]" in args:  # single-label: confusion matrix over the test songs
        confusion = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
        assert list(confusion.index) == list(confusion.columns) == ["fast", "medium", "slow"]
        assert confusion.to_numpy().sum() == metrics["n_songs"]
        assert np.trace(confusion.to_numpy()) > confusion.to_numpy().sum() / 2  # tempo is audible
        assert (out / "confusion_matrix.png").stat().st_size > 0
    elif source == "handcrafted":  # known answer: hand-crafted features hear the audible tags only
        assert category_means(metrics, AUDIBLE) > 0.85
        assert category_means(metrics, INAUDIBLE) < 0.75
    elif source == "cf":  # and listening data the reverse
        assert category_means(metrics, INAUDIBLE) > 0.85
        assert category_means(metrics, AUDIBLE) < 0.75
    if source == "handcrafted":
        level = next((a.split("=", 1)[1] for a in args if a.startswith("baseline.source.level=")), "song")
        assert summary["n_features"] == len(feature_names(level=level, n_mfcc=20)) == {"song": 89, "beat": 135}[level]
        if name in ("handcrafted_logreg", "handcrafted_rf", "handcrafted_hgb"):  # svm: importance none
            table = pd.read_csv(out / "feature_importances.csv")
            assert sorted(table["feature"]) == sorted(feature_names(level=level, n_mfcc=20))
            assert table["rank"].tolist() == list(range(1, len(table) + 1))
    if source == "musicnn":  # MTT_musicnn's pooled layer (the default), from the cache in the prepared folder
        assert summary["n_features"] == 1506
        assert (synthetic_root / "prepared" / "musicnn_features" / "MTT_musicnn.pooled.npz").exists()
    if name in ("probe", "musicnn_probe"):
        knn = json.loads((out / "knn.json").read_text())
        assert 0.0 <= knn["test_jaccard"] <= 1.0 and knn["n_test_songs"] == metrics["n_songs"]
        variance = pd.read_csv(out / "pca_explained_variance.csv")
        assert variance["cumulative"].iloc[-1] == pytest.approx(1.0, abs=1e-6)
        assert (out / "pca_explained_variance.png").stat().st_size > 0


def test_mode_baseline_without_a_baseline_says_how_to_choose_one(tmp_path, smoke_overrides):
    with pytest.raises(ValueError, match=r"\+baseline=NAME"):
        run_task(["mode=baseline", *smoke_overrides], tmp_path)


@pytest.mark.parametrize("source", sorted(p.stem for p in (REPO / "conf" / "baseline" / "source").glob("*.yaml")))
def test_every_source_config_instantiates(source, tmp_path):
    cfg = compose_config(["mode=baseline", "+baseline=probe", f"baseline/source={source}", "ckpt_path=x.ckpt"],
                         tmp_path)
    assert callable(instantiate(cfg.baseline.source).matrix)


def test_checkpoint_source_without_ckpt_path_is_a_clear_error(tmp_path, smoke_overrides):
    with pytest.raises(InstantiationException, match="ckpt_path=PATH"):
        run_task(["mode=baseline", "+baseline=probe", "baseline/source=checkpoint", *smoke_overrides], tmp_path)


# -- hand-crafted features -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def extractor() -> HandcraftedExtractor:
    return HandcraftedExtractor(**AUDIO, n_mfcc=20)


def sine(freq_hz: float, *, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq_hz * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def clicks(bpm: float, *, seconds: float) -> np.ndarray:
    """A 2 ms burst of a 1 kHz tone on every beat."""
    y = np.zeros(int(seconds * SR), dtype=np.float32)
    burst = sine(1000.0, seconds=0.002, amplitude=1.0)
    for start in (np.arange(0.25, seconds - 0.01, 60.0 / bpm) * SR).astype(int):
        y[start:start + len(burst)] = burst[: len(y) - start]
    return y


def test_features_are_shaped_named_finite_and_match_analytic_values(extractor):
    assert len(extractor.names) == len(set(extractor.names)) == 223
    assert [len(feature_names(level=level, n_mfcc=20)) for level in ("song", "beat", "both")] == [89, 135, 223]
    song, beat = (set(feature_names(level=level, n_mfcc=20)) for level in ("song", "beat"))
    assert song | beat == set(extractor.names) and song & beat == {"tempo_bpm"}

    tone = dict(zip(extractor.names, extractor(sine(440.0, seconds=3.0))))
    assert tone["centroid_mean"] == pytest.approx(440.0, rel=0.05)            # all energy at 440 Hz
    assert tone["zcr_mean"] == pytest.approx(2 * 440.0 / SR, rel=0.05)        # two sign changes per period
    assert tone["rms_mean"] == pytest.approx(0.5 / np.sqrt(2), rel=0.05)      # amplitude / sqrt(2)
    chroma = {n: v for n, v in tone.items() if n.startswith("chroma_") and n.endswith("_mean")}
    assert max(chroma, key=chroma.get) == "chroma_A_mean"

    beat = dict(zip(extractor.names, extractor(clicks(120.0, seconds=8.0))))
    assert beat["tempo_bpm"] == pytest.approx(120.0, rel=0.05)
    assert beat["beats_per_second"] == pytest.approx(2.0, abs=0.3)

    for y in (np.zeros(SR, dtype=np.float32), sine(440.0, seconds=0.05)):    # silence; shorter than one beat
        assert np.isfinite(extractor(y)).all()
    with pytest.raises(ValueError, match="n_fft"):
        extractor(np.zeros(100, dtype=np.float32))


def test_feature_cache_reuses_resumes_skips_bad_audio_and_refuses_other_params(tmp_path, extractor):
    audio = tmp_path / "audio"
    audio.mkdir()
    for name, freq in (("a", 440.0), ("b", 880.0)):
        sf.write(audio / f"{name}.wav", sine(freq, seconds=1.0), SR)
    tracks = pd.DataFrame({"track_id": ["a", "b", "c"], "artist": ["x", "y", "z"], "split": ["train", "valid", "test"],
                           "audio_path": [str(audio / "a.wav"), str(audio / "b.wav"), str(audio / "missing.wav")]})
    dataset = write_prepared(tmp_path / "prepared", name="mini", tracks=tracks, tags=["t"], categories=["c"],
                             labels=np.ones((3, 1)))
    cache = tmp_path / "prepared" / "handcrafted_features.npz"

    first = handcrafted_features(dataset, extractor, level="both", progress=False)
    assert first.valid.tolist() == [True, True, False] and first.names == extractor.names
    assert "decode error" in first.skipped["c"] and first.values.shape == (3, 223)
    # a recomputation may differ from the cached row in the last float32 bits (reduction order follows the BLAS/FFT
    # threads and the load: up to 4.8e-7 seen); another track's row, or a stale one, differs by orders more
    np.testing.assert_allclose(first.values[0], extractor(load_audio(audio / "a.wav", sample_rate=SR)),
                               rtol=FLOAT32_RECOMPUTE_RTOL, atol=FLOAT32_RECOMPUTE_ATOL)

    with np.load(cache) as data:  # mark a's cached row, drop b's: a is reused, b computed again
        kept = {"manifest": data["manifest"], "track_ids": data["track_ids"][:1], "values": data["values"][:1] + 1.0}
    np.savez(cache, **kept)
    second = handcrafted_features(dataset, extractor, level="song", progress=False)
    song = first.columns(feature_names(level="song", n_mfcc=20))
    assert second.names == song.names and song.names[-1] == "tempo_bpm"
    assert np.array_equal(second.values[0], song.values[0] + 1.0)
    np.testing.assert_allclose(second.values[1], song.values[1], rtol=FLOAT32_RECOMPUTE_RTOL,  # b: recomputed
                               atol=FLOAT32_RECOMPUTE_ATOL)
    assert not np.allclose(second.values[1], second.values[0], rtol=1e-3)  # the tolerance still tells a from b

    with pytest.raises(FeatureCacheMismatchError, match="n_mfcc: expected 13, found 20"):
        handcrafted_features(dataset, HandcraftedExtractor(**AUDIO, n_mfcc=13), level="song", progress=False)


# -- kNN, Jaccard, PCA ------------------------------------------------------------------------------------------
def naive_knn(X_train, Y_train, X_query, k):
    out = []
    for x in X_query:
        nearest = sorted(range(len(X_train)), key=lambda i: float(np.sum((X_train[i] - x) ** 2)))[:k]
        out.append([int(sum(Y_train[i][j] for i in nearest) > k / 2) for j in range(len(Y_train[0]))])
    return np.array(out)


def naive_jaccard(Y_true, Y_pred):
    values = []
    for t, p in zip(Y_true, Y_pred):
        union = sum(1 for a, b in zip(t, p) if a or b)
        values.append(1.0 if union == 0 else sum(1 for a, b in zip(t, p) if a and b) / union)
    return sum(values) / len(values)


def test_knn_majority_vote_and_jaccard_index_on_a_planted_problem():
    rng = np.random.default_rng(11)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    tags_of_cluster = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0]])    # planted: cluster -> tags
    cluster = rng.integers(0, 3, size=60)
    X_train = centres[cluster] + rng.normal(scale=1.0, size=(60, 2))
    Y_train = tags_of_cluster[cluster].copy()
    flipped = rng.random(Y_train.shape) < 0.1                                    # 10 % label noise
    Y_train[flipped] = 1 - Y_train[flipped]
    query_cluster = rng.integers(0, 3, size=17)
    X_query = centres[query_cluster] + rng.normal(scale=1.0, size=(17, 2))

    for k in (1, 4, 7):
        predicted = knn_majority_vote(X_train, Y_train, X_query, n_neighbors=k)
        assert np.array_equal(predicted, naive_knn(X_train, Y_train, X_query, k))
    predicted = knn_majority_vote(X_train, Y_train, X_query, n_neighbors=7)
    assert np.array_equal(predicted, tags_of_cluster[query_cluster])             # the vote removes the noise
    truth = tags_of_cluster[query_cluster]
    assert jaccard_index(truth, predicted) == 1.0
    noisy = naive_knn(X_train, Y_train, X_query, 1)
    assert jaccard_index(truth, noisy) == pytest.approx(naive_jaccard(truth, noisy))

    # hand cases: a tie (1 of 2 neighbours) is not a majority; empty truth and prediction agree perfectly
    assert knn_majority_vote(np.array([[0.0], [1.0]]), np.array([[1], [0]]), np.array([[0.4]]),
                             n_neighbors=2).tolist() == [[0]]
    assert jaccard_index(np.array([[0, 0], [1, 1]]), np.array([[0, 0], [1, 0]])) == pytest.approx((1.0 + 0.5) / 2)


def test_explained_variance_of_planted_low_rank_vectors():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 9)) + 1e-3 * rng.normal(size=(40, 9))
    table = explained_variance(X)
    assert len(table) == 9 and table["cumulative"].iloc[-1] == pytest.approx(1.0)
    assert components_for(table, 0.99) == 3
    reference = np.linalg.svd(X - X.mean(axis=0), compute_uv=False) ** 2
    assert table["explained_variance_ratio"].to_numpy() == pytest.approx(reference / reference.sum())


# -- topics ----------------------------------------------------------------------------------------------------
def test_lsi_and_lda_topics_separate_two_planted_tag_groups():
    rng = np.random.default_rng(11)
    rock, jazz = ["rock", "guitar", "loud", "drums"], ["jazz", "sax", "smooth", "swing"]
    documents = [list(rng.choice(rock if i < 180 else jazz, size=rng.integers(2, 4), replace=False))
                 for i in range(300)]  # two groups of tags that never meet, of unequal sizes
    for topics in (lsi_topics(documents, num_topics=2, top_n=4, seed=0),
                   lda_topics(documents, num_topics=2, top_n=4, passes=10, alpha="symmetric", seed=0)):
        assert sorted(sorted(t.tags) for t in topics) == sorted([sorted(rock), sorted(jazz)])
        assert all(w > 0 for t in topics for w in t.weights)
    again = lda_topics(documents, num_topics=2, top_n=4, passes=10, alpha="symmetric", seed=0)
    assert again == lda_topics(documents, num_topics=2, top_n=4, passes=10, alpha="symmetric", seed=0)  # seeded


# -- the library without Hydra -----------------------------------------------------------------------------------
def test_probe_on_precomputed_features_without_hydra(tmp_path):
    rng = np.random.default_rng(11)
    n, splits = 90, ["train"] * 50 + ["valid"] * 20 + ["test"] * 20
    labels = (rng.random((n, 3)) < 0.4).astype(np.uint8)
    labels[labels.sum(axis=1) == 0, 0] = 1
    features = labels @ rng.normal(size=(3, 8)) * 3.0 + 0.1 * rng.normal(size=(n, 8))   # planted: tags -> features
    tracks = pd.DataFrame({"track_id": [f"t{i}" for i in range(n)], "artist": "a", "split": splits, "audio_path": ""})
    dataset = write_prepared(tmp_path / "prepared", name="planted", tracks=tracks, tags=["x", "y", "z"],
                             categories=["c", "c", "c"], labels=labels, features=features)
    from sklearn.linear_model import LogisticRegression

    probe = ProbeBaseline(source=PreparedFeaturesSource(), estimator=LogisticRegression(max_iter=1000),
                          param_grid={"C": [0.1, 1.0]}, n_neighbors=[1, 5], knn_metric="euclidean",
                          standardize=True, categories=None, n_jobs=1)
    results = probe.run(BaselineContext(dataset=dataset, output_dir=tmp_path / "run"))
    assert results.macro[metric_keys.ROC_AUC] > 0.95
    assert json.loads((tmp_path / "run" / "baseline" / "knn.json").read_text())["test_jaccard"] > 0.8
    summary = json.loads((tmp_path / "run" / "baseline" / "summary.json").read_text())
    assert summary["pca_components_95"] <= 3
    assert read_metrics(tmp_path / "run")["macro"] == results.macro


def test_python_example_of_the_doc(synthetic_root, capsys):
    example = python_examples()[-1]
    audio = next((synthetic_root / "audio").glob("*.flac"))
    exec(compile(example.replace("data/synthetic/audio/track00000.flac", str(audio)), str(DOC), "exec"), {})  # noqa: S102
    tempo, centroid, _ = (float(v) for v in capsys.readouterr().out.split())
    assert 30.0 < tempo < 300.0 and 20.0 < centroid < SR / 2
