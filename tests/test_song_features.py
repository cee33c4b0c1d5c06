"""Hand-crafted song features for any dataset with audio (song_features=handcrafted) and the fused CNN + features
model (model=fused): computed once into the prepared folder, reused, skip-and-report, through the real runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tagretrieval.training.checkpoints import load_module
from tagretrieval.runtime.errors import ConfigError, DataError
from tagretrieval.models import build_from_spec, cut_eval_chunks
from tagretrieval.models.fused import FusedModel
from tagretrieval.data.song_features import REPORT_FILE
from tagretrieval.data.feature_cache import NOT_COMPUTED

from conftest import CONF, read_metrics, run_task

SMALL = {"cnn_channels": [4, 4, 8, 8, 8, 8, 16], "hidden_dim": 32, "embedding_dim": 16, "n_features": 11}


def test_fused_model_gates_audio_and_features_and_rebuilds_from_its_spec():
    torch.manual_seed(0)
    model = FusedModel(**SMALL).eval()
    mel, features = torch.randn(3, 128, 300), torch.randn(3, 11)
    with torch.no_grad():
        song = model.embed_songs(mel=mel, features=features)
        assert song.shape == (3, 16) and model.embed_tags(torch.randn(2, 300)).shape == (2, 16)
        weights = model.fusion_weights(mel, features)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(3, 16))
        audio, feats = model._branch_embeddings(cut_eval_chunks(mel, chunk_frames=173, n_chunks=8), features)
        normalize = torch.nn.functional.normalize
        torch.testing.assert_close(song, weights[:, 0] * normalize(audio, dim=-1) + weights[:, 1] * normalize(feats, dim=-1))
        rebuilt = build_from_spec(json.loads(json.dumps(model.spec())))
        rebuilt.load_state_dict(model.state_dict())
        torch.testing.assert_close(rebuilt.eval().embed_songs(mel=mel, features=features), song, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs features"):
        model.embed_songs(mel=mel)
    with pytest.raises(ValueError, match=r"features must be \[batch, 11\]"):
        model.embed_songs(mel=mel, features=torch.randn(3, 5))


def test_fused_model_pools_its_chunks_as_configured_and_an_old_mean_checkpoint_still_loads():
    torch.manual_seed(0)
    model = FusedModel(**SMALL, pooling="attention").eval()
    assert model.spec()["pooling"] == "attention"
    # chunks that differ (louder along the song): white noise of one level looks the same in every chunk
    mel, features = torch.randn(2, 128, 600) * torch.linspace(0.1, 5.0, 600), torch.randn(2, 11)
    with torch.no_grad():
        as_mean = model.embed_songs(mel=mel, features=features)
        mean_model = FusedModel(**SMALL).eval()
        mean_model.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("chunk_pooling.")})
        # attention starts with uniform weights: the mean, up to the rounding of a weighted sum against a mean
        torch.testing.assert_close(as_mean, mean_model.embed_songs(mel=mel, features=features), rtol=0, atol=1e-5)
        torch.nn.init.normal_(model.chunk_pooling.score[2].weight)
        weighted = model.embed_songs(mel=mel, features=features)
        assert not torch.allclose(weighted, as_mean, atol=1e-4)
        rebuilt = build_from_spec(json.loads(json.dumps(model.spec()))).eval()
        rebuilt.load_state_dict(model.state_dict())
        torch.testing.assert_close(rebuilt.embed_songs(mel=mel, features=features), weighted, rtol=0, atol=0)
    # a checkpoint of the mean-only model (its spec has no pooling) rebuilds as the mean, weights and all
    old_spec = {k: v for k, v in FusedModel(**SMALL).spec().items() if k != "pooling"}
    old = build_from_spec(old_spec).eval()
    assert old.chunk_pooling.mode == "mean"
    old.load_state_dict(FusedModel(**SMALL).state_dict(), strict=True)


def test_features_from_the_audio_of_any_dataset_train_model_features_and_are_reused(tmp_path, smoke_overrides,
                                                                                     synthetic_root):
    prepared = tmp_path / "prepared"
    shutil.copytree(synthetic_root / "prepared", prepared)  # a private copy: the cache is written into it
    overrides = [*smoke_overrides, f"data.prepared_dir={prepared}", "song_features=handcrafted", "model=features"]
    run_task(overrides, tmp_path / "run1")
    cache = prepared / "handcrafted_features.npz"
    report = json.loads((tmp_path / "run1" / REPORT_FILE).read_text())
    assert report["n_skipped"] == 0 and report["n_features"] == 223 and report["level"] == "both"
    module = load_module(tmp_path / "run1" / "checkpoints" / "best.ckpt")
    assert module.hparams["model"]["n_features"] == 223
    assert set(read_metrics(tmp_path / "run1")["per_category"]) == {"instrument", "tempo", "mood", "location", "era"}

    # the second run reads the cache (not rewritten); level=song takes 89 of its columns
    written = cache.stat().st_mtime_ns
    run_task([*overrides, "song_features.level=song"], tmp_path / "run2")
    assert cache.stat().st_mtime_ns == written
    assert load_module(tmp_path / "run2" / "checkpoints" / "best.ckpt").hparams["model"]["n_features"] == 89


def test_fused_trains_on_audio_and_computed_features_and_skips_tracks_without_audio(tmp_path, smoke_overrides,
                                                                                    synthetic_root):
    # the synthetic data is a folder of audio and tags.csv: the README's command on "your own folder", shortened
    root = tmp_path / "mydata"
    shutil.copytree(synthetic_root, root, ignore=shutil.ignore_patterns("prepared", ".*.lock"))
    folder = ["data=folder", f"data.root={root}", "experiment=smoke", "progress=false", "logger=csv"]
    run_task([*folder, "mode=prepare"], tmp_path / "prepare")
    track_id, audio = (root / "prepared" / "tracks.csv").read_text().splitlines()[1].split(",")[::3]
    Path(audio).unlink()  # its mel is in the store; its audio file is gone
    overrides = [*folder, "model=fused", "song_features=handcrafted"]
    run_task(overrides, tmp_path / "run")
    report = json.loads((tmp_path / "run" / REPORT_FILE).read_text())
    assert list(report["skipped"]) == [track_id] and report["skipped"][track_id].startswith("decode error")
    module = load_module(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert module.hparams["model"]["_target_"] == "tagretrieval.models.fused.FusedModel"
    assert read_metrics(tmp_path / "run")["macro"]["roc_auc"] > 0.0

    # the checkpoint remembers its song features: retrieval without song_features= reads the same ones, and only
    # reads them (a checkpoint's data paths are never written): the track the cache lacks is skipped and reported
    cache = root / "prepared" / "handcrafted_features.npz"
    cached = cache.read_bytes()
    found = run_task(["mode=retrieve", f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}", "query=piano",
                      "progress=false"], tmp_path / "retrieve")
    assert len(found["piano"]) == 10 and track_id not in {hit["track_id"] for hit in found["piano"]}
    report = json.loads((tmp_path / "retrieve" / REPORT_FILE).read_text())
    assert report["skipped"] == {track_id: NOT_COMPUTED} and cache.read_bytes() == cached

    # fused pools its chunks as chunk_pooling says, also trained on two crops per song in bf16 (features reused)
    run_task([*overrides, "chunk_pooling=attention", "train_chunks=2", "trainer.precision=bf16-mixed"],
             tmp_path / "attention")
    module = load_module(tmp_path / "attention" / "checkpoints" / "best.ckpt")
    assert module.hparams["model"]["pooling"] == "attention"
    assert np.isfinite(list(read_metrics(tmp_path / "attention")["macro"].values())).all()

    # too many tracks without features: an error naming the threshold, after the report is written
    with pytest.raises(DataError, match="max_skipped_fraction=0.0"):
        run_task([*overrides, "song_features.max_skipped_fraction=0.0"], tmp_path / "strict")
    assert (tmp_path / "strict" / REPORT_FILE).exists()


def test_a_model_that_needs_features_is_refused_before_the_import_with_the_way_to_compute_them(tmp_path):
    root = tmp_path / "mydata"
    (root / "audio").mkdir(parents=True)
    (root / "tags.csv").write_text("track_id,tags\na,rock\n")
    with pytest.raises(ConfigError, match="add song_features=handcrafted"):
        run_task(["data=folder", f"data.root={root}", "model=fused", "progress=false"], tmp_path / "run")
    assert not (root / "prepared").exists()


def test_a_checkpoint_may_name_only_our_song_features_class():
    import yaml

    from tagretrieval.training.checkpoints import SONG_FEATURES, data_config

    assert {yaml.safe_load(p.read_text())["_target_"] for p in (CONF / "song_features").glob("*.yaml")
            if yaml.safe_load(p.read_text())} == SONG_FEATURES
    stored = {"data": {"_target_": "tagretrieval.data.folder.FolderImporter", "root": "x"},
              "audio": {"_target_": "tagretrieval.audio.MelFrontend"}, "chunk_frames": 173}
    assert data_config({"hyper_parameters": {"data_config": {**stored, "song_features": {}}}})["song_features"] == {}
    crafted = {**stored, "song_features": {"_target_": "tagretrieval.runtime.files.atomic_write_text", "path": "x"}}
    with pytest.raises(DataError, match="refusing the checkpoint's song_features config"):
        data_config({"hyper_parameters": {"data_config": crafted}})
