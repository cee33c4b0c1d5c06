"""`python main.py` end to end on the tiny synthetic data: outputs, reproducibility, checkpoints, resuming."""

import json

import numpy as np
import pytest
import torch

import tagretrieval
from tagretrieval.evaluation import metric_keys
from tagretrieval.training.module import TagRetrievalModule

from conftest import read_metrics, run_main, run_task


def test_train_writes_metrics_checkpoints_and_logs(trained_run):
    metrics = read_metrics(trained_run)
    assert set(metrics) == {"split", "n_songs", "k", "macro", "per_category", "per_tag", "skipped_tags", "notes",
                            "song_wise"}
    assert set(metrics["macro"]) == set(metric_keys.metrics(10)) and metrics["k"] == 10
    assert set(metrics["per_category"]) == {"instrument", "tempo", "mood", "location", "era"}
    for values in metrics["per_category"].values():
        assert set(values) == {*metric_keys.metrics(10), "n_tags"}
    for tag, values in metrics["per_tag"].items():
        assert values["n_positives"] > 0 and 0.0 <= values[metric_keys.ROC_AUC] <= 1.0
    assert metrics["n_songs"] > 0
    assert (trained_run / "metrics" / "test_per_tag.csv").exists()
    assert (trained_run / "checkpoints" / "best.ckpt").exists()
    assert (trained_run / "checkpoints" / "last.ckpt").exists()
    assert (trained_run / "prepare_report.json").exists()
    assert list((trained_run / "csv").glob("metrics.csv"))


def test_same_seed_gives_identical_test_metrics(tmp_path, smoke_overrides, trained_run):
    run_task(smoke_overrides, tmp_path)
    assert read_metrics(tmp_path) == read_metrics(trained_run)


def test_mode_test_on_best_checkpoint_reproduces_the_training_run(tmp_path, smoke_overrides, trained_run):
    run_task([*smoke_overrides, "mode=test", f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}"], tmp_path)
    assert read_metrics(tmp_path) == read_metrics(trained_run)


def test_checkpoint_reloads_without_config_tree(trained_run):
    path = trained_run / "checkpoints" / "best.ckpt"
    lightning_module = TagRetrievalModule.load_from_checkpoint(path, map_location="cpu").eval()
    model = tagretrieval.load_model(path)
    assert not model.training
    torch.manual_seed(0)
    mel, cf = torch.randn(3, 128, 300), torch.randn(3, model.cf_dim)
    with torch.no_grad():
        songs_a = lightning_module.model.embed_songs(mel=mel, cf=cf)
        songs_b = model.embed_songs(mel=mel, cf=cf)
        tags_a = lightning_module.tag_embeddings()
        tags_b = model.embed_tags(lightning_module.tag_vectors)
    assert torch.equal(songs_a, songs_b) and torch.equal(tags_a, tags_b)
    assert set(read_metrics(trained_run)["per_tag"]) <= set(lightning_module.tags)


def test_resume_from_last_checkpoint_continues_training(tmp_path, smoke_overrides, trained_run):
    last = trained_run / "checkpoints" / "last.ckpt"
    before = torch.load(last, map_location="cpu", weights_only=True)
    run_task([*smoke_overrides, f"ckpt_path={last}", "trainer.max_epochs=3"], tmp_path)
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert before["epoch"] == 1 and after["epoch"] == 2
    assert after["global_step"] == 3 * before["global_step"] // 2
    changed = [k for k in before["state_dict"] if not torch.equal(before["state_dict"][k], after["state_dict"][k])]
    assert changed


def test_cultural_and_acoustic_models_and_infonce_run(tmp_path, smoke_overrides):
    for i, extra in enumerate([["model=cultural", "sampler=random"], ["model=acoustic", "loss=infonce"],
                               ["model=concat", "sampler=balanced", "tag_encoder=learned"]]):
        results = run_task([*smoke_overrides, *extra], tmp_path / str(i))
        assert np.isfinite(list(results.macro.values())).all()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_single_process(tmp_path, smoke_overrides, trained_run):
    best = trained_run / "checkpoints" / "best.ckpt"
    args = [*smoke_overrides, "mode=test", f"ckpt_path={best}", "trainer=ddp", "trainer.devices=2",
            "trainer.accelerator=cpu", "trainer.precision=32-true",  # as the single-process run (ddp: bf16-mixed)
            f"hydra.run.dir={tmp_path / 'ddp_test'}"]
    done = run_main(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_metrics(tmp_path / "ddp_test") == read_metrics(trained_run)
    # training under DDP runs too, and each rank draws its own pairs
    done = run_main([*smoke_overrides, "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                     f"hydra.run.dir={tmp_path / 'ddp_train'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_metrics(tmp_path / "ddp_train")["n_songs"] == read_metrics(trained_run)["n_songs"]


def test_bad_config_choices_and_missing_paths_are_clear(tmp_path):
    done = run_main(["model=transformer", f"hydra.run.dir={tmp_path}"])
    assert done.returncode != 0
    assert "acoustic" in done.stderr and "hybrid" in done.stderr
    done = run_main(["mode=fly", f"hydra.run.dir={tmp_path}"])
    assert done.returncode != 0 and "train, test, prepare" in done.stderr
    done = run_main(["data=folder", f"data.root={tmp_path / 'no_such_folder'}", f"hydra.run.dir={tmp_path}"])
    assert done.returncode != 0 and "no_such_folder" in done.stderr
    done = run_main(["data=folder", f"hydra.run.dir={tmp_path}"])
    assert done.returncode != 0 and "data.root" in done.stderr


def test_mode_test_evaluates_a_reference_checkpoint(tmp_path, smoke_overrides):
    from test_reference_import import RefAudioModel, randomize, save_lightning_checkpoint

    reference = randomize(RefAudioModel(), seed=0)
    save_lightning_checkpoint(reference, tmp_path / "ref.ckpt")
    results = run_task([*smoke_overrides, "mode=test", f"ckpt_path={tmp_path / 'ref.ckpt'}"], tmp_path / "run")
    metrics = read_metrics(tmp_path / "run")
    assert metrics["macro"] == results.macro and metrics["n_songs"] > 0
    # random weights: retrieval near chance, but every scorable tag is scored
    assert 0.3 < metrics["macro"]["roc_auc"] < 0.7
