"""Untrusted files: a crafted checkpoint cannot call our functions; word-vector pickles need trust (or converting)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import CONF, run_main, run_task
from gensim.models import Word2Vec

from tagretrieval.training.checkpoints import DATA_IMPORTERS, data_config, load_module, read_checkpoint
from tagretrieval.runtime.errors import DataError
from tagretrieval.models.spec import BUILDABLE
from tagretrieval.tags.encoders import UntrustedPickleError, Word2VecFile

WRITER = "tagretrieval.tags.prepared.write_prepared_vectors"  # would write word_vectors_<name>.npz anywhere


def crafted_spec(target_dir: Path) -> dict:
    """A spec that, if built, calls write_prepared_vectors(target_dir, "pwned", ...)."""
    return {"_target_": WRITER, "prepared_dir": str(target_dir), "name": "pwned", "tags": ["a"], "vectors": [[1.0]]}


def best_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.ckpt"


def conf_targets(group: str) -> set[str]:
    return {yaml.safe_load(p.read_text())["_target_"] for p in (CONF / group).glob("*.yaml")
            if "_target_" in yaml.safe_load(p.read_text())}


def test_every_configured_class_may_be_rebuilt_and_nothing_else():
    # a new model, loss, encoder or importer config must be added to the allow-lists (models/spec.py,
    # checkpoints.py) to be reloadable from a checkpoint
    assert conf_targets("model") | conf_targets("loss") | conf_targets("tag_encoder") == BUILDABLE
    assert conf_targets("data") == DATA_IMPORTERS


def test_a_crafted_model_spec_is_refused_through_main_and_writes_nothing(tmp_path):
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {
        "model": crafted_spec(tmp_path), "loss": {"_target_": "tagretrieval.training.losses.TripletLoss"},
        "tags": ["a"], "categories": ["all"], "word_dim": 1}}, path)
    assert read_checkpoint(path)  # plain containers: torch's weights_only loading accepts it
    done = run_main(["mode=test", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"refusing _target_ '{WRITER}'" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("word_vectors_*"))


def test_a_crafted_tag_encoder_or_data_config_is_refused(trained_run, tmp_path):
    checkpoint = torch.load(best_checkpoint(trained_run), weights_only=True)
    assert data_config(checkpoint)["data"]["_target_"] == "tagretrieval.data.synthetic.SyntheticImporter"
    crafted = {
        "tag_encoder": {**checkpoint, "hyper_parameters": {**checkpoint["hyper_parameters"],
                                                           "tag_encoder": crafted_spec(tmp_path)}},
        "data": {**checkpoint, "hyper_parameters": {**checkpoint["hyper_parameters"], "data_config": {
            **checkpoint["hyper_parameters"]["data_config"], "data": crafted_spec(tmp_path)}}},
        "nested": {**checkpoint, "hyper_parameters": {**checkpoint["hyper_parameters"], "data_config": {
            **checkpoint["hyper_parameters"]["data_config"],
            "data": {**checkpoint["hyper_parameters"]["data_config"]["data"], "root": crafted_spec(tmp_path)}}}},
    }
    expected = {"tag_encoder": f"refusing _target_ '{WRITER}'", "data": "refusing the checkpoint's data config",
                "nested": r"key '_target_' in data.root"}
    for name, content in crafted.items():
        path = tmp_path / f"{name}.ckpt"
        torch.save(content, path)
        with pytest.raises(DataError, match=expected[name]):
            run_task(["mode=retrieve", f"ckpt_path={path}", "query=piano", "progress=false"], tmp_path / name)
    assert not list(tmp_path.glob("word_vectors_*"))


# -- word-vector pickles --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gensim_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pickles")
    model = Word2Vec(sentences=[["sad", "piano"], ["happy", "guitar"], ["hip-hop", "beats"]] * 10, vector_size=8,
                     min_count=1, seed=1, workers=1, epochs=3)
    model.save(str(folder / "w.model"))
    model.wv.save(str(folder / "w.kv"))
    return model, folder


@pytest.mark.parametrize("name", ["w.model", "w.kv"])
def test_a_gensim_pickle_needs_trust_and_the_error_says_how_to_convert_it(gensim_files, name):
    model, folder = gensim_files
    with pytest.raises(UntrustedPickleError, match=r"python -m tagretrieval.tags.encoders convert .*w\.bin.*"
                                                   r"trust_pickles=true"):
        Word2VecFile(path=str(folder / name), dim=8).lookup("piano")
    trusted = Word2VecFile(path=str(folder / name), dim=8, trust_pickle=True)
    np.testing.assert_array_equal(trusted.lookup("piano"), model.wv["piano"])  # the same stored float32 values


@pytest.mark.parametrize("suffix", [".bin", ".txt"])
def test_the_convert_command_writes_a_file_that_loads_without_trust(gensim_files, tmp_path, suffix):
    model, folder = gensim_files
    target = tmp_path / f"converted{suffix}"
    done = subprocess.run([sys.executable, "-m", "tagretrieval.tags.encoders", "convert", str(folder / "w.model"),
                           str(target)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"wrote {target}" in done.stdout and not list(tmp_path.glob(".*"))  # no temp file left
    converted = Word2VecFile(path=str(target), dim=8)  # no trust needed
    for word in model.wv.index_to_key:
        if suffix == ".bin":  # binary: the float32 bytes themselves
            np.testing.assert_array_equal(converted.lookup(word), model.wv[word])
        else:  # text: gensim prints each float32 with repr(), which reads back to the same float32
            np.testing.assert_allclose(converted.lookup(word), model.wv[word], rtol=1e-6, atol=0)


def test_a_checkpoint_cannot_grant_trust_to_its_word_vectors(gensim_files, tmp_path, trained_run):
    """A checkpoint whose tag encoder says trust_pickle=True still may not load a pickle unless the run trusts it."""
    from tagretrieval.inference import Searcher

    _, folder = gensim_files
    module = load_module(best_checkpoint(trained_run))
    module.hparams["tag_encoder"] = {"_target_": "tagretrieval.tags.encoders.Word2VecFile",
                                     "path": str(folder / "w.model"), "dim": 8, "trust_pickle": True}
    searcher = Searcher.from_module(module)
    with pytest.raises(UntrustedPickleError):
        searcher.query_vector("sad guitar")


def test_a_pickle_tag_encoder_through_main_is_one_error_line(gensim_files, smoke_overrides, tmp_path):
    _, folder = gensim_files
    done = run_main([*smoke_overrides, "tag_encoder=word2vec", f"tag_encoder.path={folder / 'w.model'}",
                     "tag_encoder.dim=8", f"hydra.run.dir={tmp_path}"])
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        line for line in done.stderr.splitlines() if "python -m tagretrieval.tags.encoders convert" in line]
