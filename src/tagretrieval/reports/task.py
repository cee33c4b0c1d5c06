"""``python main.py mode=report run_dir=DIR``: the task-layer part of the reports (the one module here that reads a
``DictConfig``; it is listed in ``tagretrieval.runtime.preflight.MODES``).

The scores of ``DIR``'s split come from ``DIR/metrics/<split>_scores.npz`` when it exists; otherwise they are
recomputed from ``report.checkpoint`` and the data described by ``DIR/.hydra/config.yaml`` (the run's own config,
so the songs, tags and evaluation chunks are those of the run), checked against ``DIR/metrics/<split>.json`` and
cached in that file.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tagretrieval.training.checkpoints import load_module
from tagretrieval.evaluation import RetrievalResults
from tagretrieval.evaluation.metric_keys import PR_AUC, ROC_AUC
from tagretrieval.reports.run_report import scores_path, write_run_report
from tagretrieval.reports.scores import ScoreMatrix, compute_scores

log = logging.getLogger(__name__)

RUN_CONFIG = Path(".hydra") / "config.yaml"
_TOLERANCE = 1e-5


def report(cfg: DictConfig, output_dir: Path) -> dict[str, Path]:
    """Write ``run_dir/reports/`` (see :mod:`tagretrieval.reports.run_report`); print what was written."""
    if cfg.run_dir is None:
        raise ValueError("mode=report needs run_dir=DIR, a finished run folder (e.g. outputs/DATE/TIME)")
    run_dir = Path(cfg.run_dir)
    split = cfg.report.split
    cached = scores_path(run_dir, split)
    if cached.exists():
        scores = ScoreMatrix.load(cached)
        # P@k depends on the run's k; the two rank metrics suffice to catch a stale cache (run retrained since)
        _check_reproduces(scores.results(), run_dir / "metrics" / f"{split}.json", metrics=(PR_AUC, ROC_AUC),
                          remedy=f"{cached} is stale: delete it to recompute the scores")
    else:
        scores = recompute_scores(run_dir=run_dir, checkpoint=Path(cfg.report.checkpoint), split=split,
                                  trusted=cfg.checkpoint_trusted, output_dir=output_dir)
        scores.save(cached)
        log.info("scores of %s cached in %s", split, cached)
    paths = write_run_report(run_dir=run_dir, split=split, scores=scores, pr_tags=list(cfg.report.pr_tags))
    print(f"report of {run_dir} ({split}):")
    for path in paths.values():
        print(f"  {path}")
    return paths


def recompute_scores(*, run_dir: Path, checkpoint: Path, split: str, trusted: bool, output_dir: Path) -> ScoreMatrix:
    """Scores of ``split`` from ``checkpoint`` and the run's data; must reproduce ``metrics/<split>.json``."""
    from tagretrieval.tasks import build_datamodule, prepare_data  # the task layer builds data from a config

    if not (run_dir / RUN_CONFIG).exists():
        raise FileNotFoundError(
            f"{run_dir / RUN_CONFIG} not found: the scores of {run_dir} cannot be recomputed without the run's "
            f"config. Runs started with main.py have it; otherwise save the scores to {scores_path(run_dir, split)} "
            "(tagretrieval.reports.ScoreMatrix.save)")
    run_cfg = OmegaConf.load(run_dir / RUN_CONFIG)
    module = load_module(checkpoint, trusted=trusted)
    prepared = prepare_data(run_cfg, output_dir)
    dataset = prepared.dataset.select_tags(module.tags)
    datamodule = build_datamodule(run_cfg, prepared, module.model, dataset)
    scores = compute_scores(module=module, batches=datamodule.songs_dataloader(split),
                            track_ids=dataset.track_ids, split=split)
    scored = scores.results(k=module.hparams["k"])
    _check_reproduces(scored, run_dir / "metrics" / f"{split}.json",
                      metrics=scored.metrics, remedy=f"the checkpoint ({checkpoint}) or the data differ from the run's; "
                      "pass report.checkpoint=PATH for the checkpoint the run was evaluated with")
    return scores


def _check_reproduces(scored: RetrievalResults, metrics_path: Path, *, metrics: tuple[str, ...], remedy: str) -> None:
    """Refuse scores that do not give the run's own metrics (another checkpoint, other data, a stale cache)."""
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path} not found: is {metrics_path.parent.parent} a finished run?")
    saved = RetrievalResults.from_json(metrics_path)
    differ = {name: (scored.macro[name], saved.macro[name]) for name in metrics
              if not math.isclose(scored.macro[name], saved.macro[name], abs_tol=_TOLERANCE)}
    if differ or set(scored.per_tag) != set(saved.per_tag):
        details = ", ".join(f"{n}: scores give {a:.6f}, the file says {b:.6f}" for n, (a, b) in differ.items())
        raise ValueError(f"scores do not reproduce {metrics_path} ({details or 'different scored tags'}): {remedy}")
