"""Per-tag retrieval metrics: pure, vectorised functions on ``scores [n_tags, n_songs]``.

Each row of ``scores`` ranks every song for one tag (higher = more relevant); the same row of
``relevance`` says which songs carry the tag. Results are ``float64 [n_tags]``. The song-wise metrics of
auto-tagging (each song ranks the tags: :func:`song_wise_metrics`) are the same functions on the transposed
matrices, so both directions share one definition.

Why not scikit-learn: ``roc_auc_score`` / ``average_precision_score`` take one tag at a time, so a
test split of 100 tags x 20,000 songs costs 100 sorts plus Python overhead per call. Here one
``argsort`` of the whole matrix feeds all three metrics, and everything after it is flat array
arithmetic over tie groups (no loop over tags). The results equal scikit-learn's, ties included
(checked in ``tests/test_metrics.py`` against scikit-learn and a naive oracle).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from tagretrieval.evaluation.metric_keys import PR_AUC, ROC_AUC, p_at

ArrayLike = np.ndarray | torch.Tensor


BLOCK_ELEMENTS = 1 << 22
"""Tags are ranked in blocks of about this many scores (4M: ~200 MB of temporaries), so evaluating 1,000 tags x
200,000 songs needs the inputs plus one block, not six float64 copies of the whole matrix. Every tag's values are
the same as in one pass: tags are ranked independently."""


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # NumPy has no bfloat16; float32 holds both exactly
        return x.numpy()
    return np.asarray(x)


def to_arrays(scores: ArrayLike, relevance: ArrayLike, *, float64: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert inputs of the metrics below (NumPy arrays or torch tensors).

    Args:
        scores: ``float [n_tags, n_songs]``, finite.
        relevance: ``{0, 1} [n_tags, n_songs]``, bool or numeric.
        float64: convert the scores to float64 (else keep their dtype: no copy of a large float32 matrix).

    Returns:
        ``float64 [n_tags, n_songs]`` (or as given) scores and ``bool [n_tags, n_songs]`` relevance.

    Raises:
        ValueError: not 2-D, shapes differ, no songs, non-finite scores, relevance not in {0, 1}.
    """
    scores_np = _to_numpy(scores)
    relevance_np = _to_numpy(relevance)
    if scores_np.ndim != 2 or relevance_np.ndim != 2:
        raise ValueError(
            "scores and relevance must be 2-D [n_tags, n_songs], got shapes "
            f"{scores_np.shape} and {relevance_np.shape}"
        )
    if scores_np.shape != relevance_np.shape:
        raise ValueError(
            f"scores {scores_np.shape} and relevance {relevance_np.shape} must have the same "
            "shape [n_tags, n_songs]"
        )
    if scores_np.shape[0] == 0 or scores_np.shape[1] == 0:
        raise ValueError(f"need at least one tag and one song, got shape {scores_np.shape}")
    if not (np.issubdtype(scores_np.dtype, np.floating) or np.issubdtype(scores_np.dtype, np.integer)):
        raise ValueError(f"scores must be numeric, got dtype {scores_np.dtype}")
    if float64:
        scores_np = scores_np.astype(np.float64, copy=False)
    finite = np.isfinite(scores_np)
    if not finite.all():
        bad_tags = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"scores contain {int((~finite).sum())} NaN/inf value(s) in {bad_tags.size} tag(s); "
            f"first bad tag index: {int(bad_tags[0])}"
        )
    if relevance_np.dtype != np.bool_:
        is_binary = (relevance_np == 0) | (relevance_np == 1)
        if not is_binary.all():
            bad_tags = np.flatnonzero(~is_binary.all(axis=1))
            raise ValueError(
                f"relevance must be 0/1, found other values in {bad_tags.size} tag(s); "
                f"first bad tag index: {int(bad_tags[0])}"
            )
        relevance_np = relevance_np.astype(bool)
    return scores_np, relevance_np


@dataclass(frozen=True)
class _Ranking:
    """Songs of each tag sorted by descending score, and the per-tag sums ROC-AUC and AP need.

    Ranks are 0-based positions in the descending order. A tie group (a run of equal scores) is
    retrieved at once: its positives share the group's mean rank and the precision at its last
    song, so the order inside a group is irrelevant and the sort need not be stable.
    """

    sorted_scores: np.ndarray  # float64 [n_tags, n_songs], descending per row
    sorted_relevance: np.ndarray  # bool [n_tags, n_songs], in the same order
    n_positives: np.ndarray  # int64 [n_tags]
    mid_rank_sum: np.ndarray  # float64 [n_tags], sum over positives of their tie group's mean rank
    precision_sum: np.ndarray  # float64 [n_tags], sum over positives of precision at their group's end


def _argsort_rows(scores: np.ndarray) -> np.ndarray:
    """``np.argsort(scores, axis=1)``, rows split across threads (NumPy's sort releases the GIL).

    Each row is sorted on its own by the same algorithm, so the result is identical to one call; on 2 cores the
    sort, about half of the metrics' time for 100 x 20,000, takes about half as long.
    """
    n_threads = min(os.cpu_count() or 1, scores.shape[0])
    if n_threads < 2 or scores.size < 200_000:
        return np.argsort(scores, axis=1)
    order = np.empty(scores.shape, dtype=np.intp)
    bounds = np.linspace(0, scores.shape[0], n_threads + 1).astype(int)

    def sort(i: int) -> None:
        order[bounds[i]:bounds[i + 1]] = np.argsort(scores[bounds[i]:bounds[i + 1]], axis=1)

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        list(pool.map(sort, range(n_threads)))
    return order


def _rank(scores: np.ndarray, relevance: np.ndarray) -> _Ranking:
    """One argsort of ``scores [n_tags, n_songs]``; after it, flat array arithmetic over the
    positives (and over tie groups, when some scores tie).
    """
    n_tags, n_songs = scores.shape
    order = _argsort_rows(scores)[:, ::-1]  # ascending then reversed: faster than sorting -scores
    flat_order = (order + np.arange(n_tags)[:, None] * n_songs).ravel()
    sorted_scores = scores.ravel()[flat_order]  # [n_tags * n_songs]
    sorted_relevance = relevance.ravel()[flat_order]
    positive = np.flatnonzero(sorted_relevance)  # flat positions, tag after tag
    # the positives of tag t are positive[tag_start[t]:tag_start[t + 1]]
    tag_start = np.searchsorted(positive, np.arange(n_tags + 1) * n_songs)
    n_positives = np.diff(tag_start)
    row = np.repeat(np.arange(n_tags), n_positives)
    # The credit of every positive as if no score tied: its rank, and the precision at its rank.
    rank = positive - row * n_songs
    twice_rank = 2 * rank
    precision = (np.arange(1, positive.size + 1) - tag_start[row]) / (rank + 1)

    ties_next = np.empty(sorted_scores.size, dtype=bool)  # song i ties with song i + 1 of its tag
    np.equal(sorted_scores[1:], sorted_scores[:-1], out=ties_next[:-1])
    ties_next[n_songs - 1 :: n_songs] = False
    group_first = group_last = group_positives = positives_to_last = np.empty(0, dtype=np.int64)
    if ties_next.any():  # tied positives get their group's credit instead
        ties_prev = np.concatenate(([False], ties_next[:-1]))
        tied = np.flatnonzero(ties_next[positive] | ties_prev[positive])  # into positive, ascending
        twice_rank[tied] = 0
        precision[tied] = 0.0
        # songs where ties_next != ties_prev are, alternately, the first and last of a tie group
        all_first, all_last = np.flatnonzero(ties_next != ties_prev).reshape(-1, 2).T
        group_first, group_last, group_positives, positives_to_last = _groups_with_positives(
            positive=positive, tied=tied, all_first=all_first, all_last=all_last
        )
    group_tag_start = np.searchsorted(group_first, np.arange(n_tags + 1) * n_songs)
    group_row = np.repeat(np.arange(n_tags), np.diff(group_tag_start))
    first, last = group_first - group_row * n_songs, group_last - group_row * n_songs
    group_twice_mid_ranks = group_positives * (first + last)
    group_precisions = group_positives * (positives_to_last - tag_start[group_row]) / (last + 1)

    def per_tag(of_positives: np.ndarray, of_groups: np.ndarray) -> np.ndarray:
        return _sum_by_tag(of_positives, tag_start) + _sum_by_tag(of_groups, group_tag_start)

    return _Ranking(
        sorted_scores=sorted_scores.reshape(n_tags, n_songs),
        sorted_relevance=sorted_relevance.reshape(n_tags, n_songs),
        n_positives=n_positives,
        mid_rank_sum=per_tag(twice_rank, group_twice_mid_ranks) / 2,
        precision_sum=per_tag(precision, group_precisions),
    )


def _groups_with_positives(
    *, positive: np.ndarray, tied: np.ndarray, all_first: np.ndarray, all_last: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tie groups holding at least one positive song.

    Args:
        positive: ``[n_pos_total]`` ascending flat positions of the positive songs.
        tied: ``[n_tied]`` ascending indices into ``positive`` of the positives inside a tie group.
        all_first, all_last: ``[n_groups]`` flat positions of the first / last song of every tie group.

    Returns:
        ``group_first, group_last, group_positives, positives_to_last`` (``[n_kept]`` each): the
        positions, the number of positives inside, and the positives at or above the group's last song
        counted from tag 0. The binary search runs from whichever side is smaller.
    """
    if 2 * all_last.size <= tied.size:  # few large groups: find the positives of each group
        positives_to_last = np.searchsorted(positive, all_last, side="right")
        group_positives = positives_to_last - np.searchsorted(positive, all_first)
        keep = group_positives > 0
        return all_first[keep], all_last[keep], group_positives[keep], positives_to_last[keep]
    group = np.searchsorted(all_last, positive[tied])  # many small groups: find the group of each positive
    new_group = np.flatnonzero(np.diff(group, prepend=-1))  # into tied: first positive of each group
    group_positives = np.diff(new_group, append=tied.size)
    positives_to_last = tied[new_group + group_positives - 1] + 1
    return all_first[group[new_group]], all_last[group[new_group]], group_positives, positives_to_last


def _sum_by_tag(values: np.ndarray, tag_start: np.ndarray) -> np.ndarray:
    """Sums of ``values [n]`` grouped by tag: tag ``t`` owns ``values[tag_start[t]:tag_start[t + 1]]``."""
    sums = np.zeros(tag_start.size - 1)
    nonempty = np.flatnonzero(np.diff(tag_start))
    if nonempty.size:
        sums[nonempty] = np.add.reduceat(values, tag_start[nonempty])
    return sums


def _roc_auc(ranking: _Ranking) -> np.ndarray:
    # Mann-Whitney U with average ranks of tied groups (a tied pair counts one half). With 0-based
    # descending mid-ranks m, the ascending rank is n_songs - m, so
    # U = sum(n_songs - m) - P (P + 1) / 2 = P N - sum(m) + P (P - 1) / 2.
    n_positives = ranking.n_positives
    n_pairs = n_positives * (ranking.sorted_scores.shape[1] - n_positives)
    wins = n_pairs - ranking.mid_rank_sum + n_positives * (n_positives - 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pairs > 0, wins / n_pairs, np.nan)


def _average_precision(ranking: _Ranking) -> np.ndarray:
    # scikit-learn's step-wise AP: thresholds at distinct scores, so every positive of a tie group
    # takes the precision at the group's last song.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ranking.n_positives > 0, ranking.precision_sum / ranking.n_positives, np.nan)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def _precision_at_k(ranking: _Ranking, scores: np.ndarray, relevance: np.ndarray, k: int) -> np.ndarray:
    n_songs = scores.shape[1]
    k = min(k, n_songs)
    hits = ranking.sorted_relevance[:, :k].sum(axis=1, dtype=np.int64)
    # The unstable sort orders a tie group arbitrarily; only tags whose k-th and (k+1)-th songs tie
    # are affected. Recount those with the documented rule: lower song index first.
    if k < n_songs:
        straddling = np.flatnonzero(ranking.sorted_scores[:, k - 1] == ranking.sorted_scores[:, k])
        if straddling.size:
            threshold = ranking.sorted_scores[straddling, k - 1][:, None]  # [n_straddling, 1]
            above = scores[straddling] > threshold
            tied = scores[straddling] == threshold
            n_free = k - above.sum(axis=1, keepdims=True)
            taken = above | (tied & (np.cumsum(tied, axis=1) <= n_free))
            hits[straddling] = (relevance[straddling] & taken).sum(axis=1)
    return hits / k


def roc_auc(scores: ArrayLike, relevance: ArrayLike) -> np.ndarray:
    """ROC-AUC of each tag; equals ``sklearn.metrics.roc_auc_score`` row by row, ties included.

    Args:
        scores: ``float [n_tags, n_songs]``, higher means more relevant; NumPy array or torch tensor.
        relevance: ``{0, 1} [n_tags, n_songs]``.

    Returns:
        ``float64 [n_tags]``; NaN where a tag has no positive or no negative song.
    """
    return _roc_auc(_rank(*to_arrays(scores, relevance)))


def average_precision(scores: ArrayLike, relevance: ArrayLike) -> np.ndarray:
    """Average precision of each tag; equals ``sklearn.metrics.average_precision_score`` row by row.

    Step-wise (not interpolated), with thresholds at distinct scores: every song of a tie group is
    retrieved at once, so tied positives share the precision at the group's end.

    Args:
        scores: ``float [n_tags, n_songs]``.
        relevance: ``{0, 1} [n_tags, n_songs]``.

    Returns:
        ``float64 [n_tags]``; NaN where a tag has no positive song.
    """
    return _average_precision(_rank(*to_arrays(scores, relevance)))


def precision_at_k(scores: ArrayLike, relevance: ArrayLike, *, k: int = 10) -> np.ndarray:
    """Fraction of relevant songs among the top ``k`` of each tag.

    Ties: songs with equal scores are taken in order of song index, lowest first (as a stable sort
    of the descending scores would). ``k > n_songs`` uses ``n_songs``.

    Args:
        scores: ``float [n_tags, n_songs]``.
        relevance: ``{0, 1} [n_tags, n_songs]``.
        k: cut-off, >= 1.

    Returns:
        ``float64 [n_tags]`` in [0, 1]; 0.0 for a tag with no positive song.
    """
    _check_k(k)
    scores_np, relevance_np = to_arrays(scores, relevance)
    return _precision_at_k(_rank(scores_np, relevance_np), scores_np, relevance_np, k)


def per_tag_metrics(scores: ArrayLike, relevance: ArrayLike, *, k: int = 10) -> dict[str, np.ndarray]:
    """ROC-AUC, AP and precision@k of each tag from one shared descending sort.

    Args:
        scores: ``float [n_tags, n_songs]``.
        relevance: ``{0, 1} [n_tags, n_songs]``.
        k: precision cut-off; ``k > n_songs`` uses ``n_songs``, and the key names the cut-off used.

    Returns:
        ``{ROC_AUC, PR_AUC, p_at(min(k, n_songs))}`` -> ``float64 [n_tags]``, NaN as in the single-metric
        functions.
    """
    _check_k(k)
    scores_np, relevance_np = to_arrays(scores, relevance, float64=False)
    n_tags, n_songs = scores_np.shape
    name = p_at(min(k, n_songs))
    out = {ROC_AUC: np.empty(n_tags), PR_AUC: np.empty(n_tags), name: np.empty(n_tags)}
    step = max(1, BLOCK_ELEMENTS // n_songs)
    for start in range(0, n_tags, step):  # in blocks of tags: memory for one block, the same values
        block = slice(start, start + step)
        scores_block = scores_np[block].astype(np.float64)
        ranking = _rank(scores_block, relevance_np[block])
        out[ROC_AUC][block] = _roc_auc(ranking)
        out[PR_AUC][block] = _average_precision(ranking)
        out[name][block] = _precision_at_k(ranking, scores_block, relevance_np[block], k)
    return out


def song_wise_metrics(scores: ArrayLike, relevance: ArrayLike) -> dict[str, np.ndarray]:
    """ROC-AUC and AP of each song ranking the tags (auto-tagging's "sample-wise" metrics, song as the query).

    The per-tag functions on the transposed matrices: song ``j``'s values are those of a "tag" whose scores are
    column ``j`` of ``scores`` and whose positives are the tags the song carries. They equal
    ``sklearn.metrics.roc_auc_score`` / ``average_precision_score`` of each column, ties included.

    Args:
        scores: ``float [n_tags, n_songs]``, as for the per-tag metrics.
        relevance: ``{0, 1} [n_tags, n_songs]``.

    Returns:
        ``{ROC_AUC, PR_AUC}`` -> ``float64 [n_songs]``; NaN where a song carries no tag (ROC-AUC also where it
        carries every tag).
    """
    scores_np, relevance_np = to_arrays(scores, relevance, float64=False)
    per_song = per_tag_metrics(scores_np.T, relevance_np.T, k=1)  # blocks of songs; no copy of the whole matrix
    return {ROC_AUC: per_song[ROC_AUC], PR_AUC: per_song[PR_AUC]}
