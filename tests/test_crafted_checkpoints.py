"""A checkpoint may come from anyone (issue 17, items 1-3): the paths a crafted file holds are never written to,
deleted at, copied from or loaded from (its data config, a resumed run's best checkpoint, a sentence encoder's model
and cache); an honest checkpoint keeps working as before."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_main, run_task

from tagretrieval.inference import Searcher
from tagretrieval.inference.search import encoder_from_spec
from tagretrieval.runtime.errors import ConfigError, DataError
from tagretrieval.tags.sentence import DEFAULT_MODEL
from tagretrieval.tasks import checkpoint_settings
from tagretrieval.training.callbacks import BestCheckpoint
from tagretrieval.training.checkpoints import load_module

SENTENCE = "tagretrieval.tags.sentence.SentenceEncoder"


def tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under ``folder`` -> (mode, content); folders and links with empty content."""
    out = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        out[str(path.relative_to(folder))] = (mode, path.read_bytes() if stat.S_ISREG(mode) else b"")
    return out


def crafted(source: Path, target: Path, edit) -> Path:
    """A copy of the checkpoint ``source``, weights-only as anyone can write it, changed by ``edit(checkpoint)``."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    edit(checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target)
    return target


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A user's folder holding files with the names of a prepared import (what the crafted file aims at)."""
    folder = tmp_path / "home" / "work"
    (folder / "mels").mkdir(parents=True)
    for name in ("features.npy", "tracks.csv", "labels.npy", "notes.txt", "mels/index.json"):
        (folder / name).write_text(f"the user's own {name}\n")
    return folder


# -- item 1: the data paths a checkpoint remembers are only read --------------------------------------------------
def test_a_crafted_data_config_writes_nothing_at_its_paths(trained_run, tmp_path, user_folder):
    def aim(checkpoint):
        data = checkpoint["hyper_parameters"]["data_config"]["data"]
        data.update(root=str(tmp_path / "home" / "generated"), prepared_dir=str(user_folder))

    path = crafted(trained_run / "checkpoints" / "best.ckpt", tmp_path / "downloads" / "crafted.ckpt", aim)
    before = tree(tmp_path / "home")
    with pytest.raises(DataError) as error:
        run_task(["mode=test", f"ckpt_path={path}", "progress=false", "logger=none"], tmp_path / "run")
    message = str(error.value)
    assert "\n" not in message and "trust_checkpoint_paths=true" in message and "data.root=" in message
    assert str(user_folder) in message and str(tmp_path / "home" / "generated") in message
    assert tree(tmp_path / "home") == before  # nothing generated, imported, overwritten or locked


def test_a_crafted_data_config_through_main_is_one_error_line(trained_run, tmp_path, user_folder):
    def aim(checkpoint):
        checkpoint["hyper_parameters"]["data_config"]["data"].update(root=str(user_folder),
                                                                     prepared_dir=str(user_folder / "prepared"))

    path = crafted(trained_run / "checkpoints" / "best.ckpt", tmp_path / "downloads" / "crafted.ckpt", aim)
    before = tree(user_folder)
    done = run_main(["mode=test", f"ckpt_path={path}", "progress=false", "logger=none",
                     f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "trust_checkpoint_paths" in done.stderr
    assert tree(user_folder) == before


def test_process_counts_from_a_checkpoint_are_ignored(trained_run, tmp_path):
    def aim(checkpoint):
        checkpoint["hyper_parameters"]["data_config"]["data"]["num_workers"] = 10**6

    path = crafted(trained_run / "checkpoints" / "best.ckpt", tmp_path / "crafted.ckpt", aim)
    overrides = ["mode=test", f"ckpt_path={path}"]
    cfg = checkpoint_settings(compose_config(overrides, tmp_path), overrides)
    assert cfg.data.num_workers == 0 and cfg.data_read_only
    trusted = checkpoint_settings(compose_config([*overrides, "trust_checkpoint_paths=true"], tmp_path), overrides)
    assert trusted.data.num_workers == 10**6 and not trusted.data_read_only  # the user trusts the file


def test_an_honest_checkpoint_reads_its_prepared_data_without_data(trained_run, tmp_path, synthetic_root):
    before = tree(synthetic_root)
    results = run_task(["mode=test", f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", "progress=false",
                        "logger=none"], tmp_path / "run")
    assert results is not None and (tmp_path / "run" / "metrics" / "test.json").is_file()
    assert tree(synthetic_root) == before


# -- item 2: resuming a crafted last.ckpt copies nothing but the old run's best checkpoint ------------------------
@pytest.fixture
def private_key(tmp_path) -> Path:
    key = tmp_path / "home" / ".ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    key.chmod(0o600)
    return key


def restore(tmp_path: Path, *, best: Path, dirpath: Path) -> BestCheckpoint:
    callback = BestCheckpoint(dirpath=str(tmp_path / "new_run" / "checkpoints"))
    callback.load_state_dict({"dirpath": str(dirpath), "best_model_path": str(best), "best_model_score":
                              torch.tensor(0.9), "best_k_models": {str(best): torch.tensor(0.9)},
                              "kth_best_model_path": str(best), "kth_value": torch.tensor(0.9),
                              "last_model_path": str(best)})
    return callback


def test_the_best_checkpoint_of_the_resumed_run_is_copied(tmp_path, trained_run):
    old = tmp_path / "old_run" / "checkpoints"
    old.mkdir(parents=True)
    (old / "best.ckpt").write_bytes((trained_run / "checkpoints" / "best.ckpt").read_bytes())
    callback = restore(tmp_path, best=old / "best.ckpt", dirpath=old)
    copied = tmp_path / "new_run" / "checkpoints" / "best.ckpt"
    assert copied.read_bytes() == (old / "best.ckpt").read_bytes() and callback.best_model_path == str(copied)
    assert float(callback.best_model_score) == pytest.approx(0.9)


@pytest.mark.parametrize("case", ["elsewhere", "other_name", "symlink", "not_a_checkpoint"])
def test_a_best_path_that_is_not_the_old_runs_best_checkpoint_is_not_copied(tmp_path, private_key, case, caplog):
    old = tmp_path / "old_run" / "checkpoints"
    old.mkdir(parents=True)
    best, dirpath = {"elsewhere": (private_key, old), "other_name": (old / "id_ed25519", old),
                     "symlink": (old / "best.ckpt", old),
                     "not_a_checkpoint": (private_key.parent / "best.ckpt", private_key.parent)}[case]
    if case in ("other_name", "not_a_checkpoint"):
        best.write_bytes(private_key.read_bytes())
    if case == "symlink":
        best.symlink_to(private_key)
    callback = restore(tmp_path, best=best, dirpath=dirpath)
    assert not (tmp_path / "new_run").exists()
    assert callback.best_model_path == "" and callback.best_model_score is None and not callback.best_k_models
    assert callback.kth_best_model_path == "" and callback.last_model_path == ""  # nothing later loaded or deleted
    assert "is not copied" in caplog.text


def test_resuming_a_crafted_last_checkpoint_through_main_copies_no_private_file(trained_run, tmp_path,
                                                                                 smoke_overrides, private_key):
    def aim(checkpoint):
        (key,) = [k for k in checkpoint["callbacks"] if k.startswith("BestCheckpoint")]
        checkpoint["callbacks"][key].update(best_model_path=str(private_key), dirpath=str(private_key.parent),
                                            kth_best_model_path=str(private_key),
                                            best_k_models={str(private_key): torch.tensor(1.0)})

    path = crafted(trained_run / "checkpoints" / "last.ckpt", tmp_path / "downloads" / "last.ckpt", aim)
    before = tree(private_key.parent)
    done = run_main([*smoke_overrides, "logger=none", "trainer.max_epochs=3", f"ckpt_path={path}",
                     f"hydra.run.dir={tmp_path / 'run'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "is not copied" in done.stdout + done.stderr
    secret = private_key.read_bytes()
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert tree(private_key.parent) == before  # neither deleted (as a replaced k-th best) nor changed
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()  # this run's own best


# -- item 3: a sentence encoder's model and cache come from the run, never from the file -------------------------
def test_a_checkpoint_cannot_choose_the_sentence_model_to_load(trained_run, tmp_path):
    module = load_module(trained_run / "checkpoints" / "best.ckpt")
    module.hparams["tag_encoder"] = {"_target_": SENTENCE, "model": str(tmp_path / "downloads" / "model"),
                                     "dim": 384, "cache_dir": str(tmp_path / "home"), "batch_size": 64,
                                     "device": "cpu", "drop_missing": False}
    with pytest.raises(ConfigError, match="tag_encoder.model="):
        Searcher.from_module(module)
    # the same model given by the user on the command line (cfg.tag_encoder) is theirs to load
    local = {**module.hparams["tag_encoder"], "cache_dir": str(tmp_path / "cache")}
    encoder = encoder_from_spec(module.hparams["tag_encoder"], local=local)
    assert encoder.model == local["model"] and encoder.cache_dir == tmp_path / "cache"


def test_a_checkpoint_cannot_choose_the_sentence_cache(tmp_path):
    spec = {"_target_": SENTENCE, "model": DEFAULT_MODEL, "dim": 384, "cache_dir": str(tmp_path / "home"),
            "batch_size": 64, "device": "cpu", "drop_missing": False}
    assert encoder_from_spec(spec).cache_dir == Path("data/sentence_encoder")  # the built-in default
    local = {**spec, "cache_dir": str(tmp_path / "mine")}
    assert encoder_from_spec(spec, local=local).cache_dir == tmp_path / "mine"  # the run's setting
    other = {"_target_": "tagretrieval.tags.encoders.Cooccurrence"}  # a run configured for another encoder
    assert encoder_from_spec(spec, local=other).cache_dir == Path("data/sentence_encoder")
