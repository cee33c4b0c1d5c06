"""Metric-learning losses between tag embeddings (anchors) and song embeddings.

All compare embeddings by cosine similarity, as retrieval does, and say what the training step must give them:

- ``needs_negatives`` (:class:`TripletLoss`): a sampled negative song per (anchor tag, positive song) pair;
- neither flag (:class:`InfoNCELoss`): the pairs of the batch, the other songs serving as negatives;
- ``over_vocabulary`` (:class:`MultiLabelLoss`): every song of the batch against every tag of the vocabulary,
  with the songs' labels (the pair's tag only chose the song).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagretrieval.models.spec import SpecMixin

__all__ = ["TripletLoss", "InfoNCELoss", "MultiLabelLoss"]


def _check_pair(name: str, anchor: Tensor, other: Tensor) -> None:
    if anchor.dim() != 2 or other.shape != anchor.shape:
        raise ValueError(f"anchor and {name} must both be [batch, dim], got {list(anchor.shape)} and {list(other.shape)}")


class TripletLoss(SpecMixin, nn.Module, spec_target="tagretrieval.training.losses.TripletLoss"):
    """Cosine triplet loss of the paper: ``mean_i relu(margin - cos(a_i, p_i) + cos(a_i, n_i))``.

    Args:
        margin: required gap between the positive and the negative cosine (paper: 0.4).
    """

    needs_negatives: ClassVar[bool] = True
    over_vocabulary: ClassVar[bool] = False

    def __init__(self, *, margin: float = 0.4) -> None:
        super().__init__()
        if not math.isfinite(margin):
            raise ValueError(f"margin must be finite, got {margin}")
        self.margin = margin

    def constrain_(self) -> None:
        """Nothing to constrain (no learnt parameter): the training module calls this after every optimizer step."""

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor, valid: Tensor | None = None) -> Tensor:
        """Scalar loss, averaged over the valid rows.

        Args:
            anchor: tag embeddings ``Tensor[B, D]``.
            positive: songs carrying the tag ``Tensor[B, D]``.
            negative: songs not carrying it ``Tensor[B, D]``.
            valid: ``Tensor[B]`` bool; False rows (e.g. no negative could be sampled) are ignored. A batch without
                any valid row gives a loss of 0 (no gradient); checking that here would cost a host-device sync per
                step, so the training module counts valid rows and fails at the end of an epoch that had none.
        Raises:
            ValueError: mis-shaped inputs.
        """
        _check_pair("positive", anchor, positive)
        _check_pair("negative", anchor, negative)
        losses = F.relu(
            self.margin - F.cosine_similarity(anchor, positive, dim=-1) + F.cosine_similarity(anchor, negative, dim=-1)
        )
        if valid is None:
            return losses.mean()
        if valid.shape != losses.shape or valid.dtype != torch.bool:
            raise ValueError(f"valid must be a bool tensor [{losses.shape[0]}], got {valid.dtype} {list(valid.shape)}")
        weights = valid.to(losses.dtype)
        return (losses * weights).sum() / weights.sum().clamp_min(1.0)


class InfoNCELoss(SpecMixin, nn.Module, spec_target="tagretrieval.training.losses.InfoNCELoss"):
    """Tag-to-song InfoNCE over the batch: row ``i`` scores anchor tag ``i`` against every song.

    ``loss_i = -log softmax_j(cos(a_i, s_j) / temperature)[i]``, where song ``i`` is the positive and the
    softmax runs over song ``i`` plus the songs that do NOT carry tag ``i``: other songs that also carry
    it (``positive_mask[i, j]``, ``j != i``) are not negatives, so they are left out of the denominator.
    The batch's songs may go on after the ``P`` pairs' (its untagged songs): those are negatives of every row.

    Args:
        temperature: softmax temperature on cosine logits (> 0).
    """

    needs_negatives: ClassVar[bool] = False
    over_vocabulary: ClassVar[bool] = False

    def __init__(self, *, temperature: float = 0.1) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        self.temperature = temperature

    def constrain_(self) -> None:
        """Nothing to constrain (no learnt parameter): the training module calls this after every optimizer step."""

    def forward(self, anchor: Tensor, songs: Tensor, positive_mask: Tensor) -> Tensor:
        """Scalar loss, averaged over the anchors.

        Args:
            anchor: tag embeddings ``Tensor[P, D]``; row ``i`` is the tag paired with song ``i``.
            songs: song embeddings ``Tensor[B, D]``, ``B >= P``: the pairs' songs first.
            positive_mask: ``Tensor[P, B]`` bool, ``[i, j]`` True when song ``j`` carries tag ``i``
                (the diagonal is ignored: song ``i`` is always the positive of row ``i``).
        """
        if anchor.dim() != 2 or songs.dim() != 2 or songs.shape[1] != anchor.shape[1] or len(songs) < len(anchor):
            raise ValueError(f"anchor must be [P, dim] and songs [B >= P, dim], got {list(anchor.shape)} and "
                             f"{list(songs.shape)}")
        n_pairs, batch = anchor.shape[0], songs.shape[0]
        if positive_mask.shape != (n_pairs, batch) or positive_mask.dtype != torch.bool:
            raise ValueError(f"positive_mask must be a bool tensor [{n_pairs}, {batch}], got {positive_mask.dtype} "
                             f"{list(positive_mask.shape)}")
        logits = F.normalize(anchor, dim=-1) @ F.normalize(songs, dim=-1).T / self.temperature
        diagonal = torch.eye(n_pairs, batch, dtype=torch.bool, device=positive_mask.device)
        logits = logits.masked_fill(positive_mask & ~diagonal, float("-inf"))
        return F.cross_entropy(logits, torch.arange(n_pairs, device=logits.device))


class MultiLabelLoss(SpecMixin, nn.Module, spec_target="tagretrieval.training.losses.MultiLabelLoss"):
    """Every song of the batch against every tag of the vocabulary: sigmoid cross-entropy on scaled cosines.

    ``logit[b, t] = exp(log_scale) * cos(song_b, tag_t) + bias``, ``loss = mean_{b,t} BCE(logit[b, t], label[b, t])``.

    Why (docs/recipe.md): a triplet step teaches each anchor tag one positive and one negative song, a few hundred
    comparisons per batch, most of them already satisfied; this loss sees all ``batch x n_tags`` labels of the
    batch, as the BCE classifier does, and keeps what BCE cannot do: tags are still embeddings of word vectors
    (unseen words and zero-shot queries keep working) and songs and tags stay in one cosine space. One scale and
    one bias for all tags (no per-tag parameter, which an unseen tag would not have); retrieval ranks by the cosine,
    on which neither has any effect.

    The learnt scale is capped at ``max_scale`` (CLIP's cap of its logit scale, 100): on separable data the loss keeps
    falling as the scale grows, so uncapped it grows without bound (10 -> 336 in 20k steps on toy data) and the
    sigmoids saturate. The logits use the capped scale, and :meth:`constrain_` (called by the training module after
    every optimizer step) clamps the parameter itself, as CLIP does, so that it never sits above the cap where the
    capped value would give it no gradient to come back down.

    Args:
        scale: initial cosine scale, in (0, ``max_scale``]; learnt (as its log) when ``learn_scale``.
        bias: initial logit bias, learnt; about ``log(p / (1 - p))`` for a label density ``p``.
        learn_scale: train the scale (else fixed at ``scale``).
        max_scale: the largest scale.
    """

    needs_negatives: ClassVar[bool] = False
    over_vocabulary: ClassVar[bool] = True

    def __init__(self, *, scale: float = 10.0, bias: float = -2.0, learn_scale: bool = True,
                 max_scale: float = 100.0) -> None:
        super().__init__()
        if not (math.isfinite(max_scale) and max_scale > 0):
            raise ValueError(f"max_scale must be a positive number, got {max_scale}")
        if not (math.isfinite(scale) and 0 < scale <= max_scale):
            raise ValueError(f"scale must be a positive number <= max_scale={max_scale:g}, got {scale}")
        if not math.isfinite(bias):
            raise ValueError(f"bias must be finite, got {bias}")
        self.max_log_scale = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)), requires_grad=learn_scale)
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    @property
    def scale(self) -> Tensor:
        """The cosine scale the logits use (scalar tensor): ``exp(log_scale)``, at most ``max_scale``."""
        # clamp's gradient passes at the cap itself (its mask is inclusive): a scale at the cap can still come down
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    @torch.no_grad()
    def constrain_(self) -> None:
        """Clamp the learnt ``log_scale`` to ``log(max_scale)`` in place (after an optimizer step, as CLIP does)."""
        self.log_scale.clamp_(max=self.max_log_scale)

    def logits(self, tags: Tensor, songs: Tensor) -> Tensor:
        """``tags [n_tags, D]``, ``songs [B, D]`` -> ``Tensor[B, n_tags]``: ``scale * cos + bias``."""
        if tags.dim() != 2 or songs.dim() != 2 or tags.shape[1] != songs.shape[1]:
            raise ValueError(f"tags and songs must be [n, dim] of one dim, got {list(tags.shape)} and {list(songs.shape)}")
        cosine = F.normalize(songs, dim=-1) @ F.normalize(tags, dim=-1).T
        return cosine * self.scale + self.bias

    def forward(self, tags: Tensor, songs: Tensor, labels: Tensor) -> Tensor:
        """Scalar loss, averaged over every (song, tag) entry.

        Args:
            tags: embeddings of the whole vocabulary ``Tensor[n_tags, D]``.
            songs: song embeddings ``Tensor[B, D]``.
            labels: ``Tensor[B, n_tags]`` in [0, 1] (multi-hot; fractions for mixed songs).
        """
        logits = self.logits(tags, songs)
        if labels.shape != logits.shape:
            raise ValueError(f"labels must be [{songs.shape[0]}, {tags.shape[0]}], got {list(labels.shape)}")
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
