"""The bad-input table of docs/errors.md, one test per row: a clear error (a UserError, which
main.py prints as one `error:` line with exit status 2) or a skip that is reported, and nothing written half.

The fast tests run each row in-process; `test_every_row_through_main` (slow) types each one as a command.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import run_main, run_task

from tagretrieval.data.prepared import MANIFEST, PreparedDataset
from tagretrieval.runtime.errors import ConfigError, DataError, UserError
from tagretrieval.inference.queries import UnknownQueryError

QUICK = ["experiment=smoke", "trainer.max_epochs=1", "progress=false", "logger=none"]


def make_folder(root: Path, *, n: int = 12, rows: list[dict] | None = None, cf: np.ndarray | None = None,
                categories: dict[str, str] | None = None) -> Path:
    """``root/audio/tNN.wav`` (1 s tones) with ``tags.csv`` (``rows``, default: two tags, 6 artists)."""
    (root / "audio").mkdir(parents=True)
    for i in range(n):
        t = np.arange(22050) / 22050
        sf.write(root / "audio" / f"t{i:02d}.wav", 0.4 * np.sin(2 * np.pi * (200 + 40 * i) * t), 22050)
    rows = rows if rows is not None else [{"track_id": f"t{i:02d}", "tags": "rock" if i % 2 else "jazz",
                                           "artist": f"a{i % 6}"} for i in range(n)]
    pd.DataFrame(rows).to_csv(root / "tags.csv", index=False)
    if cf is not None:
        np.savez(root / "cf_vectors.npz", track_ids=np.array([f"t{i:02d}" for i in range(n)]), vectors=cf)
    if categories is not None:
        pd.DataFrame({"tag": list(categories), "category": list(categories.values())}).to_csv(
            root / "tag_categories.csv", index=False)
    return root


def prepare(root: Path, run_dir: Path, *extra: str):
    return run_task(["mode=prepare", "data=folder", f"data.root={root}", "progress=false", *extra], run_dir)


def assert_nothing_prepared(root: Path) -> None:
    assert not (root / "prepared" / MANIFEST).exists()
    with pytest.raises(UserError):
        PreparedDataset.load(root / "prepared")


def assert_not_trained(run_dir: Path) -> None:
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics").exists()


# -- the rows -------------------------------------------------------------------------------------------------
def test_nan_in_cf_vectors_is_refused_naming_the_tracks(tmp_path):
    cf = np.ones((12, 4), dtype=np.float32)
    cf[3, 1] = np.nan
    root = make_folder(tmp_path / "d", cf=cf)
    with pytest.raises(DataError, match=r"CF vectors in .*cf_vectors.npz contain NaN/inf for 1 track\(s\): t03"):
        prepare(root, tmp_path / "run")
    assert_nothing_prepared(root)


def test_duplicate_ids_are_skipped_and_reported_and_too_many_stop_the_import(tmp_path):
    rows = [{"track_id": f"t{i:02d}", "tags": "rock" if i % 2 else "jazz", "artist": f"a{i % 6}"} for i in range(12)]
    root = make_folder(tmp_path / "few", rows=[*rows, {"track_id": "t01", "tags": "jazz", "artist": "a1"}])
    prepare(root, tmp_path / "run")
    dataset = PreparedDataset.load(root / "prepared")
    assert dataset.track_ids.count("t01") == 1 and dataset.tag_lists("train") is not None
    row = dataset.labels[dataset.track_ids.index("t01")]
    assert [t for t, on in zip(dataset.tags, row) if on] == ["rock"]  # the first row is kept
    report = json.loads((root / "prepared" / "prepare_report.json").read_text())
    assert "t01" in json.dumps(report["skipped"]["duplicate track id"])
    many = make_folder(tmp_path / "many", rows=rows + rows[:6])  # 6 of 18 rows (33% > 10%) are duplicates
    with pytest.raises(UserError, match="skipped"):
        prepare(many, tmp_path / "run_many")
    assert_nothing_prepared(many)


@pytest.mark.parametrize("content, message", [("", r"tags.csv is empty: expected a header"),
                                              ("track_id,tags\n", r"tags.csv has a header but no rows")])
def test_an_empty_tags_csv_is_refused(tmp_path, content, message):
    root = make_folder(tmp_path / "d")
    (root / "tags.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        prepare(root, tmp_path / "run")
    assert_nothing_prepared(root)
    assert not (root / "prepared" / "mels").exists()  # refused before any audio was decoded


def test_tag_lists_with_only_unknown_tags(tmp_path):
    rows = [{"track_id": f"t{i:02d}", "tags": "polka;zydeco", "artist": f"a{i % 6}"} for i in range(12)]
    root = make_folder(tmp_path / "none", rows=rows, categories={"rock": "genre", "jazz": "genre"})
    with pytest.raises(DataError, match=r"no tag of .*tags.csv is listed in tag_categories.csv \(tags.csv has "
                                        r"\['polka', 'zydeco'\]"):
        prepare(root, tmp_path / "run")
    assert_nothing_prepared(root)
    assert not (root / "prepared" / "mels").exists()
    # some tracks only: those are skipped ("no tags") and reported
    rows = [{"track_id": f"t{i:02d}", "tags": "polka" if i == 5 else ("rock" if i % 2 else "jazz"),
             "artist": f"a{i % 6}"} for i in range(12)]
    some = make_folder(tmp_path / "some", rows=rows, categories={"rock": "genre", "jazz": "genre"})
    prepare(some, tmp_path / "run_some", "data.max_skipped_fraction=0.2")
    assert "t05" not in PreparedDataset.load(some / "prepared").track_ids
    report = json.loads((some / "prepared" / "prepare_report.json").read_text())
    assert "t05" in json.dumps(report["skipped"]["no tags"])


def test_a_query_of_only_unknown_tags_is_refused(trained_run, tmp_path):
    with pytest.raises(UnknownQueryError, match="'zydeco'"):
        run_task(["mode=retrieve", f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}",
                  "query=[zydeco,polka]", "progress=false"], tmp_path)
    assert not (tmp_path / "retrieval.json").exists()


def test_a_word_vector_file_of_another_dimension_is_refused(smoke_overrides, tmp_path):
    from gensim.models import Word2Vec

    path = tmp_path / "w8.bin"
    Word2Vec(sentences=[["piano", "sad"]] * 5, vector_size=8, min_count=1, workers=1).wv.save_word2vec_format(
        str(path), binary=True)
    with pytest.raises(DataError, match=r"w8.bin holds 8-d vectors, tag_encoder.dim is 300: set tag_encoder.dim=8"):
        run_task([*smoke_overrides, "tag_encoder=word2vec", f"tag_encoder.path={path}"], tmp_path / "run")
    assert_not_trained(tmp_path / "run")


def test_a_checkpoint_of_another_model_kind_is_refused(trained_run, smoke_overrides, tmp_path):
    best, last = (trained_run / "checkpoints" / f"{name}.ckpt" for name in ("best", "last"))
    with pytest.raises(ConfigError, match="holds a model=hybrid, but model=acoustic was given"):
        run_task([*smoke_overrides, "mode=test", f"ckpt_path={best}", "model=acoustic"], tmp_path / "test")
    with pytest.raises(ConfigError, match="holds a model=hybrid, this run builds model=acoustic: resume with "
                                          "model=hybrid"):
        run_task([*smoke_overrides, f"ckpt_path={last}", "model=acoustic"], tmp_path / "resume")
    assert_not_trained(tmp_path / "test")
    assert_not_trained(tmp_path / "resume")


def test_a_truncated_checkpoint_is_refused(trained_run, smoke_overrides, tmp_path):
    data = (trained_run / "checkpoints" / "best.ckpt").read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(DataError, match="cut.ckpt is not a readable checkpoint .*truncated"):
        run_task([*smoke_overrides, "mode=test", f"ckpt_path={path}"], tmp_path / "run")
    assert_not_trained(tmp_path / "run")


def test_mels_made_with_another_front_end_are_refused_naming_the_difference(tmp_path):
    root = make_folder(tmp_path / "d")
    prepare(root, tmp_path / "prepare")
    with pytest.raises(UserError, match=r"n_mels: expected 160, found 128"):
        run_task(["data=folder", f"data.root={root}", "audio.n_mels=160", *QUICK], tmp_path / "run")
    assert_not_trained(tmp_path / "run")
    assert PreparedDataset.load(root / "prepared").track_ids  # the existing import is left as it was


# -- every row as a command -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_row_through_main(tmp_path, trained_run, smoke_overrides):
    cf = np.ones((12, 4), dtype=np.float32)
    cf[3, 1] = np.nan
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(checkpoint.read_bytes()[:1000])
    empty = make_folder(tmp_path / "empty")
    (empty / "tags.csv").write_text("")
    rows = [{"track_id": f"t{i:02d}", "tags": "rock" if i % 2 else "jazz", "artist": f"a{i % 6}"} for i in range(12)]
    unknown_root = make_folder(tmp_path / "unk", rows=[{**row, "tags": "polka"} for row in rows],
                               categories={"rock": "genre"})
    mels = make_folder(tmp_path / "mels")
    prepare(mels, tmp_path / "prepare")
    w8 = tmp_path / "w8.txt"
    w8.write_text("1 8\npiano " + " ".join(["0.5"] * 8) + "\n")
    cases = {
        "nan cf": (["data=folder", f"data.root={make_folder(tmp_path / 'nan', cf=cf)}"], "NaN/inf"),
        "duplicates": (["data=folder", f"data.root={make_folder(tmp_path / 'dup', rows=rows + rows[:6])}"],
                       "skipped"),
        "empty tags.csv": (["data=folder", f"data.root={empty}"], "is empty"),
        "unknown tags": (["data=folder", f"data.root={unknown_root}"], "is listed in tag_categories.csv"),
        "word vectors": ([*smoke_overrides, "tag_encoder=word2vec", f"tag_encoder.path={w8}"], "holds 8-d vectors"),
        "model kind": ([*smoke_overrides, "mode=test", f"ckpt_path={checkpoint}", "model=acoustic"],
                       "holds a model=hybrid"),
        "truncated": ([*smoke_overrides, "mode=test", f"ckpt_path={cut}"], "not a readable checkpoint"),
        "front end": (["data=folder", f"data.root={mels}", "audio.n_mels=160", *QUICK], "n_mels: expected 160"),
    }
    for name, (args, fragment) in cases.items():
        run_dir = tmp_path / "runs" / name.replace(" ", "_")
        done = run_main([*args, f"hydra.run.dir={run_dir}"])
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2 and len(errors) == 1 and fragment in errors[0], (name, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, name
        assert_not_trained(run_dir)
    assert torch.load(checkpoint, weights_only=True)  # the checkpoints the rows read are untouched
