"""mini-MusicNet: the seed's ridge baselines and our checkpoints, scored with the seed's metric.

    python scripts/minimusicnet_baselines.py --root DATA/minimusic [--checkpoint RUN/checkpoints/best.ckpt] \
        [--split test] [--alpha 1e-3] [--out baselines.json]

Every number is the micro-averaged average precision over all (clip, note) pairs of the split
(:func:`tagretrieval.data.minimusicnet.micro_average_precision`, = scikit-learn's
``average_precision_score(labels.ravel(), scores.ravel())``):

- ``ridge_raw_audio``: ridge regression from the 4,096 raw samples to the 128 labels (seed: test AP 0.04);
- ``ridge_abs_rfft``: the same from ``|rfft(clip)|`` (2,049 bins, no window; seed: test AP 0.47);
- ``checkpoint`` (with ``--checkpoint``): the cosine similarity between each clip's song embedding and each
  note's tag embedding, from one of our checkpoints trained with ``data=minimusicnet model=features``, on the
  prepared folder (``--prepared``, default ``ROOT/prepared``). Notes the model has no tag for (never sounding
  in the training split) get the score -2, below every cosine, so the metric still covers all 128 columns.

Clips with NaN/inf samples (the release divides each clip by its peak: a silent one is 0/0) are left out of
the fits and of every score (the import skips them too). Ridge is the closed form
``W = (X^T X + alpha I)^-1 X^T Y`` without intercept, as in the seed, accumulated over blocks of clips in
float64 (memory stays ~ d^2 floats whatever N), then solved once (= scikit-learn
``Ridge(alpha, fit_intercept=False)``, checked in tests/test_minimusicnet.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.linalg

from tagretrieval.data.minimusicnet.importer import micro_average_precision, read_split
from tagretrieval.tags.pitch import N_MIDI_NOTES, name_to_midi

BLOCK_CLIPS = 8192
NO_TAG_SCORE = -2.0
"""Score of a (clip, note) pair whose note the model has no tag for: below any cosine similarity."""


def raw_audio(block: np.ndarray) -> np.ndarray:
    """The clips themselves, float64 ``[n, n_samples]``."""
    return np.asarray(block, dtype=np.float64)


def abs_rfft(block: np.ndarray) -> np.ndarray:
    """Magnitude spectra without a window, float64 ``[n, n_samples // 2 + 1]`` (the seed's features)."""
    return np.abs(np.fft.rfft(np.asarray(block, dtype=np.float64), axis=1))


def fit_ridge(x: np.ndarray, y: np.ndarray, *, alpha: float, transform: Callable[[np.ndarray], np.ndarray],
              block_clips: int = BLOCK_CLIPS) -> np.ndarray:
    """Ridge weights ``[d, n_outputs]`` from inputs ``transform(x) [N, d]`` to targets ``y [N, n_outputs]``;
    clips whose features are not finite (NaN samples) are left out."""
    xtx, xty = None, None
    for start in range(0, len(x), block_clips):
        xb = transform(x[start:start + block_clips])
        finite = np.isfinite(xb).all(axis=1)
        xb = xb[finite]
        yb = np.asarray(y[start:start + block_clips], dtype=np.float64)[finite]
        if xtx is None:
            xtx, xty = np.zeros((xb.shape[1], xb.shape[1])), np.zeros((xb.shape[1], yb.shape[1]))
        xtx += xb.T @ xb
        xty += xb.T @ yb
    xtx[np.diag_indices_from(xtx)] += alpha
    return scipy.linalg.solve(xtx, xty, assume_a="pos")


def predict(x: np.ndarray, weights: np.ndarray, *, transform: Callable[[np.ndarray], np.ndarray],
            block_clips: int = BLOCK_CLIPS) -> np.ndarray:
    """Scores ``[N, n_outputs]`` of ``transform(x) @ weights``."""
    return np.concatenate([transform(x[s:s + block_clips]) @ weights for s in range(0, len(x), block_clips)])


def ridge_average_precision(root: Path, *, split: str, alpha: float,
                            transform: Callable[[np.ndarray], np.ndarray]) -> tuple[float, int]:
    """Fit ridge on the train split of ``root``, score ``split`` with the micro-averaged AP.

    Returns ``(AP, number of clips of split left out because their samples are not finite)``.
    """
    x_train, y_train = read_split(root, "train")
    x_eval, y_eval = read_split(root, split)
    weights = fit_ridge(x_train, y_train, alpha=alpha, transform=transform)
    scores = predict(x_eval, weights, transform=transform)
    finite = np.isfinite(scores).all(axis=1)
    return micro_average_precision(scores[finite], y_eval[finite]), int((~finite).sum())


def checkpoint_scores(checkpoint: str | Path, prepared_dir: str | Path, *, split: str,
                      batch_size: int = 4096) -> tuple[list[str], np.ndarray]:
    """Cosine scores of one of our checkpoints: ``(track ids [n], scores float64 [n, 128])``.

    Row ``i`` is the clip ``ids[i]`` of ``split`` in the prepared folder, column ``k`` MIDI note ``k``; notes
    the model has no tag for score :data:`NO_TAG_SCORE`.
    """
    import torch

    from tagretrieval.training.checkpoints import load_module
    from tagretrieval.data.prepared import PreparedDataset
    from tagretrieval.training.module import scores_matrix

    module = load_module(checkpoint)
    dataset = PreparedDataset.load(prepared_dir)
    if dataset.features is None:
        raise ValueError(f"{prepared_dir} has no features.npy: prepare it with data=minimusicnet")
    rows = dataset.split_indices(split)
    columns = [name_to_midi(tag) for tag in module.tags]
    if None in columns:
        raise ValueError(f"{checkpoint}: tags {[t for t, c in zip(module.tags, columns) if c is None]} are not notes")
    with torch.no_grad():
        tags = module.tag_embeddings()
        songs = torch.cat([module.model.embed_songs(features=torch.from_numpy(dataset.features[rows[s:s + batch_size]]))
                           for s in range(0, len(rows), batch_size)])
        cosine = scores_matrix(tags, songs).T.double().numpy()  # [n_clips, n_tags]
    scores = np.full((len(rows), N_MIDI_NOTES), NO_TAG_SCORE)
    scores[:, columns] = cosine
    return [dataset.track_ids[r] for r in rows], scores


def checkpoint_average_precision(root: Path, checkpoint: str | Path, prepared_dir: str | Path, *, split: str) -> float:
    """Micro-averaged AP of a checkpoint on ``split``, against the released labels of the clips it scored."""
    ids, scores = checkpoint_scores(checkpoint, prepared_dir, split=split)
    _, labels = read_split(root, split)
    rows = [int(track_id.rsplit("-", 1)[1]) for track_id in ids]  # "test-000123" -> row 123
    return micro_average_precision(scores, labels[rows])


def baselines(root: str | Path, *, split: str = "test", alpha: float = 1e-3, checkpoint: str | Path | None = None,
              prepared_dir: str | Path | None = None) -> dict:
    """``{"split", "alpha", "average_precision": {"ridge_raw_audio", "ridge_abs_rfft"[, "checkpoint"]},
    "n_clips_not_finite", ...}``: clips with NaN/inf samples are left out of every score."""
    root = Path(root)
    out, n_not_finite = {}, 0
    for name, transform in (("ridge_raw_audio", raw_audio), ("ridge_abs_rfft", abs_rfft)):
        out[name], n_not_finite = ridge_average_precision(root, split=split, alpha=alpha, transform=transform)
    if checkpoint is not None:
        prepared = Path(prepared_dir) if prepared_dir is not None else root / "prepared"
        out["checkpoint"] = checkpoint_average_precision(root, checkpoint, prepared, split=split)
    return {"split": split, "alpha": alpha, "average_precision": out, "n_clips_not_finite": n_not_finite,
            "reference_test_average_precision": {"ridge_raw_audio": 0.04, "ridge_abs_rfft": 0.47}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="the minimusic/ folder (audio-*.npy, labels-*.npy)")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--alpha", type=float, default=1e-3, help="ridge regularisation")
    parser.add_argument("--checkpoint", help="one of our checkpoints (data=minimusicnet model=features)")
    parser.add_argument("--prepared", help="prepared folder of the checkpoint's data (default ROOT/prepared)")
    parser.add_argument("--out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    results = baselines(args.root, split=args.split, alpha=args.alpha, checkpoint=args.checkpoint,
                        prepared_dir=args.prepared)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
