"""Per-tag metrics against scikit-learn, naive oracles and hand cases (ties, single-class tags)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from tagretrieval.evaluation import average_precision, per_tag_metrics, precision_at_k, roc_auc
from tagretrieval.evaluation.metric_keys import PR_AUC, ROC_AUC, metrics, p_at


# naive oracles, one tag at a time
def auc_by_pair_counting(scores: np.ndarray, relevance: np.ndarray) -> float:
    positive, negative = scores[relevance], scores[~relevance]
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    wins = 0.0
    for p in positive:
        wins += (p > negative).sum() + 0.5 * (p == negative).sum()
    return wins / (positive.size * negative.size)


def ap_by_thresholds(scores: np.ndarray, relevance: np.ndarray) -> float:
    """Precision at each distinct score (retrieving everything scored >= it), weighted by recall gain."""
    n_positives = relevance.sum()
    if n_positives == 0:
        return float("nan")
    ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        retrieved = scores >= threshold
        true_positives = (retrieved & relevance).sum()
        recall = true_positives / n_positives
        ap += (recall - previous_recall) * true_positives / retrieved.sum()
        previous_recall = recall
    return ap


def precision_at_k_by_stable_sort(scores: np.ndarray, relevance: np.ndarray, k: int) -> float:
    top = sorted(range(scores.size), key=lambda song: (-scores[song], song))[:k]
    return relevance[top].mean()


def make_case(name: str, n_tags: int, n_songs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``scores [n_tags, n_songs]`` and relevance with >= 1 positive and >= 1 negative per tag."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n_tags, n_songs))
    if name == "heavy_ties":  # few large tie groups
        scores = np.round(scores, 1)
    elif name == "light_ties":  # many tie groups of two or three songs
        scores = np.round(scores, 3)
    elif name == "all_tied":
        scores = np.full((n_tags, n_songs), 0.25)
    elif name == "mixed":  # some rows continuous, some with two distinct values, one constant
        scores[1::3] = np.round(scores[1::3] > 0)
        scores[2] = -1.0
    prevalence = rng.uniform(0.05, 0.6, size=(n_tags, 1))
    relevance = rng.random((n_tags, n_songs)) < prevalence
    songs = rng.permutation(n_songs)
    relevance[:, songs[0]] = True
    relevance[:, songs[1]] = False
    return scores, relevance


CASES = [
    ("continuous", 11, 7, 0),
    ("continuous", 37, 1001, 1),
    ("heavy_ties", 11, 7, 2),
    ("heavy_ties", 37, 1001, 3),
    ("light_ties", 37, 1001, 6),
    ("all_tied", 5, 50, 4),
    ("mixed", 13, 61, 5),
]


@pytest.fixture(params=CASES, ids=[f"{name}-{t}x{n}" for name, t, n, _ in CASES])
def case(request) -> tuple[np.ndarray, np.ndarray]:
    return make_case(*request.param)


def test_roc_auc_equals_sklearn_and_pair_counting(case):
    scores, relevance = case
    got = roc_auc(scores, relevance)
    assert got.shape == (scores.shape[0],) and got.dtype == np.float64
    for i in range(scores.shape[0]):
        assert got[i] == pytest.approx(roc_auc_score(relevance[i], scores[i]), abs=1e-6)
        assert got[i] == pytest.approx(auc_by_pair_counting(scores[i], relevance[i]), abs=1e-9)


def test_average_precision_equals_sklearn_and_threshold_oracle(case):
    scores, relevance = case
    got = average_precision(scores, relevance)
    for i in range(scores.shape[0]):
        assert got[i] == pytest.approx(average_precision_score(relevance[i], scores[i]), abs=1e-6)
        assert got[i] == pytest.approx(ap_by_thresholds(scores[i], relevance[i]), abs=1e-9)


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_precision_at_k_breaks_ties_by_lower_song_index(case, k):
    scores, relevance = case
    got = precision_at_k(scores, relevance, k=k)
    expected = [precision_at_k_by_stable_sort(s, r, k) for s, r in zip(scores, relevance)]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_per_tag_metrics_matches_the_single_metric_functions(case):
    scores, relevance = case
    per_tag = per_tag_metrics(scores, relevance, k=3)
    assert tuple(per_tag) == metrics(3) == (ROC_AUC, PR_AUC, p_at(3))  # P@k is named by its k
    np.testing.assert_array_equal(per_tag[ROC_AUC], roc_auc(scores, relevance))
    np.testing.assert_array_equal(per_tag[PR_AUC], average_precision(scores, relevance))
    np.testing.assert_array_equal(per_tag[p_at(3)], precision_at_k(scores, relevance, k=3))
    assert p_at(scores.shape[1]) in per_tag_metrics(scores, relevance, k=scores.shape[1] + 5)  # k capped at n_songs


def test_torch_tensors_give_the_same_metrics_as_numpy():
    scores, relevance = make_case("heavy_ties", 6, 40, seed=7)
    scores = scores.astype(np.float32)
    from_numpy = per_tag_metrics(scores, relevance.astype(np.int64))
    from_torch = per_tag_metrics(torch.from_numpy(scores), torch.from_numpy(relevance.astype(np.float32)))
    for name in metrics(10):
        np.testing.assert_array_equal(from_torch[name], from_numpy[name])


# hand cases: [n_tags=1, n_songs]
def one_tag(scores: list[float], relevance: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([scores], dtype=float), np.array([relevance])


def test_perfect_ranking_scores_one_and_reversed_ranking_zero_auc():
    scores, relevance = one_tag([4, 3, 2, 1], [1, 1, 0, 0])
    assert roc_auc(scores, relevance)[0] == 1.0
    assert average_precision(scores, relevance)[0] == 1.0
    scores, relevance = one_tag([4, 3, 2, 1], [0, 0, 1, 1])
    assert roc_auc(scores, relevance)[0] == 0.0
    assert average_precision(scores, relevance)[0] == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_all_tied_scores_give_chance_auc_and_prevalence_ap():
    scores, relevance = one_tag([0.3] * 8, [1, 0, 0, 1, 0, 0, 0, 1])
    assert roc_auc(scores, relevance)[0] == 0.5
    assert average_precision(scores, relevance)[0] == pytest.approx(3 / 8)


def test_tied_positive_and_negative_count_one_half_and_share_precision():
    scores, relevance = one_tag([1.0, 0.5, 0.5, 0.0], [0, 1, 0, 1])
    # pairs: (0.5 vs 1.0) 0, (0.5 vs 0.5) 1/2, (0.0 vs 1.0) 0, (0.0 vs 0.5) 0
    assert roc_auc(scores, relevance)[0] == pytest.approx(0.5 / 4)
    # the tied pair is retrieved together: precision 1/3 at recall 1/2, then 2/4 at recall 1
    assert average_precision(scores, relevance)[0] == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 4)


def test_a_tag_with_a_single_positive():
    scores, relevance = one_tag([0.9, 0.8, 0.7, 0.6, 0.5], [0, 1, 0, 0, 0])
    assert roc_auc(scores, relevance)[0] == pytest.approx(3 / 4)
    assert average_precision(scores, relevance)[0] == pytest.approx(1 / 2)
    assert precision_at_k(scores, relevance, k=2)[0] == pytest.approx(1 / 2)


def test_single_class_tags_are_nan_not_zero():
    scores = np.array([[0.1, 0.5, 0.9], [0.1, 0.5, 0.9], [0.1, 0.5, 0.9]])
    relevance = np.array([[0, 0, 0], [1, 1, 1], [0, 1, 0]])
    auc = roc_auc(scores, relevance)
    ap = average_precision(scores, relevance)
    assert np.isnan(auc[0]) and np.isnan(auc[1]) and auc[2] == 0.5
    assert np.isnan(ap[0]) and ap[1] == 1.0 and ap[2] == 0.5


def test_precision_at_k_hand_case():
    scores, relevance = one_tag([0.9, 0.1, 0.8, 0.7, 0.2], [1, 0, 0, 1, 1])
    assert precision_at_k(scores, relevance, k=3)[0] == pytest.approx(2 / 3)  # songs 0, 2, 3


def test_precision_at_k_takes_tied_songs_in_index_order():
    # songs 0, 1, 2 tie; the top 2 are songs 0 and 1, whatever the sort does inside the tie
    scores = np.array([[0.5, 0.5, 0.5, 0.1]] * 3)
    relevance = np.array([[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 1, 0]])
    np.testing.assert_allclose(precision_at_k(scores, relevance, k=2), [0.0, 0.5, 0.5])


def test_precision_at_k_larger_than_n_songs_uses_n_songs():
    scores, relevance = one_tag([0.4, 0.3, 0.2, 0.1], [1, 0, 1, 0])
    assert precision_at_k(scores, relevance, k=10)[0] == 0.5


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_precision_at_k_rejects_a_bad_k(k):
    scores, relevance = one_tag([0.4, 0.3], [1, 0])
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(scores, relevance, k=k)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_rejected_naming_the_first_tag(bad):
    scores, relevance = make_case("continuous", 5, 9, seed=8)
    scores[3, 4] = bad
    scores[2, 0] = bad
    with pytest.raises(ValueError, match=r"2 NaN/inf value\(s\) in 2 tag\(s\); first bad tag index: 2"):
        per_tag_metrics(scores, relevance)


@pytest.mark.parametrize(
    "scores_shape, relevance_shape", [((3, 5), (3, 4)), ((3, 5), (5, 3)), ((5,), (5,)), ((2, 3, 4), (2, 3, 4))]
)
def test_bad_shapes_are_rejected(scores_shape, relevance_shape):
    with pytest.raises(ValueError, match=r"\[n_tags, n_songs\]"):
        roc_auc(np.zeros(scores_shape), np.zeros(relevance_shape))


def test_non_binary_relevance_is_rejected():
    scores, relevance = one_tag([0.4, 0.3, 0.2], [1, 0, 2])
    with pytest.raises(ValueError, match="relevance must be 0/1"):
        average_precision(scores, relevance)


def test_large_inputs_sorted_in_threads_match_scikit_learn():
    # above the size where rows are sorted in several threads: same values as the per-tag scikit-learn loop
    rng = np.random.default_rng(7)
    relevance = rng.random((24, 10_000)) < 0.05
    scores = np.round(rng.standard_normal((24, 10_000)) + relevance, 2)
    ours = per_tag_metrics(scores, relevance)
    for t in range(0, 24, 5):
        assert abs(ours["roc_auc"][t] - roc_auc_score(relevance[t], scores[t])) < 1e-12
        assert abs(ours["pr_auc"][t] - average_precision_score(relevance[t], scores[t])) < 1e-12


def test_metrics_in_blocks_of_tags_equal_one_pass(monkeypatch):
    # evaluation ranks tags in blocks (memory for one block at 1,000 tags x 200,000 songs); a block boundary
    # must not change any value, ties and float32 inputs included
    from tagretrieval.evaluation import metrics as metrics_module

    rng = np.random.default_rng(3)
    relevance = rng.random((23, 301)) < 0.2
    scores = np.round(rng.standard_normal((23, 301)) + relevance, 1).astype(np.float32)  # many ties
    whole = per_tag_metrics(scores, relevance, k=5)
    monkeypatch.setattr(metrics_module, "BLOCK_ELEMENTS", 301 * 4)  # blocks of 4 tags: 6 blocks, the last short
    blocks = per_tag_metrics(scores, relevance, k=5)
    assert whole.keys() == blocks.keys()
    for name in whole:
        np.testing.assert_array_equal(whole[name], blocks[name])
