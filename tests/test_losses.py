"""Triplet, InfoNCE and multi-label losses against hand-made vectors and naive loops."""

from __future__ import annotations

import math

import pytest
import torch

from tagretrieval.training.losses import InfoNCELoss, MultiLabelLoss, TripletLoss
from tagretrieval.models import build_from_spec


def unit(angle_degrees: float) -> list[float]:
    """A 2-D vector at ``angle_degrees`` from the x axis (cosine with x = cos(angle))."""
    radians = math.radians(angle_degrees)
    return [math.cos(radians), math.sin(radians)]


def test_triplet_value_on_known_angles():
    loss = TripletLoss(margin=0.4)
    anchor = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # scale does not matter for cosine
    positive = torch.tensor([unit(60), unit(0)])  # cos 0.5, 1.0
    negative = torch.tensor([unit(90), [-2.0, 0.0]])  # cos 0.0, -1.0
    # row 0: relu(0.4 - 0.5 + 0) = 0 ; row 1: relu(0.4 - 1 - 1) = 0
    assert float(loss(anchor, positive, negative)) == pytest.approx(0.0, abs=1e-7)
    negative = torch.tensor([unit(45), unit(0)])  # cos 0.7071, 1.0
    expected = ((0.4 - 0.5 + math.sqrt(0.5)) + (0.4 - 1.0 + 1.0)) / 2
    assert float(loss(anchor, positive, negative)) == pytest.approx(expected, abs=1e-6)


def test_triplet_margin_is_respected_on_both_sides():
    anchor, positive = torch.tensor([[1.0, 0.0]]), torch.tensor([unit(0)])
    just_enough = torch.tensor([unit(math.degrees(math.acos(0.55)))])  # cos(a,p) - cos(a,n) = 0.45 >= 0.4
    not_enough = torch.tensor([unit(math.degrees(math.acos(0.65)))])  # gap 0.35 -> loss 0.05
    assert float(TripletLoss(margin=0.4)(anchor, positive, just_enough)) == 0.0
    assert float(TripletLoss(margin=0.4)(anchor, positive, not_enough)) == pytest.approx(0.05, abs=1e-6)
    assert float(TripletLoss(margin=0.5)(anchor, positive, just_enough)) == pytest.approx(0.05, abs=1e-6)


def test_triplet_valid_mask_averages_valid_rows_only():
    anchor = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    positive = torch.tensor([unit(0), unit(90), unit(0)])  # cos 1, 0, 1
    negative = torch.tensor([unit(0), unit(0), unit(90)])  # cos 1, 1, 0
    losses = [0.4, 1.4, 0.0]
    loss = TripletLoss(margin=0.4)
    assert float(loss(anchor, positive, negative)) == pytest.approx(sum(losses) / 3, abs=1e-6)
    valid = torch.tensor([True, False, True])
    assert float(loss(anchor, positive, negative, valid)) == pytest.approx(0.2, abs=1e-6)
    none_valid = loss(anchor.requires_grad_(), positive, negative, torch.zeros(3, dtype=torch.bool))
    assert float(none_valid) == 0.0  # no NaN; the training module fails an epoch without any valid triplet
    none_valid.backward()
    assert torch.equal(anchor.grad, torch.zeros_like(anchor))
    with pytest.raises(ValueError, match="bool"):
        loss(anchor, positive, negative, torch.ones(3))


def naive_info_nce(anchor, songs, positive_mask, temperature):
    total = 0.0
    for i in range(len(anchor)):
        logits = {
            j: float(torch.nn.functional.cosine_similarity(anchor[i], songs[j], dim=0)) / temperature
            for j in range(len(songs))
            if j == i or not bool(positive_mask[i, j])
        }
        total += -(logits[i] - math.log(sum(math.exp(value) for value in logits.values())))
    return total / len(anchor)


def test_info_nce_equals_naive_loop_with_masked_positives():
    generator = torch.Generator().manual_seed(0)
    anchor, songs = torch.randn(7, 5, generator=generator), torch.randn(7, 5, generator=generator)
    positive_mask = torch.rand(7, 7, generator=generator) < 0.3
    positive_mask.fill_diagonal_(True)
    loss = InfoNCELoss(temperature=0.2)
    assert float(loss(anchor, songs, positive_mask)) == pytest.approx(
        naive_info_nce(anchor, songs, positive_mask, 0.2), rel=1e-5
    )
    # without other positives it is plain in-batch cross-entropy over all songs
    eye = torch.eye(7, dtype=torch.bool)
    assert float(loss(anchor, songs, eye)) == pytest.approx(naive_info_nce(anchor, songs, eye, 0.2), rel=1e-5)


def test_info_nce_scores_the_batch_untagged_songs_as_negatives_of_every_anchor():
    generator = torch.Generator().manual_seed(1)
    anchor, songs = torch.randn(7, 5, generator=generator), torch.randn(10, 5, generator=generator)
    positive_mask = torch.rand(7, 10, generator=generator) < 0.3
    positive_mask[:, 7:] = False   # songs 7-9: untagged, after the 7 pairs' songs
    loss = InfoNCELoss(temperature=0.2)
    assert float(loss(anchor, songs, positive_mask)) == pytest.approx(
        naive_info_nce(anchor, songs, positive_mask, 0.2), rel=1e-5)
    # an untagged song next to every anchor raises the loss: it is in every row's denominator
    near = torch.cat([songs[:7], anchor.mean(dim=0, keepdim=True).expand(3, 5)])
    assert float(loss(anchor, near, positive_mask)) > float(loss(anchor, songs[:7], positive_mask[:, :7]))


def test_info_nce_masking_other_positives_removes_them_from_the_denominator():
    # anchor 0's tag is also carried by song 1, which is closer to it than its own song 0
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    songs = torch.tensor([unit(30), unit(0)])
    loss = InfoNCELoss(temperature=0.5)
    independent = torch.eye(2, dtype=torch.bool)
    shared = torch.tensor([[True, True], [False, True]])
    c0, c1 = math.cos(math.radians(30)), 1.0  # anchor 0 vs songs 0, 1
    d0, d1 = math.cos(math.radians(60)), 0.0  # anchor 1 vs songs 0, 1
    row1 = -(d1 / 0.5 - math.log(math.exp(d0 / 0.5) + math.exp(d1 / 0.5)))
    row0_unmasked = -(c0 / 0.5 - math.log(math.exp(c0 / 0.5) + math.exp(c1 / 0.5)))
    assert float(loss(anchor, songs, independent)) == pytest.approx((row0_unmasked + row1) / 2, abs=1e-6)
    assert float(loss(anchor, songs, shared)) == pytest.approx((0.0 + row1) / 2, abs=1e-6)  # row 0: only its positive
    assert float(loss(anchor, songs, shared)) < float(loss(anchor, songs, independent))


def test_info_nce_rejects_bad_mask():
    with pytest.raises(ValueError, match=r"positive_mask must be a bool tensor \[3, 3\]"):
        InfoNCELoss()(torch.randn(3, 4), torch.randn(3, 4), torch.eye(3))
    with pytest.raises(ValueError, match=r"songs \[B >= P, dim\]"):
        InfoNCELoss()(torch.randn(3, 4), torch.randn(2, 4), torch.eye(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0.0)


def test_losses_declare_negatives_and_rebuild_from_spec():
    assert TripletLoss.needs_negatives and not InfoNCELoss.needs_negatives
    triplet = build_from_spec(TripletLoss(margin=0.3).spec())
    assert isinstance(triplet, TripletLoss) and triplet.margin == 0.3
    assert InfoNCELoss(temperature=0.07).spec() == {"_target_": "tagretrieval.training.losses.InfoNCELoss", "temperature": 0.07}


def test_losses_give_gradients():
    anchor = torch.randn(4, 8, requires_grad=True)
    songs = torch.randn(4, 8, requires_grad=True)
    loss = TripletLoss()(anchor, songs, songs.roll(1, dims=0)) + InfoNCELoss()(anchor, songs, torch.eye(4, dtype=torch.bool))
    loss.backward()
    assert anchor.grad is not None and bool(torch.isfinite(anchor.grad).all())


def test_multilabel_loss_equals_a_naive_loop_over_every_song_and_tag():
    generator = torch.Generator().manual_seed(3)
    tags, songs = torch.randn(7, 5, generator=generator), torch.randn(11, 5, generator=generator)
    labels = (torch.rand(11, 7, generator=generator) < 0.3).float()
    loss = MultiLabelLoss(scale=4.0, bias=-1.5)
    total = 0.0
    for b in range(11):
        for t in range(7):
            logit = 4.0 * float(torch.nn.functional.cosine_similarity(songs[b], tags[t], dim=0)) - 1.5
            p = 1.0 / (1.0 + math.exp(-logit))
            total -= math.log(p) if labels[b, t] else math.log(1.0 - p)
    assert float(loss(tags, songs, labels)) == pytest.approx(total / 77, rel=1e-5)


def test_multilabel_loss_learns_its_scale_and_bias_and_ranks_by_cosine_alone():
    loss = MultiLabelLoss(scale=10.0, bias=-2.0)
    assert MultiLabelLoss.over_vocabulary and not MultiLabelLoss.needs_negatives
    assert not TripletLoss.over_vocabulary and not InfoNCELoss.over_vocabulary
    tags, songs = torch.randn(4, 3, requires_grad=True), torch.randn(6, 3)
    value = loss(tags, songs, torch.zeros(6, 4))
    value.backward()
    assert loss.log_scale.grad is not None and loss.bias.grad is not None and tags.grad is not None
    # a tag's songs are ranked by their cosine: the scale and bias (one for all tags) change no tag's order
    logits = loss.logits(tags.detach(), songs)
    cosine = torch.nn.functional.normalize(songs, dim=-1) @ torch.nn.functional.normalize(tags.detach(), dim=-1).T
    assert torch.equal(logits.argsort(dim=0), cosine.argsort(dim=0))
    assert not MultiLabelLoss(learn_scale=False).log_scale.requires_grad
    rebuilt = build_from_spec(MultiLabelLoss(scale=5.0, bias=0.5).spec())
    assert isinstance(rebuilt, MultiLabelLoss) and float(rebuilt.log_scale.exp()) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="labels must be"):
        loss(tags, songs, torch.zeros(4, 6))
    with pytest.raises(ValueError, match="scale"):
        MultiLabelLoss(scale=0.0)


def test_multilabel_scale_stays_at_most_its_cap_on_separable_data():
    # four songs, each carrying one of four orthogonal tags: separable, so the loss keeps falling as the scale grows
    tags, songs, labels = torch.eye(4), torch.eye(4), torch.eye(4)
    loss = MultiLabelLoss(scale=10.0, bias=-2.0, max_scale=100.0)
    optimizer = torch.optim.Adam(loss.parameters(), lr=0.5)  # uncapped, the scale passes 200 in these 500 steps
    for _ in range(500):
        optimizer.zero_grad()
        loss(tags, songs, labels).backward()
        optimizer.step()
        loss.constrain_()  # what the training module does after every optimizer step
        assert float(loss.log_scale.detach()) <= math.log(100.0) + 1e-6 and float(loss.scale) <= 100.0 + 1e-4
    assert float(loss.scale) == pytest.approx(100.0, rel=1e-6)  # it went to the cap and stayed


def test_multilabel_scale_gets_a_gradient_below_and_at_its_cap_and_the_logits_never_exceed_it():
    tags, songs, labels = torch.eye(4), torch.eye(4), torch.eye(4)
    for scale in (2.5, 5.0):  # at the cap too: a clamped parameter can still come back down (a small cap: no
        loss = MultiLabelLoss(scale=scale, max_scale=5.0)  # sigmoid saturates to a float32 zero gradient)
        loss(tags, songs, labels).backward()
        assert float(loss.log_scale.grad) < 0  # separable: a larger scale lowers the loss
    loss = MultiLabelLoss(scale=10.0, max_scale=100.0)
    with torch.no_grad():
        loss.log_scale.fill_(math.log(300.0))  # e.g. an older checkpoint's uncapped scale
    assert float(loss.scale) == pytest.approx(100.0)
    assert float(loss.logits(tags, songs).max()) == pytest.approx(100.0 - 2.0, rel=1e-5)
    rebuilt = build_from_spec(MultiLabelLoss(scale=5.0, max_scale=20.0).spec())
    assert rebuilt.max_log_scale == pytest.approx(math.log(20.0))
    with pytest.raises(ValueError, match="max_scale"):
        MultiLabelLoss(scale=200.0, max_scale=100.0)
