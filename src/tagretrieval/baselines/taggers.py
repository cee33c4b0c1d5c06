"""scikit-learn classifiers as multi-label taggers, scored with the retrieval metrics of a trained model.

A tagger is ``[StandardScaler ->] OneVsRestClassifier(estimator)``: one binary classifier per tag. Each tag
ranks the songs of a split by its classifier's predicted probability (``predict_proba``) or, for estimators
without one (an SVM), its decision value; those ``[n_tags, n_songs]`` scores go through the same
``RetrievalResults`` as a trained model's cosine similarities.

Model selection is **train -> valid**, like the trained models' checkpoint selection: every point of the
parameter grid is fitted on the train split and scored by the macro PR-AUC on the valid split
(:data:`metric_keys.MONITOR`); the best one (the first, on ties) is evaluated once on the test split. It is
not refitted on train + valid (the trained models never see the valid split either).

Fits and predictions run with single-threaded BLAS and OpenMP (:func:`single_threaded`): each per-tag problem
is small (songs x a few hundred features), and multi-threaded BLAS/OpenMP on such problems mostly spin-waits
(measured: 20 logistic regressions on 168 x 89 took 4.7 s with OpenBLAS's default threads on a busy 2-core
machine, 0.3 s with one). Parallelise across tags with ``n_jobs`` instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.inspection import permutation_importance
from sklearn.model_selection import ParameterGrid
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tagretrieval.evaluation import metric_keys
from tagretrieval.baselines.analysis import is_single_label, write_confusion_matrix
from tagretrieval.baselines.context import BaselineContext, evaluate_scores, write_split
from tagretrieval.data.feature_cache import FeatureMatrix
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.evaluation import RetrievalResults

log = logging.getLogger(__name__)

IMPORTANCES: tuple[str, ...] = ("none", "model", "permutation")
BASELINE_DIR = "baseline"
"""Sub-folder of the run folder for everything a baseline writes besides ``metrics/``."""


def single_threaded() -> threadpool_limits:
    """Context manager: BLAS (OpenBLAS/MKL) and OpenMP (gradient boosting) use one thread inside (module doc)."""
    return threadpool_limits(limits=1)


def make_tagger(estimator: BaseEstimator, *, standardize: bool, n_jobs: int) -> Pipeline:
    """``[StandardScaler ->] OneVsRestClassifier(clone(estimator))`` (steps ``scale``, ``tagger``)."""
    steps = [("scale", StandardScaler())] if standardize else []
    return Pipeline([*steps, ("tagger", OneVsRestClassifier(clone(estimator), n_jobs=n_jobs))])


def tag_scores(tagger: Pipeline, X: np.ndarray) -> np.ndarray:
    """Per-song tag scores ``[n_songs, n_tags]``: ``predict_proba`` when the estimator has it, else
    ``decision_function`` (both rank songs the same way for a tag)."""
    scores = tagger.predict_proba(X) if hasattr(tagger, "predict_proba") else tagger.decision_function(X)
    return np.asarray(scores, dtype=np.float64)


@dataclass
class Selection:
    """The chosen tagger and the grid behind it.

    Attributes:
        tagger: the fitted pipeline of the best parameters.
        params: the best parameters (of the estimator).
        grid: one row per grid point: its parameters, valid ``roc_auc``/``pr_auc``/``p_at_<k>``.
        valid: the valid results of the best parameters (None when the valid split is empty).
    """

    tagger: Pipeline
    params: dict
    grid: pd.DataFrame
    valid: RetrievalResults | None


def select_on_valid(estimator: BaseEstimator, param_grid: Mapping[str, Sequence], *, X_train: np.ndarray,
                    Y_train: np.ndarray, X_valid: np.ndarray, Y_valid: np.ndarray, tags: Sequence[str],
                    categories: Sequence[str], standardize: bool, n_jobs: int, k: int = 10) -> Selection:
    """Fit every point of ``param_grid`` on train, keep the best valid macro PR-AUC (module doc).

    Args:
        param_grid: estimator parameter -> values (``{"C": [0.1, 1.0]}``); ``{}`` fits ``estimator`` as is.
        X_train: ``[n_train, n_features]``; Y_train: ``{0, 1} [n_train, n_tags]``; likewise for valid.

    Raises:
        ValueError: an unknown parameter name, or a grid of several points with an empty valid split.
    """
    points = list(ParameterGrid(dict(param_grid)))
    unknown = sorted(set(param_grid) - set(estimator.get_params()))
    if unknown:
        raise ValueError(f"param_grid names {unknown} are not parameters of {type(estimator).__name__}")
    if len(X_valid) == 0 and len(points) > 1:
        raise ValueError(f"a grid of {len(points)} points needs a valid split to choose from, and it is empty")
    rows, best = [], None
    for params in points:
        tagger = make_tagger(clone(estimator).set_params(**params), standardize=standardize, n_jobs=n_jobs)
        tagger.fit(X_train, Y_train)
        valid = None
        if len(X_valid):
            valid = evaluate_scores(scores=tag_scores(tagger, X_valid), labels=Y_valid, tags=tags,
                                    categories=categories, split=metric_keys.VALID, k=k)
        rows.append({**{f"param_{n}": v for n, v in params.items()},
                     **{f"valid_{m}": (valid.macro[m] if valid else np.nan)
                        for m in (valid.metrics if valid else metric_keys.metrics(k))}})
        log.info("%s %s: valid pr_auc %s", type(estimator).__name__, params,
                 f"{valid.macro[metric_keys.PR_AUC]:.4f}" if valid else "-")
        if best is None or (valid and valid.macro[metric_keys.PR_AUC] > best[2].macro[metric_keys.PR_AUC]):
            best = (tagger, params, valid)
    return Selection(tagger=best[0], params=best[1], grid=pd.DataFrame(rows), valid=best[2])


def model_importances(tagger: Pipeline, names: Sequence[str]) -> pd.DataFrame:
    """Mean over tags of each per-tag classifier's ``feature_importances_`` (trees) or ``|coef_|`` (linear
    models; comparable across features only on standardised inputs), with the standard deviation over tags."""
    estimators = tagger.named_steps["tagger"].estimators_
    per_tag = []
    for estimator in estimators:
        if hasattr(estimator, "feature_importances_"):
            per_tag.append(np.asarray(estimator.feature_importances_, dtype=np.float64))
        elif hasattr(estimator, "coef_"):
            per_tag.append(np.abs(np.asarray(estimator.coef_, dtype=np.float64)).ravel())
        elif type(estimator).__name__ == "_ConstantPredictor":  # a tag with one class in train: no model
            continue
        else:
            raise ValueError(f"{type(estimator).__name__} has neither feature_importances_ nor coef_: "
                             "use importance=permutation")
    if not per_tag:
        raise ValueError("no tag has a fitted classifier (each had a single class in the train split)")
    values = np.stack(per_tag)                                                    # [n_tags, n_features]
    return _importance_table(names, values.mean(axis=0), values.std(axis=0))


def permuted_importances(tagger: Pipeline, names: Sequence[str], *, X: np.ndarray, Y: np.ndarray,
                         tags: Sequence[str], categories: Sequence[str], n_repeats: int, seed: int,
                         k: int = 10) -> pd.DataFrame:
    """Drop of the macro PR-AUC of ``(X, Y)`` when one feature is shuffled (scikit-learn's permutation
    importance, ``n_repeats`` shuffles), mean and standard deviation over the repeats."""

    def macro_pr_auc(estimator, X_, Y_) -> float:
        return evaluate_scores(scores=tag_scores(estimator, X_), labels=Y_, tags=tags, categories=categories,
                               split=metric_keys.VALID, k=k).macro[metric_keys.PR_AUC]

    result = permutation_importance(tagger, X, Y, scoring=macro_pr_auc, n_repeats=n_repeats, random_state=seed)
    return _importance_table(names, result.importances_mean, result.importances_std)


def _importance_table(names: Sequence[str], mean: np.ndarray, std: np.ndarray) -> pd.DataFrame:
    table = pd.DataFrame({"feature": list(names), "importance": mean, "std": std})
    table = table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def restrict_categories(dataset: PreparedDataset, categories: Sequence[str] | None) -> PreparedDataset:
    """The dataset with only the tags of ``categories`` (None: all tags); an unknown category is an error."""
    if categories is None:
        return dataset
    unknown = sorted(set(categories) - set(dataset.categories))
    if unknown:
        raise ValueError(f"categories {unknown} not in dataset '{dataset.name}' "
                         f"(it has {sorted(set(dataset.categories))})")
    return dataset.select_tags([t for t, c in zip(dataset.tags, dataset.categories) if c in set(categories)])


@dataclass
class SplitData:
    """Rows with features of one split: ``rows`` into the dataset, ``X [n, n_features]``, ``Y {0,1} [n, n_tags]``."""

    rows: np.ndarray
    X: np.ndarray
    Y: np.ndarray


def split_data(dataset: PreparedDataset, matrix: FeatureMatrix, split: str) -> SplitData:
    """The tracks of ``split`` that have features; tracks without are left out with a warning."""
    rows = dataset.split_indices(split)
    kept = rows[matrix.valid[rows]]
    if len(kept) < len(rows):
        log.warning("%s: %d of %d %s tracks have no features and are left out", matrix.description,
                    len(rows) - len(kept), len(rows), split)
    return SplitData(rows=kept, X=matrix.values[kept], Y=dataset.labels[kept].astype(np.int64))


def fit_and_evaluate(dataset: PreparedDataset, matrix: FeatureMatrix, *, estimator: BaseEstimator,
                     param_grid: Mapping[str, Sequence], standardize: bool, n_jobs: int,
                     context: BaselineContext) -> tuple[Selection, RetrievalResults, SplitData]:
    """Select on valid, evaluate on test, write ``metrics/test.json`` (+ valid) and ``baseline/grid_search.csv``."""
    if len(dataset.tags) < 2:
        raise ValueError(f"a multi-label tagger needs at least 2 tags, dataset '{dataset.name}' has {dataset.tags}")
    train, valid, test = (split_data(dataset, matrix, s) for s in metric_keys.SPLITS)
    if len(train.rows) == 0 or len(test.rows) == 0:
        raise ValueError(f"dataset '{dataset.name}': no train or no test track with {matrix.description}")
    selection = select_on_valid(estimator, param_grid, X_train=train.X, Y_train=train.Y, X_valid=valid.X,
                                Y_valid=valid.Y, tags=dataset.tags, categories=dataset.categories,
                                standardize=standardize, n_jobs=n_jobs, k=context.top_k)
    scores = tag_scores(selection.tagger, test.X)
    results = evaluate_scores(scores=scores, labels=test.Y, tags=dataset.tags, categories=dataset.categories,
                              split=metric_keys.TEST, k=context.top_k)
    out = Path(context.output_dir) / BASELINE_DIR
    out.mkdir(parents=True, exist_ok=True)
    selection.grid.to_csv(out / "grid_search.csv", index=False)
    if selection.valid is not None:
        valid_scores = tag_scores(selection.tagger, valid.X)
        write_split(selection.valid, scores=valid_scores, labels=valid.Y, track_ids=_ids(dataset, valid.rows),
                    tags=dataset.tags, categories=dataset.categories, output_dir=context.output_dir)
    write_split(results, scores=scores, labels=test.Y, track_ids=_ids(dataset, test.rows), tags=dataset.tags,
                categories=dataset.categories, output_dir=context.output_dir)
    if is_single_label(dataset.labels):
        write_confusion_matrix(labels=test.Y, scores=scores, tags=dataset.tags, out_dir=out)
    return selection, results, test


def _ids(dataset: PreparedDataset, rows: np.ndarray) -> list[str]:
    ids = dataset.track_ids
    return [ids[i] for i in rows]


class SklearnTaggerBaseline:
    """``mode=baseline +baseline=handcrafted_{logreg,rf,hgb,svm}``: a scikit-learn tagger on song vectors.

    Args:
        source: where the song vectors come from (:mod:`tagretrieval.baselines.sources`).
        estimator: a scikit-learn binary classifier, cloned once per tag (one-vs-rest).
        param_grid: estimator parameter -> values, chosen on the valid split (module doc); ``{}``: none.
        standardize: z-score the features (statistics of the train split) before the classifier.
        categories: only the tags of these categories (e.g. ``[genre]``); None: every tag.
        importance: ``"none"``, ``"model"`` (trees' impurity importances or linear models' ``|coef|``, mean
            over tags) or ``"permutation"`` (drop of the valid macro PR-AUC when a feature is shuffled).
        permutation_repeats: shuffles per feature for ``importance="permutation"``.
        n_jobs: parallel fits across tags (scikit-learn ``n_jobs``).
        seed: random state of the permutation importance.

    Writes ``metrics/{test,valid}.json`` (+ per-tag CSV and score matrices) and, under ``baseline/``,
    ``grid_search.csv``, ``summary.json``, ``feature_importances.csv`` (unless ``importance="none"``), and
    ``confusion_matrix.{csv,png}`` when every song carries exactly one of the tags.
    """

    def __init__(self, *, source, estimator: BaseEstimator, param_grid: Mapping[str, Sequence], standardize: bool,
                 categories: Sequence[str] | None, importance: str, permutation_repeats: int, n_jobs: int,
                 seed: int) -> None:
        if importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
        if permutation_repeats < 1:
            raise ValueError(f"permutation_repeats must be >= 1, got {permutation_repeats}")
        self.source, self.estimator, self.param_grid = source, estimator, dict(param_grid)
        self.standardize, self.categories = standardize, None if categories is None else list(categories)
        self.importance, self.permutation_repeats = importance, permutation_repeats
        self.n_jobs, self.seed = n_jobs, seed

    def run(self, context: BaselineContext) -> RetrievalResults:
        dataset = restrict_categories(context.dataset, self.categories)
        matrix = self.source.matrix(dataset, frontend=context.frontend, progress=context.progress)
        with single_threaded():
            return self._fit(context, dataset, matrix)

    def _fit(self, context: BaselineContext, dataset: PreparedDataset, matrix: FeatureMatrix) -> RetrievalResults:
        selection, results, _ = fit_and_evaluate(dataset, matrix, estimator=self.estimator,
                                                 param_grid=self.param_grid, standardize=self.standardize,
                                                 n_jobs=self.n_jobs, context=context)
        out = Path(context.output_dir) / BASELINE_DIR
        if self.importance != "none":
            if self.importance == "model":
                table = model_importances(selection.tagger, matrix.names)
            else:
                valid = split_data(dataset, matrix, metric_keys.VALID)
                if len(valid.rows) == 0:
                    raise ValueError("importance=permutation needs a valid split, and it is empty")
                table = permuted_importances(selection.tagger, matrix.names, X=valid.X, Y=valid.Y, tags=dataset.tags,
                                             categories=dataset.categories, n_repeats=self.permutation_repeats,
                                             seed=self.seed, k=context.top_k)
            table.to_csv(out / "feature_importances.csv", index=False)
            print(f"top features ({self.importance} importance):\n" + table.head(10).to_string(index=False))
        summary = {
            "baseline": type(self).__name__, "source": matrix.description, "estimator": repr(self.estimator),
            "standardize": self.standardize, "best_params": selection.params, "n_features": len(matrix.names),
            "tags": dataset.tags, "n_tracks_without_features": int((~matrix.valid).sum()),
            "valid_macro": selection.valid.macro if selection.valid else None, "test_macro": results.macro,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        return results
