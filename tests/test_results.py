"""RetrievalResults: skipped tags, averages, files (JSON round trip, CSV; atomic), logger keys, table."""

import csv
import errno
import json
import os

import numpy as np
import pytest

from tagretrieval.evaluation import metric_keys
from tagretrieval.evaluation import NO_NEGATIVES, NO_POSITIVES, RetrievalResults, per_tag_metrics, write_results
from tagretrieval.runtime.files import FileWriteError
from tagretrieval.evaluation.metric_keys import PR_AUC, ROC_AUC, p_at

P_AT_10 = p_at(10)
METRICS = (ROC_AUC, PR_AUC, P_AT_10)  # of the fixture's k = 10 (30 songs)

TAGS = ["rock", "jazz", "happy", "sad", "guitar", "never", "always", "calm"]
CATEGORIES = ["genre", "genre", "mood", "mood", "instrument", "genre", "mood", "mood"]


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    """``scores [8, 30]``, ``relevance [8, 30]``: tag "never" has no positive, "always" no negative."""
    rng = np.random.default_rng(0)
    relevance = rng.random((len(TAGS), 30)) < 0.3
    relevance[:, 0], relevance[:, 1] = True, False
    relevance[TAGS.index("never")] = False
    relevance[TAGS.index("always")] = True
    scores = rng.standard_normal((len(TAGS), 30)) + relevance  # better than chance
    return scores, relevance


@pytest.fixture
def results(data) -> RetrievalResults:
    scores, relevance = data
    return RetrievalResults.compute(scores=scores, relevance=relevance, tags=TAGS, categories=CATEGORIES, split="test")


def test_single_class_tags_are_skipped_with_a_reason(results):
    assert results.skipped_tags == {"never": NO_POSITIVES, "always": NO_NEGATIVES}
    assert set(results.per_tag) == set(TAGS) - {"never", "always"}


def test_macro_is_the_mean_over_scored_tags_only(data, results):
    scores, relevance = data
    scored = [i for i, tag in enumerate(TAGS) if tag not in ("never", "always")]
    expected = per_tag_metrics(scores[scored], relevance[scored])
    for name in METRICS:
        assert results.macro[name] == pytest.approx(expected[name].mean(), abs=1e-12)
    assert results.n_songs == 30


def test_per_tag_rows_hold_metrics_counts_and_category(data, results):
    scores, relevance = data
    i = TAGS.index("happy")
    expected = per_tag_metrics(scores[i : i + 1], relevance[i : i + 1])
    row = results.per_tag["happy"]
    assert row == {**{name: pytest.approx(expected[name][0]) for name in METRICS},
                   "n_positives": int(relevance[i].sum()), "category": "mood"}


def test_per_category_means_and_tag_counts(results):
    assert {c: row["n_tags"] for c, row in results.per_category.items()} == {"genre": 2, "instrument": 1, "mood": 3}
    mood = [results.per_tag[tag] for tag in ("happy", "sad", "calm")]
    for name in METRICS:
        assert results.per_category["mood"][name] == pytest.approx(np.mean([row[name] for row in mood]))


def test_a_category_with_only_skipped_tags_is_absent():
    relevance = np.array([[1, 0, 1, 0], [0, 0, 0, 0]])
    results = RetrievalResults.compute(scores=np.array([[0.9, 0.1, 0.8, 0.2]] * 2), relevance=relevance,
                                       tags=["a", "b"], categories=["genre", "era"], split="valid")
    assert list(results.per_category) == ["genre"]
    # 4 songs < k = 10: precision is taken at k = 4, the key says so, and a note tells why
    assert (results.k, results.metrics) == (4, (ROC_AUC, PR_AUC, "p_at_4"))
    assert results.macro == {ROC_AUC: 1.0, PR_AUC: 1.0, "p_at_4": 0.5}
    assert "4 songs, fewer than k=10: precision is computed at k=4 (p_at_4)" in results.notes[0]


def test_every_tag_skipped_is_an_error():
    with pytest.raises(ValueError, match="no tag can be scored"):
        RetrievalResults.compute(scores=np.zeros((2, 3)), relevance=np.array([[0, 0, 0], [1, 1, 1]]),
                                 tags=["a", "b"], categories=["genre", "mood"], split="test")


@pytest.mark.parametrize(
    "tags, categories, match",
    [
        (TAGS[:-1], CATEGORIES, "8 tag rows"),
        (TAGS, CATEGORIES[:-1], "8 tag rows"),
        (["rock"] * len(TAGS), CATEGORIES, "'rock' appears twice"),
        (TAGS, ["genre/sub", *CATEGORIES[1:]], "category must be"),
        (TAGS, ["macro", *CATEGORIES[1:]], "'macro' is reserved"),
    ],
)
def test_names_that_do_not_fit_the_rows_are_rejected(data, tags, categories, match):
    scores, relevance = data
    with pytest.raises(ValueError, match=match):
        RetrievalResults.compute(scores=scores, relevance=relevance, tags=tags, categories=categories, split="test")


def test_unknown_split_is_rejected(data):
    scores, relevance = data
    with pytest.raises(ValueError, match="unknown split 'val'"):
        RetrievalResults.compute(scores=scores, relevance=relevance, tags=TAGS, categories=CATEGORIES, split="val")


def test_flat_gives_logger_keys_for_macro_and_categories(results):
    flat = results.flat()
    assert flat["test/pr_auc/macro"] == results.macro[PR_AUC]
    assert flat["test/roc_auc/mood"] == results.per_category["mood"][ROC_AUC]
    assert flat["test/p_at_10/genre"] == results.per_category["genre"][P_AT_10]
    assert flat["test/song_roc_auc"] == results.song_wise[ROC_AUC] and flat["test/song_pr_auc"] == results.song_wise[PR_AUC]
    assert len(flat) == len(METRICS) * (1 + len(results.per_category)) + 2
    assert all(isinstance(value, float) for value in flat.values())
    # hierarchical trackers (Neptune) refuse a key that is both a value and a folder of other keys
    assert not [(a, b) for a in flat for b in flat if b.startswith(a + "/")]


def test_precision_is_keyed_by_its_k_and_its_cap_is_stated(data, tmp_path):
    scores, relevance = data
    results = RetrievalResults.compute(scores=scores, relevance=relevance, tags=TAGS, categories=CATEGORIES,
                                       split="test", k=12)
    assert results.metrics == (ROC_AUC, PR_AUC, "p_at_12") and set(results.macro) == set(results.metrics)
    assert "test/p_at_12/macro" in results.flat() and not any("p_at_10" in key for key in results.flat())
    results.to_csv(tmp_path / "per_tag.csv")
    assert (tmp_path / "per_tag.csv").read_text().splitlines()[0] == "tag,category,n_positives,roc_auc,pr_auc,p_at_12"
    # a tag with fewer than 12 positives cannot reach P@12 = 1: the note counts them and gives the best macro
    positives = [row["n_positives"] for row in results.per_tag.values()]
    few = sum(n < 12 for n in positives)
    assert few > 0
    ceiling = np.mean([min(1.0, n / 12) for n in positives])
    assert results.notes == [f"{few} of {len(positives)} scored tags have fewer than 12 positive songs: their p_at_12 "
                             f"is at most n_positives/12; the highest macro p_at_12 possible on this split is "
                             f"{ceiling:.4f}"]
    assert all(row["p_at_12"] <= row["n_positives"] / 12 + 1e-12 for row in results.per_tag.values())
    assert "note: " + results.notes[0][:40] in results.table()


def test_json_round_trip_with_exact_keys_and_no_nan(tmp_path, results):
    path = tmp_path / "test.json"
    results.to_json(path)

    def reject(constant):
        raise AssertionError(f"{constant} in JSON")

    data = json.loads(path.read_text(), parse_constant=reject)
    assert list(data) == ["split", "n_songs", "k", "macro", "per_category", "per_tag", "skipped_tags", "notes",
                          "song_wise"]
    assert RetrievalResults.from_json(path) == results


def test_from_json_rejects_a_file_with_other_keys(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"split": "test", "macro": {}}))
    with pytest.raises(ValueError, match="other.json: expected keys"):
        RetrievalResults.from_json(path)


def test_csv_has_one_row_per_scored_tag_sorted_by_category_then_tag(tmp_path, results):
    path = tmp_path / "per_tag.csv"
    results.to_csv(path)
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["tag", "category", "n_positives", ROC_AUC, PR_AUC, P_AT_10]
    assert [row["tag"] for row in rows] == ["jazz", "rock", "guitar", "calm", "happy", "sad"]
    for row in rows:
        expected = results.per_tag[row["tag"]]
        assert row["category"] == expected["category"] and int(row["n_positives"]) == expected["n_positives"]
        assert all(float(row[name]) == expected[name] for name in METRICS)


def test_write_results_puts_json_and_csv_under_metrics(tmp_path, results):
    paths = write_results(results, tmp_path / "run")
    assert paths == {"json": tmp_path / "run" / "metrics" / "test.json",
                     "csv": tmp_path / "run" / "metrics" / "test_per_tag.csv"}
    assert RetrievalResults.from_json(paths["json"]) == results
    assert paths["csv"].read_text().count("\n") == 1 + len(results.per_tag)


def test_a_failed_metrics_write_leaves_no_partial_file_and_names_the_path(tmp_path, results, monkeypatch):
    """A full disk while the metrics are written: the error names the file, the previous file survives whole, and
    no temporary file is left behind."""
    paths = write_results(results, tmp_path / "run")
    before = {path: path.read_bytes() for path in paths.values()}
    real_replace = os.replace

    def disk_full(source, target):
        if str(target).endswith("_per_tag.csv"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", disk_full)
    changed = RetrievalResults(**{**vars(results), "n_songs": results.n_songs + 1})
    with pytest.raises(FileWriteError, match=r"could not write .*test_per_tag\.csv.*No space left") as error:
        write_results(changed, tmp_path / "run")
    assert error.value.path == paths["csv"] and error.value.errno == errno.ENOSPC
    assert paths["csv"].read_bytes() == before[paths["csv"]]       # the old file, whole
    assert RetrievalResults.from_json(paths["json"]) == changed     # the other file, new and whole
    assert sorted(p.name for p in (tmp_path / "run" / "metrics").iterdir()) == ["test.json", "test_per_tag.csv"]

    def always_full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", always_full)
    with pytest.raises(FileWriteError, match="test.json"):
        write_results(results, tmp_path / "fresh")
    assert list((tmp_path / "fresh" / "metrics").iterdir()) == []  # nothing half-written, no temp file


def test_table_shows_macro_categories_and_skipped_count(results):
    table = results.table()
    assert "macro" in table and f"{results.macro[PR_AUC]:.4f}" in table
    for category in ("genre", "instrument", "mood"):
        assert category in table
    assert "skipped tags: 2" in table and "never (no positive songs in split)" in table


def test_metric_keys():
    assert metric_keys.MONITOR == "valid/pr_auc/macro" and metric_keys.MONITOR_MODE == "max"
    assert metric_keys.key(metric_keys.TEST, ROC_AUC, "genre") == "test/roc_auc/genre"
    assert metric_keys.key(metric_keys.VALID, p_at(5)) == "valid/p_at_5/macro"
    assert metric_keys.key(metric_keys.TRAIN, metric_keys.LOSS) == "train/loss"
    assert metric_keys.k_of("p_at_5") == 5 and metric_keys.k_of("pr_auc") is None
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        p_at(0)
    with pytest.raises(ValueError, match="'macro' is reserved"):
        metric_keys.check_category("macro")
    with pytest.raises(ValueError, match="unknown split"):
        metric_keys.key("val", PR_AUC)
    with pytest.raises(ValueError, match="metric must be"):
        metric_keys.key(metric_keys.TEST, "pr/auc")
