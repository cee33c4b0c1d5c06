"""Triplet sampling: the pairs follow each strategy's distribution, negatives never carry the anchor tag."""

import numpy as np
import pytest
import torch

from tagretrieval.data.samplers import (
    UNTAGGED, BalancedPairSampler, BalancedWeightedPairSampler, EpochBatchSampler, PositiveIndex, RandomPairSampler,
    choose_negatives, untagged_per_batch,
)


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 7)) < 0.25).astype(np.uint8)
    labels[:, 0] = 0
    labels[:40, 0] = 1          # tag 0: very common (40 songs); tag 6: rare
    labels[:, 6] = 0
    labels[[3, 50], 6] = 1
    labels[59] = 0              # an untagged song: never a positive
    return labels


def test_pairs_are_true_positives_from_the_training_rows(labels):
    rows = np.arange(10, 60)
    index = PositiveIndex.from_labels(labels, rows)
    for sampler in (RandomPairSampler(batch_size=8), BalancedPairSampler(batch_size=8)):
        pairs = sampler.pairs(index, np.random.default_rng(1), 2000)
        song, tag, position = pairs[:, 0].astype(int), pairs[:, 1].astype(int), pairs[:, 2]
        assert set(song) <= set(rows) and 59 not in set(song)
        assert labels[song, tag].all()
        assert ((position >= 0) & (position < 1)).all()


def test_balanced_draws_tags_uniformly_random_draws_songs_uniformly(labels):
    rows = np.arange(60)
    index = PositiveIndex.from_labels(labels, rows)
    n = 70_000
    balanced = BalancedPairSampler(batch_size=8).pairs(index, np.random.default_rng(2), n)
    tag_share = np.bincount(balanced[:, 1].astype(int), minlength=7) / n
    present = labels.sum(0) > 0
    assert np.allclose(tag_share[present], 1 / present.sum(), atol=0.01)  # rare tag 6 as often as tag 0
    random = RandomPairSampler(batch_size=8).pairs(index, np.random.default_rng(3), n)
    song_share = np.bincount(random[:, 0].astype(int), minlength=60) / n
    tagged = labels.sum(1) > 0
    assert np.allclose(song_share[tagged], 1 / tagged.sum(), atol=0.006)
    # random sampling follows tag frequency: the common tag is drawn far more often than the rare one
    counts = np.bincount(random[:, 1].astype(int), minlength=7)
    assert counts[0] > 10 * counts[6]


def test_epoch_streams_are_a_function_of_seed_epoch_rank_and_batch(labels):
    # the pure function only; that Lightning sets the epoch during Trainer.fit is tested in test_training_stream.py
    index = PositiveIndex.from_labels(labels, np.arange(60))
    sampler = BalancedPairSampler(batch_size=8, pairs_per_epoch=64, seed=5)

    def epoch(rank, world_size, number):
        batches = EpochBatchSampler(sampler, index, rank=rank, world_size=world_size)
        batches.set_epoch(number)
        return [batch.tolist() for batch in batches]

    assert epoch(0, 1, 0) == epoch(0, 1, 0)
    assert epoch(0, 1, 0) != epoch(0, 1, 1)
    rank0, rank1 = epoch(0, 2, 0), epoch(1, 2, 0)
    assert len(rank0) == len(rank1) == 4                 # 64 pairs shared by 2 ranks, batches of 8
    assert rank0 != rank1
    assert len(epoch(0, 1, 0)) == 8


def test_negatives_never_carry_the_anchor_tag_and_invalid_rows_are_flagged():
    torch.manual_seed(0)
    candidates = torch.rand(64, 64) < 0.3
    candidates[5] = False
    anchors, songs = torch.randn(64, 16), torch.randn(64, 16)
    for mode in ("uniform", "weighted"):
        index, valid = choose_negatives(anchors=anchors, songs=songs, candidates=candidates, mode=mode)
        assert not valid[5] and valid.sum() == (candidates.any(1)).sum()
        assert candidates[torch.arange(64)[valid], index[valid]].all()
    with pytest.raises(ValueError, match="negative mode"):
        choose_negatives(anchors=anchors, songs=songs, candidates=candidates, mode="hard")


def test_weighted_negatives_follow_cosine_weights():
    # one anchor, three candidate songs with cos = 1, 0, -1 -> weights 1, 0.5, ~0
    anchors = torch.tensor([[1.0, 0.0]])
    songs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    candidates = torch.ones(1, 3, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([
        choose_negatives(anchors=anchors, songs=songs, candidates=candidates, mode="weighted", generator=generator)[0]
        for _ in range(6000)
    ]).flatten()
    share = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(share, torch.tensor([2 / 3, 1 / 3, 0.0]), atol=0.03)
    assert BalancedWeightedPairSampler.negatives == "weighted" and BalancedPairSampler.negatives == "uniform"


def test_batch_size_must_allow_in_batch_negatives_and_an_epoch_at_least_one_batch(labels):
    with pytest.raises(ValueError, match="batch_size"):
        RandomPairSampler(batch_size=1)
    index = PositiveIndex.from_labels(labels, np.arange(60))
    short = RandomPairSampler(batch_size=16, pairs_per_epoch=40)
    assert len(EpochBatchSampler(short, index, world_size=2)) == 1
    with pytest.raises(ValueError, match="pairs_per_epoch=40 is less than one batch on each of the 4 rank"):
        EpochBatchSampler(short, index, world_size=4)  # no silent rounding up to one batch


SAMPLERS = (RandomPairSampler, BalancedPairSampler, BalancedWeightedPairSampler)


@pytest.mark.parametrize("kind", SAMPLERS)
def test_untagged_training_songs_enter_every_batch_as_negatives(kind):
    # rows 6-9 carry no tag: never a positive, but 4 of the 10 training songs, so 4/6 of a batch's pairs come along
    labels = np.zeros((12, 3), dtype=np.uint8)
    labels[[0, 1, 2], 0] = labels[[2, 3, 4, 5], 1] = labels[[5, 0], 2] = 1
    index = PositiveIndex.from_labels(labels, np.arange(10))  # rows 10 and 11: not training songs
    assert index.untagged.tolist() == [6, 7, 8, 9]
    sampler = kind(batch_size=12, pairs_per_epoch=12 * 500, seed=3)
    assert sampler.n_untagged(index) == 8  # round(12 x 4 / 6)
    seen = []
    for batch in EpochBatchSampler(sampler, index):
        pairs, extra = batch[:12], batch[12:]
        assert len(extra) == 8 and (extra[:, 1] == UNTAGGED).all() and (pairs[:, 1] != UNTAGGED).all()
        assert labels[pairs[:, 0].astype(int), pairs[:, 1].astype(int)].all()
        assert ((extra[:, 2] >= 0) & (extra[:, 2] < 1)).all()
        seen.append(extra[:, 0].astype(int))
    share = np.bincount(np.concatenate(seen), minlength=12) / (8 * 500)
    assert np.allclose(share[6:10], 0.25, atol=0.03) and not share[:6].any() and not share[10:].any()


@pytest.mark.parametrize("kind", SAMPLERS)
def test_without_untagged_songs_a_batch_is_exactly_the_pairs_of_before(kind):
    labels = np.eye(5, dtype=np.uint8)[np.arange(20) % 5]
    index = PositiveIndex.from_labels(labels, np.arange(20))
    sampler = kind(batch_size=8, pairs_per_epoch=64, seed=1)
    assert sampler.n_untagged(index) == 0 and len(index.untagged) == 0
    for batch, number in zip(EpochBatchSampler(sampler, index), range(8)):
        assert np.array_equal(batch, sampler.pairs(index, sampler.rng(epoch=0, rank=0, batch=number), 8))


def test_untagged_per_batch_follows_their_share_within_bounds():
    assert untagged_per_batch(batch_size=128, n_untagged=0, n_songs=100) == 0
    assert untagged_per_batch(batch_size=128, n_untagged=3_400, n_songs=18_706) == 28  # MTAT pons: 3.4k of 18.7k
    assert untagged_per_batch(batch_size=128, n_untagged=1, n_songs=100_000) == 1       # at least one
    assert untagged_per_batch(batch_size=16, n_untagged=90, n_songs=100) == 16           # at most a batch
    assert untagged_per_batch(batch_size=16, n_untagged=10, n_songs=10) == 0             # nothing to pair with
