"""Reports: per-run tables and figures, comparison over seeds (means, t intervals, Markdown, LaTeX), neighbours."""

from __future__ import annotations

import csv
import math
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from tagretrieval.evaluation import RetrievalResults
from tagretrieval.evaluation.metric_keys import PR_AUC, ROC_AUC, metrics, p_at
from tagretrieval.reports.compare import Run, compare_runs, find_runs
from tagretrieval.reports.compare import main as compare_main
from tagretrieval.reports.neighbours import main as neighbours_main
from tagretrieval.reports.neighbours import nearest_tags
from tagretrieval.reports.plots import plot_training_curves
from tagretrieval.reports.scores import ScoreMatrix
from tagretrieval.reports.stats import mean_ci
from tagretrieval.reports.training_log import read_training_log

from conftest import compose_config, run_task

# two-sided 95% Student t quantiles t_{0.975, df}, from a printed t-table
T_975 = {1: 12.706205, 2: 4.302653}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000, f"{path} is not a drawn PNG"


# --- mean and confidence interval ------------------------------------------------------------------------------

def test_mean_ci_matches_the_t_table():
    three = mean_ci([0.5, 0.6, 0.7])  # s = 0.1
    assert three.mean == pytest.approx(0.6) and three.n == 3
    assert three.half_width == pytest.approx(T_975[2] * 0.1 / math.sqrt(3), rel=1e-6)
    two = mean_ci([0.40, 0.44])  # s / sqrt(2) = |a - b| / 2 = 0.02
    assert two.half_width == pytest.approx(T_975[1] * 0.02, rel=1e-6)


def test_a_single_run_has_no_interval_and_bad_values_are_refused():
    assert mean_ci([0.3]).half_width is None
    with pytest.raises(ValueError, match="finite"):
        mean_ci([0.3, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])


# --- comparison over fake run folders --------------------------------------------------------------------------

TARGETS = {"hybrid": "tagretrieval.models.HybridModel", "acoustic": "tagretrieval.models.AcousticModel",
           "random": "tagretrieval.data.samplers.RandomPairSampler", "balanced": "tagretrieval.data.samplers.BalancedPairSampler"}


def write_run(run_dir: Path, *, model: str, sampler: str, seed: int, overall: float, era: float | None,
              mood: float = 0.5, margin: float = 0.4, choices: bool = True, k: int = 10) -> Path:
    """A finished-run folder as main.py leaves it: ``.hydra/config.yaml`` (+ ``hydra.yaml``), ``metrics/test.json``.

    Every metric of a column gets the same value shifted per metric: PR-AUC = v, P@k = v - 0.1, ROC-AUC = v + 0.2.
    """
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"mode": "train", "seed": seed, "progress": False,
              "model": {"_target_": TARGETS[model], "embedding_dim": 32},
              "sampler": {"_target_": TARGETS[sampler], "batch_size": 16, "seed": "${seed}"},
              "loss": {"_target_": "tagretrieval.training.losses.TripletLoss", "margin": margin},
              "logger": {"csv": {"save_dir": str(run_dir)}}}
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if choices:
        hydra = {"hydra": {"runtime": {"choices": {"model": model, "sampler": sampler, "experiment": None}}}}
        (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))

    def row(value: float) -> dict:
        return {PR_AUC: value, p_at(k): value - 0.1, ROC_AUC: value + 0.2}

    per_category = {"mood": {**row(mood), "n_tags": 1}}
    per_tag = {"happy": {**row(mood), "n_positives": 5, "category": "mood"}}
    if era is not None:
        per_category["era"] = {**row(era), "n_tags": 1}
        per_tag["sixties"] = {**row(era), "n_positives": 5, "category": "era"}
    results = RetrievalResults(split="test", n_songs=50, k=k, per_tag=per_tag, per_category=per_category,
                               macro=row(overall), skipped_tags={}, notes=[])
    (run_dir / "metrics").mkdir()
    results.to_json(run_dir / "metrics" / "test.json")
    return run_dir


@pytest.fixture
def multirun(tmp_path) -> Path:
    """``multirun/DATE/TIME/0..7`` of a models x samplers x seeds sweep, with hand-picked PR-AUC values."""
    root = tmp_path / "multirun" / "2024-05-01" / "12-00-00"
    jobs = [  # model, sampler, seed, overall PR-AUC, era PR-AUC
        ("hybrid", "random", 1, 0.50, 0.30), ("hybrid", "random", 2, 0.60, 0.40), ("hybrid", "random", 3, 0.70, 0.20),
        ("acoustic", "random", 1, 0.30, 0.10),
        ("hybrid", "balanced", 1, 0.40, 0.35), ("hybrid", "balanced", 2, 0.44, 0.25),
        ("acoustic", "balanced", 1, 0.20, 0.15), ("acoustic", "balanced", 2, 0.26, None),  # era: all tags skipped
    ]
    for i, (model, sampler, seed, overall, era) in enumerate(jobs):
        write_run(root / str(i), model=model, sampler=sampler, seed=seed, overall=overall, era=era)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_comparison_means_and_intervals_equal_hand_computed_ones(multirun):
    runs = [Run.load(path) for path in find_runs([multirun])]
    comparison = compare_runs(runs, by=["model", "sampler"])
    groups = {g.labels: g for g in comparison.groups}
    assert list(groups) == [("hybrid", "random"), ("acoustic", "random"), ("hybrid", "balanced"),
                            ("acoustic", "balanced")]  # order of the sweep
    assert comparison.columns == ["overall", "era", "mood"]

    hybrid_random = groups["hybrid", "random"].estimates
    assert hybrid_random[PR_AUC, "overall"].mean == pytest.approx(0.6)
    assert hybrid_random[PR_AUC, "overall"].half_width == pytest.approx(T_975[2] * 0.1 / math.sqrt(3), rel=1e-6)
    assert hybrid_random[p_at(10), "overall"].mean == pytest.approx(0.5)  # shifted values, same spread
    assert hybrid_random[ROC_AUC, "era"].mean == pytest.approx(0.5)
    assert hybrid_random[ROC_AUC, "era"].half_width == pytest.approx(T_975[2] * 0.1 / math.sqrt(3), rel=1e-6)
    hybrid_balanced = groups["hybrid", "balanced"].estimates[PR_AUC, "overall"]
    assert (hybrid_balanced.mean, hybrid_balanced.n) == (pytest.approx(0.42), 2)
    assert hybrid_balanced.half_width == pytest.approx(T_975[1] * 0.02, rel=1e-6)
    assert groups["acoustic", "random"].estimates[PR_AUC, "overall"].half_width is None
    era = groups["acoustic", "balanced"].estimates[PR_AUC, "era"]
    assert (era.mean, era.n, era.half_width) == (pytest.approx(0.15), 1, None)  # the run without era is left out


def test_markdown_and_latex_show_the_tables_and_say_where_there_is_no_interval(multirun):
    comparison = compare_runs([Run.load(p) for p in find_runs([multirun])], by=["model", "sampler"])
    markdown = comparison.to_markdown(digits=4)
    half_3 = f"{T_975[2] * 0.1 / math.sqrt(3):.4f}"
    assert "## MAP (PR-AUC)" in markdown and "## P@10" in markdown and "## ROC-AUC" in markdown
    assert "| model | sampler | n | overall | era | mood |" in markdown
    assert f"| hybrid | random | 3 | 0.6000 ± {half_3} |" in markdown
    assert f"| hybrid | balanced | 2 | 0.4200 ± {T_975[1] * 0.02:.4f} |" in markdown
    assert "| acoustic | random | 1 | 0.3000 | 0.1000 |" in markdown
    assert "| acoustic | balanced | 2 | 0.2300 ± " in markdown and "0.1500 (n=1)" in markdown
    assert "n = 1 (no confidence interval, a single run): acoustic / random." in markdown

    latex = comparison.to_latex(digits=4)
    assert f"hybrid & random & 3 & $0.6000 \\pm {half_3}$" in latex
    assert_latex_is_well_formed(latex, n_tables=3, n_columns=6)
    assert "95\\%" in latex


def assert_latex_is_well_formed(latex: str, *, n_tables: int, n_columns: int) -> None:
    """Balanced braces and math, matched environments, every row as wide as the header."""
    body = "\n".join(line for line in latex.splitlines() if not line.startswith("%"))
    unescaped = re.sub(r"\\[{}$&%_#]", "", body)
    depth = 0
    for char in unescaped:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0, "closing brace without an opening one"
    assert depth == 0
    assert body.count(r"\begin{tabular}") == body.count(r"\end{tabular}") == n_tables
    rows = [line for line in unescaped.splitlines() if line.endswith(r"\\") and r"\multicolumn" not in line]
    assert rows and all(row.count("&") == n_columns - 1 for row in rows)
    assert all(row.count("$") % 2 == 0 for row in rows)


def test_compare_command_writes_markdown_latex_and_csv(multirun, tmp_path, capsys):
    out = tmp_path / "tables" / "table"
    compare_main([str(multirun), "--by", "model", "sampler", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| hybrid | random | 3 | 0.6000 ± " in printed and "\\begin{tabular}" in printed
    assert out.with_suffix(".md").read_text() in printed and out.with_suffix(".tex").read_text() in printed
    with open(out.with_suffix(".csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    row = next(r for r in rows if (r["model"], r["sampler"], r["metric"], r["column"])
               == ("hybrid", "balanced", PR_AUC, "overall"))
    assert float(row["mean"]) == pytest.approx(0.42) and float(row["ci_half_width"]) == pytest.approx(T_975[1] * 0.02)
    assert row["n"] == "2"


def test_groups_by_target_class_or_leaf_key_without_hydra_yaml(tmp_path):
    write_run(tmp_path / "a", model="hybrid", sampler="random", seed=1, overall=0.5, era=0.1, choices=False)
    write_run(tmp_path / "b", model="hybrid", sampler="random", seed=2, overall=0.7, era=0.3, choices=False)
    runs = [Run.load(p) for p in find_runs([tmp_path])]
    assert runs[0].label("model") == "HybridModel" and runs[0].label("model.embedding_dim") == "32"
    assert runs[0].label("sampler.seed") == "1"  # interpolations resolve
    comparison = compare_runs(runs, by=["model", "loss.margin"])
    assert [g.labels for g in comparison.groups] == [("HybridModel", "0.4")]
    with pytest.raises(KeyError, match="has no key 'optimizer'"):
        runs[0].label("optimizer")
    with pytest.raises(KeyError, match="section without _target_"):
        runs[0].label("logger")


def test_pooling_runs_that_differ_in_more_than_the_seed_is_flagged(tmp_path):
    write_run(tmp_path / "0", model="hybrid", sampler="random", seed=1, overall=0.5, era=0.1, margin=0.4)
    write_run(tmp_path / "1", model="hybrid", sampler="random", seed=1, overall=0.7, era=0.3, margin=0.2)
    comparison = compare_runs([Run.load(p) for p in find_runs([tmp_path])], by=["model"])
    assert any("differ in loss.margin" in note for note in comparison.notes)
    assert any("same seed (1)" in note for note in comparison.notes)
    assert all("logger" not in note for note in comparison.notes)  # bookkeeping keys do not count
    assert "loss.margin" in comparison.to_markdown()
    by_margin = compare_runs([Run.load(p) for p in find_runs([tmp_path])], by=["model", "loss.margin"])
    assert not any("differ in" in note for note in by_margin.notes)


def test_comparison_names_precision_by_its_k_and_refuses_mixed_cutoffs(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path / str(seed), model="hybrid", sampler="random", seed=seed, overall=0.5, era=0.1, k=5)
    comparison = compare_runs([Run.load(p) for p in find_runs([tmp_path])], by=["model"])
    assert comparison.metrics == (PR_AUC, "p_at_5", ROC_AUC)
    assert "## P@5" in comparison.to_markdown() and "P@10" not in comparison.to_markdown()
    write_run(tmp_path / "3", model="hybrid", sampler="random", seed=3, overall=0.5, era=0.1, k=10)
    with pytest.raises(ValueError, match=r"mix P@k cut-offs \[5, 10\]"):
        compare_runs([Run.load(p) for p in find_runs([tmp_path])], by=["model"])


def test_find_runs_sorts_job_numbers_naturally_and_names_empty_folders(tmp_path):
    for job in ("10", "2", "1"):
        write_run(tmp_path / "sweep" / job, model="hybrid", sampler="random", seed=int(job), overall=0.5, era=0.1)
    assert [p.name for p in find_runs([tmp_path / "sweep"])] == ["1", "2", "10"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty holds no run folder"):
        find_runs([tmp_path / "empty"])
    shutil.rmtree(tmp_path / "sweep" / "2" / ".hydra")
    with pytest.raises(FileNotFoundError, match="config.yaml not found"):
        Run.load(tmp_path / "sweep" / "2")


# --- one run: tables and figures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reported_run(tmp_path_factory, trained_run, smoke_overrides) -> tuple[Path, dict]:
    """A copy of the smoke run with the ``.hydra/config.yaml`` main.py writes, after ``mode=report``."""
    run_dir = tmp_path_factory.mktemp("reported") / "run"
    shutil.copytree(trained_run, run_dir)
    (run_dir / ".hydra").mkdir()  # run_task composes in-process: no Hydra job, no .hydra folder
    OmegaConf.save(compose_config(smoke_overrides, run_dir), run_dir / ".hydra" / "config.yaml")
    paths = run_task(["mode=report", f"run_dir={run_dir}", "report.pr_tags=[piano,happy]"],
                     tmp_path_factory.mktemp("report_job"))
    return run_dir, paths


def test_report_writes_tables_and_figures_next_to_the_metrics(reported_run):
    run_dir, paths = reported_run
    assert set(paths) == {"per_tag_csv", "per_tag_md", "per_category", "pr_curves", "training_curves"}
    assert all(path.parent == run_dir / "reports" for path in paths.values())
    for name in ("per_category", "pr_curves", "training_curves"):
        assert_png(paths[name])
    assert paths["per_tag_csv"].read_text() == (run_dir / "metrics" / "test_per_tag.csv").read_text()
    results = RetrievalResults.from_json(run_dir / "metrics" / "test.json")
    markdown = paths["per_tag_md"].read_text()
    for tag, row in results.per_tag.items():
        assert f"| {tag} | {row['category']} | {row['n_positives']} | {row[PR_AUC]:.4f} |" in markdown
    assert f"| macro | {len(results.per_tag)} | {results.macro[PR_AUC]:.4f} |" in markdown
    assert "![test_pr_curves](test_pr_curves.png)" in markdown


def test_report_caches_scores_that_reproduce_the_run_metrics(reported_run, tmp_path):
    run_dir, _ = reported_run
    scores = ScoreMatrix.load(run_dir / "metrics" / "test_scores.npz")
    saved = RetrievalResults.from_json(run_dir / "metrics" / "test.json")
    recomputed = scores.results(k=10)
    assert set(recomputed.per_tag) == set(saved.per_tag) and scores.scores.shape[1] == saved.n_songs
    for name in metrics(10):
        assert recomputed.macro[name] == pytest.approx(saved.macro[name], abs=1e-6)
    # the cache is used: a report no longer needs the checkpoint
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "checkpoints")
    (copy / "reports" / "test_pr_curves.png").unlink()
    run_task(["mode=report", f"run_dir={copy}"], tmp_path / "job")
    assert_png(copy / "reports" / "test_pr_curves.png")


def test_report_refuses_scores_that_do_not_reproduce_the_metrics(reported_run, tmp_path):
    run_dir, _ = reported_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    metrics = RetrievalResults.from_json(copy / "metrics" / "test.json")
    metrics.macro[PR_AUC] += 0.01  # as if the run had been retrained, or evaluated with another checkpoint
    metrics.to_json(copy / "metrics" / "test.json")
    with pytest.raises(ValueError, match="do not reproduce .*test_scores.npz is stale"):
        run_task(["mode=report", f"run_dir={copy}"], tmp_path / "job")
    (copy / "metrics" / "test_scores.npz").unlink()
    with pytest.raises(ValueError, match="do not reproduce .*pass report.checkpoint=PATH"):
        run_task(["mode=report", f"run_dir={copy}"], tmp_path / "job")
    assert not (copy / "metrics" / "test_scores.npz").exists()


def test_report_needs_a_run_dir_and_known_pr_tags(reported_run, tmp_path):
    run_dir, _ = reported_run
    with pytest.raises(ValueError, match="needs run_dir=DIR"):
        run_task(["mode=report"], tmp_path / "a")
    with pytest.raises(ValueError, match=r"not in the test scores: \['jazz'\]"):
        run_task(["mode=report", f"run_dir={run_dir}", "report.pr_tags=[jazz]"], tmp_path / "b")


def test_training_curves_from_tensorboard_events(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "tensorboard"))
    for step, (loss, pr_auc) in enumerate([(0.9, 0.2), (0.6, 0.3), (0.4, 0.35)]):
        writer.add_scalar("train/loss_epoch", loss, step)
        writer.add_scalar("valid/pr_auc/macro", pr_auc, step)
    writer.close()
    log = read_training_log(tmp_path)
    assert log.series("valid/pr_auc/macro")["value"].tolist() == pytest.approx([0.2, 0.3, 0.35])
    assert log.series("train/loss_epoch")["step"].tolist() == [0, 1, 2]
    assert_png(plot_training_curves(log, tmp_path / "curves.png"))
    assert read_training_log(tmp_path / "nothing") is None


# --- neighbour table -------------------------------------------------------------------------------------------

def _crc32(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


@pytest.fixture(scope="module")
def toy_word_vectors(tmp_path_factory) -> tuple[Path, Path]:
    """A gensim Word2Vec trained on a corpus where "keyboard" shares every context of "piano", "melancholy" every
    context of "sad" (words with the same contexts get the closest vectors), saved as gensim ``.kv`` and as word2vec
    text ``.txt``."""
    from gensim.models import Word2Vec

    contexts = {("piano", "keyboard"): ["chord", "pedal", "octave", "recital", "grand"],
                ("sad", "melancholy"): ["tears", "rain", "lonely", "grey", "sorrow"],
                ("drums", "percussion"): ["beat", "snare", "groove", "kick", "cymbal"]}
    sentences = [[word, context] for pair, words in contexts.items() for word in pair for context in words] * 30
    # sample=0: no down-sampling of frequent words (in a corpus this small every word counts as frequent)
    model = Word2Vec(sentences=sentences, vector_size=16, window=1, min_count=1, sg=1, negative=5, epochs=30,
                     sample=0, seed=0, workers=1, hashfxn=_crc32)
    folder = tmp_path_factory.mktemp("vectors")
    model.wv.save(str(folder / "toy.kv"))
    model.wv.save_word2vec_format(str(folder / "toy.txt"), binary=False)
    return folder / "toy.kv", folder / "toy.txt"


def test_neighbour_command_finds_the_planted_word_and_the_learned_tag_neighbours(
        toy_word_vectors, trained_run, tmp_path, capsys):
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    out = tmp_path / "neighbours.md"
    kv, txt = toy_word_vectors
    table = neighbours_main(["--tags", "piano", "sad", "jazz", "--word-vectors", f"gensim={kv}", str(txt),
                             "--dim", "16", "--checkpoint", f"hybrid={checkpoint}", "--k", "3", "--out", str(out),
                             "--trust-pickles"])  # the .kv file is a gensim pickle, made by this test
    assert table.sources == ["gensim", "toy", "hybrid"]  # a file without NAME= is named after itself
    for source in ("gensim", "toy"):
        assert table.cells["piano", source][0][0] == "keyboard"
        assert table.cells["sad", source][0][0] == "melancholy"
        assert all(word != "piano" for word, _ in table.cells["piano", source])
    assert table.cells["jazz", "toy"] is None and table.cells["jazz", "hybrid"] is None

    from tagretrieval.training.checkpoints import load_module

    module = load_module(checkpoint)
    with torch.no_grad():
        embeddings = module.tag_embeddings()
    i = module.tags.index("piano")
    cosine = [(torch.nn.functional.cosine_similarity(embeddings[i], embeddings[j], dim=0).item(), tag)
              for j, tag in enumerate(module.tags) if j != i]
    expected = [tag for _, tag in sorted(cosine, key=lambda pair: -pair[0])[:3]]
    assert [tag for tag, _ in table.cells["piano", "hybrid"]] == expected

    markdown = out.read_text()
    assert markdown in capsys.readouterr().out
    assert markdown.splitlines()[0] == "| tag | gensim | toy | hybrid |"
    assert "| jazz | (no vector) | (no vector) | (no vector) |" in markdown and "keyboard (" in markdown


def test_nearest_tags_uses_cosine_not_distance():
    embeddings = np.array([[1.0, 0.0], [10.0, 1.0], [0.9, 0.9], [0.0, 1.0]])  # "far" is long but points the same way
    neighbours = nearest_tags(tags=["a", "far", "diagonal", "up"], embeddings=embeddings, query="a", k=2)
    assert [tag for tag, _ in neighbours] == ["far", "diagonal"]
    assert neighbours[0][1] == pytest.approx(10 / math.sqrt(101))
