"""musicnn's pretrained networks through main.py: song_features=musicnn (model=features, model=fused, bf16, DDP),
+baseline=musicnn_probe, mode=tag pretrained=NAME, the cache per network and layer, and the overlap warning.

Skipped, with the reason, when the ``musicnn`` package (the weights) is not installed, unless
``TAGRETRIEVAL_REQUIRE_PRETRAINED=1`` (as tests/test_pretrained_musicnn.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tagretrieval.audio import load_audio
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.data.song_features import REPORT_FILE
from tagretrieval.evaluation import metric_keys
from tagretrieval.pretrained import (INSTALL_HINT, MusicnnEmbedder, MusicnnFrontend, MusicnnMissingError,
                                     load_pretrained, model_tags, patches)
from tagretrieval.runtime.errors import ConfigError
from tagretrieval.runtime.preflight import user_error
from tagretrieval.tasks import pretrained_overlap
from tagretrieval.training.checkpoints import load_module

from conftest import compose_config, read_metrics, run_main, run_task

MISSING = importlib.util.find_spec("musicnn") is None
if MISSING and os.environ.get("TAGRETRIEVAL_REQUIRE_PRETRAINED") == "1":
    raise RuntimeError(f"TAGRETRIEVAL_REQUIRE_PRETRAINED=1 but the musicnn weights are not installed: {INSTALL_HINT}")
needs_weights = pytest.mark.skipif(MISSING, reason=f"the musicnn weights are not installed: {INSTALL_HINT}")

# 60 songs of 3.2 s (one 3-s patch each): musicnn takes ~0.1 s a patch on one busy CPU core
SMALL = ["data.n_songs=60", "data.n_artists=30", "data.n_users=60", "data.clip_seconds=3.2", "data.cf_dim=8"]
CACHE = Path("musicnn_features") / "MTT_musicnn.pooled.npz"   # the default layer


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("musicnn") / "synthetic"
    run_task(["mode=prepare", f"data.root={root}", "progress=false", *SMALL], tmp_path_factory.mktemp("prepare"))
    return root


@pytest.fixture(scope="module")
def features_run(small_root, tmp_path_factory) -> Path:
    """One model=features run on song_features=musicnn: computes the cache into the prepared folder."""
    run_dir = tmp_path_factory.mktemp("features_run")
    run_task(_overrides(small_root, "model=features"), run_dir)
    return run_dir


def _overrides(root: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", *SMALL, "experiment=smoke", "progress=false", "logger=csv", "song_features=musicnn",
            *extra]


def _metric_names(root: Path) -> set[str]:
    """roc_auc, pr_auc and p_at_k, k = 10 or the number of test songs if fewer (the smoke runs' top_k)."""
    return set(metric_keys.metrics(min(10, len(PreparedDataset.load(root / "prepared").split_indices("test")))))


def _no_computing(monkeypatch) -> None:
    def refuse(self, y):
        raise AssertionError("the cached embeddings were computed again")
    monkeypatch.setattr(MusicnnEmbedder, "outputs", refuse)


@needs_weights
def test_musicnn_embeddings_train_model_features_and_are_the_mean_over_patches(features_run, small_root):
    report = json.loads((features_run / REPORT_FILE).read_text())
    assert report["source"] == "musicnn" and report["model"] == "MTT_musicnn" and report["layer"] == "pooled"
    assert report["n_features"] == 1506 and report["n_skipped"] == 0 and report["n_tracks"] == 60
    module = load_module(features_run / "checkpoints" / "best.ckpt")
    assert module.hparams["model"]["_target_"] == "tagretrieval.models.features.FeaturesModel"
    assert module.hparams["model"]["n_features"] == 1506
    assert np.isfinite(list(read_metrics(features_run)["macro"].values())).all()

    # a track's cached vector is the network's pooled layer (the default) averaged over its audio's 3-s patches at 16 kHz
    with np.load(small_root / "prepared" / CACHE) as cache:
        ids, values = cache["track_ids"].tolist(), cache["values"]
        manifest = json.loads(str(cache["manifest"]))
    assert manifest["params"]["model"] == "MTT_musicnn" and manifest["params"]["frontend"]["sample_rate"] == 16000
    dataset = PreparedDataset.load(small_root / "prepared")
    row = dataset.track_ids.index(ids[3])
    y = load_audio(dataset.tracks.at[row, "audio_path"], sample_rate=16000)
    assert 187 * 256 <= len(y) < 2 * 187 * 256  # one whole patch: the mean is over the patches actually cut
    network = load_pretrained("MTT_musicnn")
    with torch.no_grad():
        direct = network(patches(MusicnnFrontend()(torch.from_numpy(y))))["pooled"].mean(dim=0).numpy()
    np.testing.assert_allclose(values[3], direct, rtol=0, atol=1e-5)


@needs_weights
def test_fused_and_features_train_in_bf16_on_the_cached_embeddings(features_run, small_root, tmp_path, monkeypatch):
    cache = small_root / "prepared" / CACHE
    written = cache.stat().st_mtime_ns
    _no_computing(monkeypatch)  # the second run reads the cache
    for model in ("fused", "features"):
        run_task(_overrides(small_root, f"model={model}", "trainer.precision=bf16-mixed"), tmp_path / model)
        module = load_module(tmp_path / model / "checkpoints" / "best.ckpt")
        assert module.hparams["model"]["n_features"] == 1506
        metrics = read_metrics(tmp_path / model)
        assert set(metrics["macro"]) == _metric_names(small_root)
        assert np.isfinite(list(metrics["macro"].values())).all()
    assert cache.stat().st_mtime_ns == written


@needs_weights
def test_other_weights_or_layer_compute_their_own_cache(features_run, small_root, tmp_path):
    mtt = small_root / "prepared" / CACHE
    written = mtt.stat().st_mtime_ns
    run_task(_overrides(small_root, "model=features", "song_features.weights=MSD"), tmp_path / "msd")
    msd = small_root / "prepared" / "musicnn_features" / "MSD_musicnn.pooled.npz"
    assert msd.exists() and mtt.stat().st_mtime_ns == written
    with np.load(mtt) as a, np.load(msd) as b:
        assert a["values"].shape == b["values"].shape == (60, 1506)
        assert not np.allclose(a["values"], b["values"], atol=1e-3)  # other weights, other embeddings
    report = json.loads((tmp_path / "msd" / REPORT_FILE).read_text())
    assert report["model"] == "MSD_musicnn" and report["cache"] == str(msd)
    # the VGG model's pooled features; a layer the architecture lacks is refused, naming the ones it has
    with pytest.raises(Exception) as raised:  # Hydra's InstantiationException around it (main.py unwraps it)
        run_task(_overrides(small_root, "model=features", "song_features.architecture=vgg",
                            "song_features.layer=penultimate"), tmp_path / "bad")
    assert isinstance(user_error(raised.value), ConfigError)
    assert "expected one of ['pooled', 'taggram']" in str(user_error(raised.value))


@needs_weights
def test_also_layers_fills_the_other_layers_caches_in_the_same_pass(features_run, small_root, tmp_path, monkeypatch):
    folder = small_root / "prepared" / "all_layers"   # a cache folder of its own: this pass computes every track
    run_task(_overrides(small_root, "model=features", "song_features.cache_dir=all_layers",
                        "song_features.also_layers=[penultimate,taggram]"), tmp_path / "first")
    caches = {}
    for layer, dim in (("penultimate", 200), ("pooled", 1506), ("taggram", 50)):
        with np.load(folder / f"MTT_musicnn.{layer}.npz") as cache:
            caches[layer] = dict(zip(cache["track_ids"].tolist(), cache["values"]))
            assert json.loads(str(cache["manifest"]))["params"]["layer"] == layer
        assert len(caches[layer]) == 60 and next(iter(caches[layer].values())).shape == (dim,), layer
    with np.load(small_root / "prepared" / CACHE) as alone:   # the same vectors as a pass for pooled alone
        for track_id, values in zip(alone["track_ids"].tolist(), alone["values"]):
            np.testing.assert_allclose(caches["pooled"][track_id], values, rtol=0, atol=1e-6)
    dataset = PreparedDataset.load(small_root / "prepared")
    y = load_audio(dataset.tracks.at[5, "audio_path"], sample_rate=16000)
    with torch.no_grad():
        direct = load_pretrained("MTT_musicnn")(patches(MusicnnFrontend()(torch.from_numpy(y))))
    for layer in ("penultimate", "taggram"):
        np.testing.assert_allclose(caches[layer][dataset.track_ids[5]], direct[layer].mean(dim=0).numpy(), rtol=0,
                                   atol=1e-5)
    # a later run on another layer reads its cache: no second pass over the audio
    _no_computing(monkeypatch)
    run_task(_overrides(small_root, "model=features", "song_features.cache_dir=all_layers",
                        "song_features.layer=penultimate"), tmp_path / "penultimate")
    assert json.loads((tmp_path / "penultimate" / REPORT_FILE).read_text())["n_features"] == 200
    with pytest.raises(Exception) as raised:
        run_task(_overrides(small_root, "model=features", "song_features.also_layers=[pool5]"), tmp_path / "bad")
    assert isinstance(user_error(raised.value), ConfigError) and "'pool5'" in str(user_error(raised.value))


@needs_weights
def test_musicnn_probe_reports_the_metrics_of_every_baseline_from_the_shared_cache(features_run, small_root, tmp_path,
                                                                                   monkeypatch):
    _no_computing(monkeypatch)  # song_features=musicnn filled the cache the probe reads
    args = ["mode=baseline", "+baseline=musicnn_probe", f"data.root={small_root}", *SMALL, "experiment=smoke",
            "progress=false", "logger=csv"]
    results = run_task(args, tmp_path)
    metrics = read_metrics(tmp_path)
    assert set(metrics["macro"]) == _metric_names(small_root)
    assert metrics["macro"] == pytest.approx(results.macro)
    summary = json.loads((tmp_path / "baseline" / "summary.json").read_text())
    assert summary["n_features"] == 1506 and "MTT_musicnn pooled" in summary["source"]
    assert summary["probe"].startswith("LogisticRegression")


def _write_clip(path: Path, seconds: float, *, seed: int, sr: int = 22050) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * (220 + 200 * seed) * t) + 0.05 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y.astype(np.float32), sr)


@needs_weights
def test_mode_tag_pretrained_gives_the_mean_taggram_over_patches(small_root, tmp_path):
    folder = tmp_path / "mine"
    _write_clip(folder / "a.wav", 7.0, seed=1)  # two whole patches and a dropped tail, at 22.05 kHz
    _write_clip(folder / "sub" / "b.flac", 2.0, seed=2)  # shorter than a patch: repeated to one
    dataset = PreparedDataset.load(small_root / "prepared")
    track = dataset.track_ids[0]
    found = run_task(["mode=tag", "pretrained=MTT_musicnn", f"tracks=[{folder},{track}]", "inference.top_k=5",
                      f"data.root={small_root}", *SMALL, "progress=false"], tmp_path / "tag")
    files = {str(folder / "a.wav"): 2, str(folder / "sub" / "b.flac"): 1}
    assert list(found) == [*files, track]
    assert json.loads((tmp_path / "tag" / "tags.json").read_text()) == found
    network, tags = load_pretrained("MTT_musicnn"), model_tags("MTT_musicnn")
    paths = {**{f: f for f in files}, track: dataset.tracks.at[0, "audio_path"]}
    for entry, path in paths.items():
        x = patches(MusicnnFrontend()(torch.from_numpy(load_audio(path, sample_rate=16000))))
        assert len(x) == files.get(entry, 1)
        with torch.no_grad():
            taggram = network(x)["taggram"].mean(dim=0).numpy()
        best = np.argsort(-taggram)[:5]
        assert [t["tag"] for t in found[entry]] == [tags[j] for j in best]
        np.testing.assert_allclose([t["score"] for t in found[entry]], taggram[best], rtol=0, atol=1e-5)

    # without tracks: the songs of inference.split of the dataset
    split = run_task(["mode=tag", "pretrained=MTT_vgg", "inference.split=test", f"data.root={small_root}", *SMALL,
                      "progress=false"], tmp_path / "split")
    test_ids = [dataset.track_ids[i] for i in dataset.split_indices("test")]
    assert list(split) == test_ids and all(len(v) == 10 for v in split.values())
    assert {t["tag"] for v in split.values() for t in v} <= set(model_tags("MTT_vgg"))
    with pytest.raises(ConfigError, match="not both"):
        run_task(["mode=tag", "pretrained=MTT_vgg", f"ckpt_path={tmp_path / 'tag' / 'tags.json'}",
                  f"tracks={folder}"], tmp_path / "both")


def test_the_overlap_warning_names_the_network_and_the_dataset(tmp_path):
    def warnings(*overrides: str) -> list[str]:
        return pretrained_overlap(compose_config(["data.root=x", *overrides], tmp_path))

    mtt = warnings("data=mtat", "song_features=musicnn")
    assert len(mtt) == 1 and "MTT_musicnn was trained on MagnaTagATune" in mtt[0] and "data=mtat" in mtt[0]
    assert warnings("data=msd500", "song_features=musicnn") == []
    assert "MSD_vgg" in warnings("data=msd500", "mode=baseline", "+baseline=musicnn_probe",
                                 "baseline.source.weights=MSD", "baseline.source.architecture=vgg",
                                 "baseline.source.layer=pooled")[0]
    assert "MTT_musicnn" in warnings("data=mtat", "mode=tag", "pretrained=MTT_musicnn", "tracks=x")[0]
    assert "MSD_vgg" in warnings("data=msd500", "model=musicnn", "model.pretrained=MSD_vgg")[0]
    assert warnings("data=mtat", "model=musicnn", "model.pretrained=MSD_musicnn") == []
    assert warnings("data=mtat", "song_features=handcrafted") == warnings("data=synthetic", "song_features=musicnn") == []


def test_the_overlap_warning_is_printed_at_start(tmp_path):
    done = run_main(["mode=prepare", "data=mtat", f"data.root={tmp_path / 'nothing'}", "song_features=musicnn",
                     f"hydra.run.dir={tmp_path / 'run'}"])
    out = done.stdout + done.stderr
    assert "warning: MTT_musicnn was trained on MagnaTagATune" in out
    # before the import, which fails here (no MTAT files)
    assert done.returncode != 0 and out.index("warning: MTT_musicnn") < out.index("MTAT annotations not found")


@needs_weights
def test_model_auto_keeps_acoustic_and_names_the_pretrained_option(tmp_path, caplog):
    import logging

    folder = tmp_path / "mine"   # audio only: model=auto chooses acoustic
    for i in range(12):
        _write_clip(folder / "audio" / f"c{i}.wav", 2.0, seed=i % 3)
    (folder / "tags.csv").write_text("track_id,tags,split\n" + "".join(
        f"c{i},{'low' if i % 3 == 0 else 'high'},{['train', 'train', 'valid', 'test'][i % 4]}\n" for i in range(12)))
    with caplog.at_level(logging.INFO, logger="tagretrieval.tasks"):
        run_task(["data=folder", f"data.root={folder}", "experiment=smoke", "progress=false", "logger=none",
                  "trainer.max_epochs=1"], tmp_path / "run")
    line = next(r.getMessage() for r in caplog.records if "model=auto chose" in r.getMessage())
    assert "chose acoustic" in line and "model=features song_features=musicnn tied or beat it" in line


@needs_weights
def test_without_the_wheel_the_error_names_the_install_command(small_root, tmp_path, monkeypatch):
    prepared = tmp_path / "prepared"
    shutil.copytree(small_root / "prepared", prepared, ignore=shutil.ignore_patterns("musicnn_features"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "musicnn" else real(name, *a))
    with pytest.raises(MusicnnMissingError, match="pip install --no-deps musicnn==0.1.0"):
        run_task(_overrides(small_root, f"data.prepared_dir={prepared}", "model=features"), tmp_path / "run")


@pytest.mark.slow
@needs_weights
def test_ddp_on_two_cpu_processes_trains_on_the_cached_embeddings(features_run, small_root, tmp_path):
    cache = small_root / "prepared" / CACHE
    written = cache.stat().st_mtime_ns
    done = run_main([*_overrides(small_root, "model=features"), "trainer=ddp", "trainer.devices=2",
                     "trainer.accelerator=cpu", "trainer.precision=32-true", f"hydra.run.dir={tmp_path / 'ddp'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_metrics(tmp_path / "ddp")["n_songs"] == read_metrics(features_run)["n_songs"]
    assert load_module(tmp_path / "ddp" / "checkpoints" / "best.ckpt").hparams["model"]["n_features"] == 1506
    assert cache.stat().st_mtime_ns == written
