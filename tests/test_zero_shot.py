"""The zero-shot protocol (eval.unseen_tags): held-out tags never reach training, and are evaluated apart."""

from __future__ import annotations

import numpy as np
import pytest

from batch_recorder import read_records
from tagretrieval.training.checkpoints import load_module
from tagretrieval.runtime.errors import ConfigError, DataError, MissingFileError
from tagretrieval.evaluation.unseen import choose_unseen_tags

from conftest import read_metrics, run_task

TAGS = ["piano", "strings", "flute", "slow", "fast", "happy", "sad", "solo"]
CATEGORIES = ["instrument", "instrument", "instrument", "tempo", "tempo", "mood", "mood", "other"]
UNSEEN = ["piano", "sad"]
BLOCK_KEYS = {"split", "n_songs", "k", "macro", "per_category", "per_tag", "skipped_tags", "notes", "song_wise"}


def test_unseen_tags_from_a_list_a_file_or_a_seeded_fraction_per_category(tmp_path):
    assert choose_unseen_tags(None, tags=TAGS, categories=CATEGORIES, seed=0) == []
    assert choose_unseen_tags(["sad", "piano"], tags=TAGS, categories=CATEGORIES, seed=0) == ["piano", "sad"]
    listing = tmp_path / "unseen.txt"
    listing.write_text("# held out\nflute\n\nfast  # a comment\n")
    assert choose_unseen_tags(str(listing), tags=TAGS, categories=CATEGORIES, seed=0) == ["flute", "fast"]
    drawn = choose_unseen_tags(0.5, tags=TAGS, categories=CATEGORIES, seed=3)
    assert drawn == choose_unseen_tags(0.5, tags=TAGS, categories=CATEGORIES, seed=3)  # seeded
    per_category = {c: sum(CATEGORIES[TAGS.index(t)] == c for t in drawn) for c in set(CATEGORIES)}
    # round(0.5 * 3) = 2 of 3 instruments, 1 of 2 tempi and moods, none of a category's only tag
    assert per_category == {"instrument": 2, "tempo": 1, "mood": 1, "other": 0}
    draws = {tuple(choose_unseen_tags(0.5, tags=TAGS, categories=CATEGORIES, seed=s)) for s in range(10)}
    assert len(draws) > 1
    with pytest.raises(ConfigError, match="'trumpet' not among the dataset's 8 tags"):
        choose_unseen_tags(["piano", "trumpet"], tags=TAGS, categories=CATEGORIES, seed=0)
    with pytest.raises(ConfigError, match="holds out all 8 tags"):
        choose_unseen_tags(TAGS, tags=TAGS, categories=CATEGORIES, seed=0)
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\)"):
        choose_unseen_tags(1.5, tags=TAGS, categories=CATEGORIES, seed=0)
    with pytest.raises(MissingFileError, match="no such file"):
        choose_unseen_tags(str(tmp_path / "absent.txt"), tags=TAGS, categories=CATEGORIES, seed=0)


@pytest.fixture(scope="module")
def word_vectors(tmp_path_factory, synthetic_root) -> str:
    """A word2vec text file of seeded 8-d vectors for every tag of the synthetic data (no meaning: a control)."""
    tags = [line.split(",")[0] for line in (synthetic_root / "tag_categories.csv").read_text().splitlines()[1:]]
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("vectors") / "tags.txt"
    path.write_text(f"{len(tags)} 8\n" + "".join(f"{t} " + " ".join(f"{v:.5f}" for v in rng.standard_normal(8))
                                                  + "\n" for t in tags))
    return str(path)


def test_unseen_tags_never_reach_a_training_batch_and_are_scored_in_their_own_block(tmp_path, smoke_overrides,
                                                                                    word_vectors):
    recorded = tmp_path / "batches.jsonl"
    run_task([*smoke_overrides, "tag_encoder=word2vec", f"tag_encoder.path={word_vectors}", "tag_encoder.dim=8",
              f"eval.unseen_tags=[{','.join(UNSEEN)}]",
              "+callbacks.recorder._target_=batch_recorder.BatchRecorder", f"+callbacks.recorder.path={recorded}"],
             tmp_path / "run")
    batches = read_records(recorded)
    assert len(batches) == 8  # 2 epochs x 64 pairs / 16: every training batch was recorded
    anchors = {name for batch in batches for name in batch["tag_names"]}
    assert anchors and not anchors & set(UNSEEN)  # the sampler's real output
    assert {batch["label_columns"] for batch in batches} == {18}  # the labels have no column for a held-out tag
    assert set(load_module(tmp_path / "run" / "checkpoints" / "best.ckpt").tags).isdisjoint(UNSEEN)

    metrics = read_metrics(tmp_path / "run")
    assert set(metrics) == BLOCK_KEYS | {"seen", "unseen"}
    assert set(metrics["seen"]) == set(metrics["unseen"]) == BLOCK_KEYS
    assert set(metrics["unseen"]["per_tag"]) | set(metrics["unseen"]["skipped_tags"]) == set(UNSEEN)
    assert set(metrics["per_tag"]) | set(metrics["skipped_tags"]) == set(metrics["seen"]["per_tag"]) | set(
        metrics["seen"]["skipped_tags"]) | set(UNSEEN)
    assert metrics["unseen"]["per_tag"]["piano"] == metrics["per_tag"]["piano"]  # the same scores, another average


@pytest.mark.parametrize("encoder, message", [
    ("cooccurrence", "co-occurrence vectors are learnt from the training tag lists, where a held-out tag never occurs"),
    ("learned", "a held-out tag's vector would stay random"),
])
def test_encoders_that_cannot_embed_an_unseen_tag_are_refused_before_training(tmp_path, smoke_overrides, encoder,
                                                                              message):
    with pytest.raises(DataError, match=message):
        run_task([*smoke_overrides, f"tag_encoder={encoder}", "eval.unseen_tags=[piano]"], tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_mode_test_refuses_unseen_tags(tmp_path, trained_run):
    with pytest.raises(ConfigError, match="applies to mode=train"):
        run_task(["mode=test", f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", "eval.unseen_tags=[piano]"],
                 tmp_path / "run")


@pytest.mark.parametrize("loss", ["multilabel", "triplet"])
def test_songs_left_without_a_training_tag_are_trained_on_as_negatives(tmp_path, smoke_overrides, synthetic_root,
                                                                       word_vectors, loss, caplog):
    """Holding out every tag but piano, drums and japan leaves many training songs with no training tag: they are
    never a positive, but every batch of a real fit carries some of them (all-zero label rows, after the pairs),
    and the recipe block counts them."""
    tags = [line.split(",")[0] for line in (synthetic_root / "tag_categories.csv").read_text().splitlines()[1:]]
    unseen = [t for t in tags if t not in ("piano", "drums", "japan")]
    recorded = tmp_path / "batches.jsonl"
    with caplog.at_level("INFO", logger="tagretrieval.tasks"):
        run_task([*smoke_overrides, "tag_encoder=word2vec", f"tag_encoder.path={word_vectors}", "tag_encoder.dim=8",
                  f"eval.unseen_tags=[{','.join(unseen)}]", f"loss={loss}", "sampler=random", "logger=none",
                  "+callbacks.recorder._target_=batch_recorder.BatchRecorder", f"+callbacks.recorder.path={recorded}"],
                 tmp_path / "run")
    batches = read_records(recorded)
    assert len(batches) == 8
    for batch in batches:
        n_pairs = len(batch["tags"])
        assert n_pairs == 16 and len(batch["rows"]) > n_pairs   # the pairs, then untagged songs
        assert all(n > 0 for n in batch["labels_per_row"][:n_pairs])
        assert all(n == 0 for n in batch["labels_per_row"][n_pairs:])
    assert np.isfinite(read_metrics(tmp_path / "run")["macro"]["roc_auc"])
    block = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("recipe ("))
    n_untagged = int(block.split(" untagged training songs used as negatives")[0].rsplit("; ", 1)[-1].replace(",", ""))
    assert n_untagged > 0 and "per batch)" in block
