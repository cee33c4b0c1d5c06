"""Song-wise (sample-wise) auto-tagging metrics: each song ranks the tags; checked against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tagretrieval.evaluation import RetrievalResults, metrics as metrics_module, song_wise_metrics
from tagretrieval.evaluation.metric_keys import PR_AUC, ROC_AUC


def _data(n_tags: int, n_songs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n_tags, n_songs)), 1).astype(np.float32)  # one decimal: many ties
    relevance = rng.random((n_tags, n_songs)) < 0.35
    relevance[:, 0] = False           # a song without tags
    relevance[:, 1] = True            # a song with every tag
    relevance[0, 2], relevance[1:, 2] = True, False  # a song with exactly one tag
    return scores, relevance


@pytest.mark.parametrize("shape", [(11, 7), (7, 13), (3, 40)])
def test_song_wise_metrics_equal_scikit_learn_per_song(shape):
    scores, relevance = _data(*shape, seed=sum(shape))
    found = song_wise_metrics(scores, relevance)
    for j in range(shape[1]):
        y_true, y_score = relevance[:, j], scores[:, j]
        if y_true.all() or not y_true.any():
            assert np.isnan(found[ROC_AUC][j])
        else:
            assert found[ROC_AUC][j] == pytest.approx(roc_auc_score(y_true, y_score), abs=1e-12)
        if y_true.any():
            assert found[PR_AUC][j] == pytest.approx(average_precision_score(y_true, y_score), abs=1e-12)
        else:
            assert np.isnan(found[PR_AUC][j])


def test_song_wise_metrics_are_the_same_in_blocks(monkeypatch):
    scores, relevance = _data(9, 31, seed=3)
    whole = song_wise_metrics(scores, relevance)
    monkeypatch.setattr(metrics_module, "BLOCK_ELEMENTS", 20)  # blocks of 2 songs (20 // 9)
    blocked = song_wise_metrics(scores, relevance)
    for name in (ROC_AUC, PR_AUC):
        np.testing.assert_array_equal(whole[name], blocked[name])


def test_results_hold_the_song_wise_means_next_to_the_per_tag_ones(tmp_path):
    scores, relevance = _data(6, 25, seed=5)
    tags, categories = [f"t{i}" for i in range(6)], ["a", "a", "b", "b", "b", "c"]
    results = RetrievalResults.compute(scores=scores, relevance=relevance, tags=tags, categories=categories,
                                       split="test")
    usable = [j for j in range(25) if 0 < relevance[:, j].sum() < 6]
    # scikit-learn's "samples" average is the mean over songs, here of the songs that have both kinds of tag
    expected_roc = roc_auc_score(relevance[:, usable].T, scores[:, usable].T, average="samples")
    expected_ap = average_precision_score(relevance[:, usable].T, scores[:, usable].T, average="samples")
    assert results.song_wise[ROC_AUC] == pytest.approx(expected_roc, abs=1e-12)
    assert results.song_wise[PR_AUC] == pytest.approx(expected_ap, abs=1e-12)
    n_empty, n_full = int((relevance.sum(0) == 0).sum()), int((relevance.sum(0) == 6).sum())
    assert results.song_wise["n_songs"] == len(usable) == 25 - n_empty - n_full
    assert results.song_wise["skipped_songs"] == {"no tag": n_empty, "every tag": n_full}
    assert "song-wise (each song ranks the tags)" in results.table()
    assert results.flat()["test/song_roc_auc"] == results.song_wise[ROC_AUC]
    assert RetrievalResults.from_json(results.to_json(tmp_path / "test.json")) == results
