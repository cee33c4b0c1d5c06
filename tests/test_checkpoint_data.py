"""A checkpoint remembers its data: after `data=folder data.root=mydata`, every ckpt_path mode uses that dataset (and
its front end and chunk length) unless the command line gives other data, which is then said."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import TINY_SYNTHETIC, read_metrics, run_main, run_task

from tagretrieval.runtime.errors import ConfigError, UserError

# the training run's own front end and chunk length: without them the checkpoint's mels would not match
TRAINING = ["audio.fmax_hz=8000.0", "chunk_frames=150"]


@pytest.fixture(scope="module")
def mydata(tmp_path_factory):
    """A user's folder: 24 tones of 4 s, audio only (no CF vectors), two tag kinds, 8 artists."""
    root = tmp_path_factory.mktemp("newcomer") / "mydata"
    (root / "audio").mkdir(parents=True)
    rows = []
    for i in range(24):
        t = np.arange(4 * 22050) / 22050
        low = i % 2 == 0
        sf.write(root / "audio" / f"song{i:02d}.wav", 0.4 * np.sin(2 * np.pi * (220 if low else 1760) * t), 22050)
        rows.append({"track_id": f"song{i:02d}", "tags": ";".join(["low" if low else "high",
                                                                     "loud" if i % 3 else "soft"]),
                     "artist": f"a{i % 8}"})
    pd.DataFrame(rows).to_csv(root / "tags.csv", index=False)
    return root


@pytest.fixture(scope="module")
def trained(mydata, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("newcomer_run")
    run_task(["data=folder", f"data.root={mydata}", *TRAINING, "experiment=smoke", "trainer.max_epochs=1",
              "progress=false", "logger=none"], run_dir)
    return run_dir / "checkpoints" / "best.ckpt"


def folder_ids(mydata) -> set[str]:
    return set(pd.read_csv(mydata / "tags.csv")["track_id"])


def test_the_checkpoint_keeps_its_data_and_the_model_fits_it(trained, mydata):
    hparams = torch.load(trained, weights_only=True)["hyper_parameters"]
    assert hparams["model"]["_target_"] == "tagretrieval.models.AcousticModel"  # model=auto: audio, no CF
    stored = hparams["data_config"]
    assert stored["data"]["_target_"] == "tagretrieval.data.folder.FolderImporter"
    assert stored["data"]["root"] == str(mydata)
    assert stored["audio"]["fmax_hz"] == 8000.0 and stored["chunk_frames"] == 150


def test_retrieve_without_data_searches_the_training_folder(trained, mydata, tmp_path):
    done = run_main(["mode=retrieve", f"ckpt_path={trained}", "query=low", f"hydra.run.dir={tmp_path}",
                     "progress=false"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the checkpoint's training data" in done.stdout + done.stderr
    found = json.loads((tmp_path / "retrieval.json").read_text())["low"]
    assert len(found) == 10 and {hit["track_id"] for hit in found} <= folder_ids(mydata)


def test_tag_export_and_test_without_data_use_the_training_folder(trained, mydata, tmp_path):
    tags = run_task(["mode=tag", f"ckpt_path={trained}", "tracks=[song00,song03]", "progress=false"],
                    tmp_path / "tag")
    assert set(tags) == {"song00", "song03"}
    assert {t["tag"] for t in tags["song00"]} == {"high", "low", "loud", "soft"}
    run_task(["mode=export", f"ckpt_path={trained}", "inference.viewer=false", "progress=false"], tmp_path / "export")
    folder = tmp_path / "export" / "export"
    assert json.loads((folder / "export.json").read_text())["dataset"] == "folder"
    assert set(pd.read_csv(folder / "tracks.csv")["track_id"]) == folder_ids(mydata)
    run_task(["mode=test", f"ckpt_path={trained}", "progress=false", "logger=none"], tmp_path / "test")
    assert set(read_metrics(tmp_path / "test")["per_tag"]) <= {"high", "low", "loud", "soft"}


def test_other_data_given_is_used_and_said(trained, synthetic_root, tmp_path, caplog):
    other = ["mode=retrieve", f"ckpt_path={trained}", "query=low", f"data.root={synthetic_root}", *TINY_SYNTHETIC,
             "progress=false"]
    # the checkpoint's front end still applies, and the synthetic mels were made with another one
    with pytest.raises(UserError, match="fmax_hz: expected 8000.0, found 11025.0"):
        run_task(other, tmp_path / "refused")
    with caplog.at_level(logging.INFO, logger="tagretrieval.tasks"):
        found = run_task([*other, "audio.fmax_hz=null"], tmp_path)
    assert all(hit["track_id"].startswith("track") for hit in found["low"])  # the synthetic dataset's ids
    assert any("as given (data=...)" in r.message and "the checkpoint was trained on 'folder'" in r.message
               for r in caplog.records)


def test_a_model_other_than_the_checkpoints_is_refused(trained, tmp_path):
    with pytest.raises(ConfigError, match="holds a model=acoustic, but model=hybrid was given"):
        run_task(["mode=test", f"ckpt_path={trained}", "model=hybrid"], tmp_path)
