"""``mode=baseline +baseline=probe``: how much of the tags any song vectors hold.

On the vectors of a source (a checkpoint's song embeddings, CF vectors, hand-crafted or precomputed features):

- **linear probe**: one-vs-rest logistic regression, its ``C`` chosen on the valid split, evaluated with the
  retrieval metrics on the test split (``metrics/test.json``), as :mod:`tagretrieval.baselines.taggers`;
- **kNN with majority voting** (the FMA tradition): a test song gets the tags that more than half of its
  ``k`` nearest train songs carry; ``k`` is chosen on the valid split by the Jaccard index (mean over songs of
  ``|true & predicted| / |true | predicted|``), the test Jaccard index is reported;
- **PCA explained variance** of the train songs' vectors (after standardisation when ``standardize``): how
  many dimensions the vectors really use.

Writes, besides ``metrics/``: ``baseline/grid_search.csv`` (probe), ``baseline/knn.csv`` (valid Jaccard per
``k``), ``baseline/knn.json`` (best ``k``, test Jaccard), ``baseline/pca_explained_variance.{csv,png}``,
``baseline/summary.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.preprocessing import StandardScaler

from tagretrieval.evaluation import metric_keys
from tagretrieval.baselines.analysis import (
    components_for,
    explained_variance,
    jaccard_index,
    knn_majority_vote,
    plot_explained_variance,
)
from tagretrieval.baselines.context import BaselineContext
from tagretrieval.data.feature_cache import FeatureMatrix
from tagretrieval.baselines.taggers import (
    BASELINE_DIR,
    fit_and_evaluate,
    restrict_categories,
    single_threaded,
    split_data,
)
from tagretrieval.data.prepared import PreparedDataset
from tagretrieval.evaluation import RetrievalResults


def select_knn(*, X_train, Y_train, X_valid, Y_valid, n_neighbors: Sequence[int], metric: str) -> pd.DataFrame:
    """Valid Jaccard index of every ``k`` in ``n_neighbors`` (columns ``n_neighbors``, ``valid_jaccard``)."""
    rows = [{"n_neighbors": k, "valid_jaccard": jaccard_index(
        Y_valid, knn_majority_vote(X_train, Y_train, X_valid, n_neighbors=k, metric=metric))} for k in n_neighbors]
    return pd.DataFrame(rows)


class ProbeBaseline:
    """Linear probe, kNN (Jaccard index) and PCA explained variance of a source's song vectors (module doc).

    Args:
        source: the song vectors (:mod:`tagretrieval.baselines.sources`).
        estimator: the probe (a ``LogisticRegression``), one per tag; param_grid: its grid, chosen on valid.
        n_neighbors: the ``k`` tried for the kNN (chosen on valid by the Jaccard index).
        knn_metric: ``"euclidean"`` or ``"cosine"`` (any scikit-learn ``NearestNeighbors`` metric).
        standardize: z-score the vectors with the train split's statistics before every analysis.
        categories: only the tags of these categories; None: every tag.
        n_jobs: parallel probe fits across tags.
    """

    def __init__(self, *, source, estimator: BaseEstimator, param_grid: Mapping[str, Sequence],
                 n_neighbors: Sequence[int], knn_metric: str, standardize: bool, categories: Sequence[str] | None,
                 n_jobs: int) -> None:
        if not n_neighbors or min(n_neighbors) < 1:
            raise ValueError(f"n_neighbors must be a non-empty list of positive ints, got {list(n_neighbors)}")
        self.source, self.estimator, self.param_grid = source, estimator, dict(param_grid)
        self.n_neighbors, self.knn_metric, self.standardize = [int(k) for k in n_neighbors], knn_metric, standardize
        self.categories, self.n_jobs = None if categories is None else list(categories), n_jobs

    def run(self, context: BaselineContext) -> RetrievalResults:
        dataset = restrict_categories(context.dataset, self.categories)
        matrix = self.source.matrix(dataset, frontend=context.frontend, progress=context.progress)
        with single_threaded():
            return self._analyse(context, dataset, matrix)

    def _analyse(self, context: BaselineContext, dataset: PreparedDataset, matrix: FeatureMatrix) -> RetrievalResults:
        selection, results, test = fit_and_evaluate(dataset, matrix, estimator=self.estimator,
                                                    param_grid=self.param_grid, standardize=self.standardize,
                                                    n_jobs=self.n_jobs, context=context)
        out = Path(context.output_dir) / BASELINE_DIR
        train, valid = split_data(dataset, matrix, metric_keys.TRAIN), split_data(dataset, matrix, metric_keys.VALID)
        X_train, X_valid, X_test = train.X, valid.X, test.X
        if self.standardize:
            scaler = StandardScaler().fit(X_train)
            X_train, X_valid, X_test = (scaler.transform(x) if len(x) else x for x in (X_train, X_valid, X_test))

        candidates = [k for k in self.n_neighbors if k <= len(X_train)]
        if len(X_valid) == 0 and len(candidates) > 1:
            raise ValueError(f"choosing k among {candidates} needs a valid split, and it is empty")
        knn = (select_knn(X_train=X_train, Y_train=train.Y, X_valid=X_valid, Y_valid=valid.Y, n_neighbors=candidates,
                          metric=self.knn_metric) if len(X_valid) else pd.DataFrame({"n_neighbors": candidates}))
        best_k = int(knn.loc[knn["valid_jaccard"].idxmax(), "n_neighbors"]) if len(X_valid) else candidates[0]
        test_jaccard = jaccard_index(test.Y, knn_majority_vote(X_train, train.Y, X_test, n_neighbors=best_k,
                                                               metric=self.knn_metric))
        knn.to_csv(out / "knn.csv", index=False)
        knn_summary = {"n_neighbors": best_k, "metric": self.knn_metric, "test_jaccard": test_jaccard,
                       "n_test_songs": len(test.rows)}
        (out / "knn.json").write_text(json.dumps(knn_summary, indent=2) + "\n")
        print(f"kNN majority vote (k={best_k}, {self.knn_metric}): test Jaccard index {test_jaccard:.4f}")

        variance = explained_variance(X_train)
        variance.to_csv(out / "pca_explained_variance.csv", index=False)
        n90, n95 = components_for(variance, 0.90), components_for(variance, 0.95)
        plot_explained_variance(variance, out / "pca_explained_variance.png",
                                title=f"{matrix.description}: {len(matrix.names)} dims, train songs")
        print(f"PCA: {n90} / {n95} of {len(variance)} components explain 90% / 95% of the variance")

        summary = {
            "baseline": type(self).__name__, "source": matrix.description, "n_features": len(matrix.names),
            "standardize": self.standardize, "probe": repr(self.estimator), "probe_best_params": selection.params,
            "probe_test_macro": results.macro, "knn": knn_summary,
            "pca_components_90": n90, "pca_components_95": n95,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        return results
