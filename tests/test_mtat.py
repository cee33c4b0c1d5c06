"""MagnaTagATune import (``data=mtat``) on a miniature copy of the real on-disk format
(docs: DATA_FORMATS_MTAT_JAMENDO.md section 1).

The miniature has the real files and quirks: ``annotations_final.csv`` tab-separated despite its name, every field
quoted, CRLF line ends, the 188 tag columns in the release's order, ascending clip ids with gaps (so a data row is
never its clip id); mp3s at ``<folder>/<artist>-<album>-<nn>-<title>-<start>-<end>.mp3`` in folders of the train
(0-b), valid (c) and test (d-f) parts, mono 16 kHz; sota's ``"<row>\\t<path>"`` unicode arrays with ``tags.npy`` and
``binary.npy``; musicnn's ``<clip_id>\\t[0.0, 1.0, ...]`` gt files (LF, no header) and ``index_mtt.tsv``; a test
clip without any top-50 tag (musicnn keeps it, sota does not list it); musicnn's known-bad clip 35644 as a 0-byte
file listed by neither protocol; clip 31533 (reported broken by a third party) as a 0-byte file in valid; a corrupt
mp3 in train and a test clip whose file is missing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tagretrieval.audio import MelFrontend
from tagretrieval.data.mtat import importer as mtat
from tagretrieval.data.report import TooManySkippedError
from tagretrieval.data.samplers import UNTAGGED as UNTAGGED_TAG, PositiveIndex, RandomPairSampler

from conftest import read_metrics, run_task

FOLDERS = {"train": "0369b", "valid": "c", "test": "def"}
N_PER_FOLDER = {"train": 4, "valid": 7, "test": 4}
EMPTY_KNOWN_BAD = ("35644", "6/norine_braun-now_and_zen-08-gently-117-146.mp3")
EMPTY_IN_VALID = ("31533", "c/domased-new_memories-07-first_sun_rays-233-262.mp3")
CORRUPT, MISSING, UNTAGGED = "1500", "41000", "42000"
CATEGORIES = {"genre", "instrument", "mood", "other"}


def clip_rows() -> list[dict]:
    """One dict per clip (clip_id, split, mp3_path, labels [188] over ANNOTATION_TAGS), ascending clip id."""
    rng = np.random.default_rng(9)
    top = [mtat.ANNOTATION_TAGS.index(t) for t in mtat.TOP50_TAGS]
    clips, clip_id = [], 2
    for split, folders in FOLDERS.items():
        for folder in folders:
            for k in range(N_PER_FOLDER[split]):
                clip_id += int(rng.integers(1, 900))
                artist = f"artist_{folder}{k % 2}"
                labels = np.zeros(len(mtat.ANNOTATION_TAGS), dtype=np.uint8)
                labels[rng.random(len(mtat.ANNOTATION_TAGS)) < 0.05] = 1
                labels[top] = rng.random(len(top)) < 0.3
                clips.append({"clip_id": str(clip_id), "split": split, "labels": labels,
                              "mp3_path": f"{folder}/{artist}-album_{k}-{k + 1:02d}-song_{clip_id}-30-59.mp3"})
    # every top-50 tag has a positive and a negative in every part (macro ROC-AUC defined everywhere)
    for split in FOLDERS:
        part = [c for c in clips if c["split"] == split]
        for n, j in enumerate(top):
            part[n % len(part)]["labels"][j], part[(n + 1) % len(part)]["labels"][j] = 1, 0
    named = [(CORRUPT, "train", "3"), (MISSING, "test", "d"), (UNTAGGED, "test", "e")]
    for clip_id, split, folder in named:
        labels = np.zeros(len(mtat.ANNOTATION_TAGS), dtype=np.uint8)
        labels[top[:5]] = clip_id != UNTAGGED
        labels[mtat.ANNOTATION_TAGS.index("birds")] = 1  # not a top-50 tag
        clips.append({"clip_id": clip_id, "split": split, "labels": labels,
                      "mp3_path": f"{folder}/special_artist-album_x-01-clip_{clip_id}-0-29.mp3"})
    for (clip_id, path), split in ((EMPTY_KNOWN_BAD, None), (EMPTY_IN_VALID, "valid")):
        labels = np.zeros(len(mtat.ANNOTATION_TAGS), dtype=np.uint8)
        labels[top[:3]] = 1
        clips.append({"clip_id": clip_id, "split": split, "labels": labels, "mp3_path": path})
    clips.sort(key=lambda c: int(c["clip_id"]))
    assert len({c["clip_id"] for c in clips}) == len(clips)
    return clips


def write_annotations(path, clips, *, quoted=True, newline="\r\n"):
    q = (lambda s: f'"{s}"') if quoted else (lambda s: s)
    lines = ["\t".join(q(s) for s in ("clip_id", *mtat.ANNOTATION_TAGS, "mp3_path"))]
    lines += ["\t".join(q(s) for s in (c["clip_id"], *map(str, c["labels"]), c["mp3_path"])) for c in clips]
    path.write_bytes((newline.join(lines) + newline).encode())


def write_audio(audio_dir, clips, *, seconds=2.5, sample_rate=16000):
    for i, clip in enumerate(clips):
        path = audio_dir / clip["mp3_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if clip["clip_id"] in (EMPTY_KNOWN_BAD[0], EMPTY_IN_VALID[0]):
            path.write_bytes(b"")
        elif clip["clip_id"] == CORRUPT:
            path.write_bytes(b"ID3\x03\x00\x00\x00 not an mp3 frame, truncated download")
        elif clip["clip_id"] != MISSING:
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            y = 0.3 * np.sin(2 * np.pi * 110.0 * 2 ** (i % 24 / 12) * t) + 0.02 * np.sin(2 * np.pi * 3000 * t)
            sf.write(path, y, sample_rate, format="MP3")


def write_won_split(split_dir, clips):
    """sota's split/mtat/: "<row>\\t<path>" for clips with a top-50 tag, rows = data rows of *our* csv."""
    split_dir.mkdir(parents=True)
    top = [mtat.ANNOTATION_TAGS.index(t) for t in mtat.TOP50_TAGS]
    for split, file_name in mtat.WON_FILES.items():
        entries = [f"{row}\t{c['mp3_path']}" for row, c in enumerate(clips)
                   if c["split"] == split and c["labels"][top].any()]
        np.save(split_dir / file_name, np.array(entries))
    np.save(split_dir / "tags.npy", np.array(mtat.TOP50_TAGS))
    np.save(split_dir / "binary.npy", np.stack([c["labels"][top] for c in clips]).astype(np.int64))


def write_pons_split(split_dir, clips):
    """musicnn's data/index/mtt/: every clip of the folders but the known-bad ones, untagged rows kept."""
    split_dir.mkdir(parents=True)
    top = [mtat.ANNOTATION_TAGS.index(t) for t in mtat.TOP50_TAGS]
    (split_dir / "index_mtt.tsv").write_text("".join(f"{c['clip_id']}\t{c['mp3_path']}\n" for c in clips))
    for split, file_name in mtat.PONS_FILES.items():
        lines = [f"{c['clip_id']}\t{[float(v) for v in c['labels'][top]]}\n" for c in clips if c["split"] == split]
        (split_dir / file_name).write_text("".join(lines))


@pytest.fixture(scope="module")
def mtat_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtat")
    clips = clip_rows()
    write_annotations(root / "annotations_final.csv", clips)
    write_audio(root / "mp3", clips)
    write_won_split(root / "splits" / "won", clips)
    write_pons_split(root / "splits" / "pons", clips)
    return root


def importer(root, **settings):
    split = settings.get("split", "won")
    defaults = dict(root=str(root), prepared_dir=str(root / "prepared"), annotations=str(root / "annotations_final.csv"),
                    audio_dir=str(root / "mp3"), split_dir=str(root / "splits" / split), max_skipped_fraction=0.2)
    return mtat.MTATImporter(**{**defaults, **settings})


def report_of(dataset) -> dict:
    return json.loads((dataset.root / "prepare_report.json").read_text())


def skipped_ids(report) -> dict[str, str]:
    return {item: reason for reason, items in report["skipped"].items() for item in items}


# -- the files -------------------------------------------------------------------------------------------------
def test_annotations_quoted_crlf_and_plain_lf_read_the_same(mtat_root, tmp_path):
    clips = clip_rows()
    assert (mtat_root / "annotations_final.csv").read_bytes()[:12] == b'"clip_id"\t"n'
    quoted = mtat.read_annotations(mtat_root / "annotations_final.csv")
    write_annotations(tmp_path / "plain.csv", clips, quoted=False, newline="\n")
    plain = mtat.read_annotations(tmp_path / "plain.csv")
    assert quoted.tags == plain.tags == list(mtat.ANNOTATION_TAGS)
    assert quoted.clip_ids == plain.clip_ids == [c["clip_id"] for c in clips]
    assert quoted.paths == plain.paths == [c["mp3_path"] for c in clips]
    assert np.array_equal(quoted.labels, np.stack([c["labels"] for c in clips]))
    assert np.array_equal(quoted.labels, plain.labels) and not quoted.bad_rows


def test_bad_files_get_clear_errors(tmp_path):
    (tmp_path / "a.csv").write_text("clip_id,guitar,mp3_path\n2,1,0/x.mp3\n")  # comma-separated: not the release
    with pytest.raises(ValueError, match="tab-separated"):
        mtat.read_annotations(tmp_path / "a.csv")
    np.save(tmp_path / "objects.npy", np.array(["0\t0/x.mp3"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="plain numpy array"):
        mtat.read_won_split(tmp_path / "objects.npy")
    np.save(tmp_path / "ids.npy", np.array(["14"]))
    with pytest.raises(ValueError, match="row"):
        mtat.read_won_split(tmp_path / "ids.npy")
    (tmp_path / "gt.tsv").write_text("14\t[0.0, 1.0]\n")
    with pytest.raises(ValueError, match="line 1"):
        mtat.read_pons_gt(tmp_path / "gt.tsv")
    with pytest.raises(ValueError, match="data.split"):
        importer(tmp_path, split="lee")


def test_category_table_covers_the_188_tags():
    categories = mtat.read_tag_categories()
    assert list(categories) == list(mtat.ANNOTATION_TAGS)
    assert set(categories.values()) == CATEGORIES
    assert {categories[t] for t in mtat.TOP50_TAGS} == CATEGORIES
    assert (categories["guitar"], categories["techno"], categories["sad"], categories["loud"]) == \
        ("instrument", "genre", "mood", "other")


# -- the two protocols -----------------------------------------------------------------------------------------
def test_won_protocol_follows_the_row_index_and_skips_bad_clips(mtat_root):
    clips = clip_rows()
    dataset = importer(mtat_root).prepare(frontend=MelFrontend(), progress=False)
    assert dataset.name == "mtat-won-top50" and dataset.tags == list(mtat.TOP50_TAGS)
    assert set(dataset.categories) == CATEGORIES
    report = report_of(dataset)
    skipped = skipped_ids(report)
    assert skipped[EMPTY_IN_VALID[0]] in ("empty", "decode error")
    assert skipped[CORRUPT] == "decode error" and skipped[MISSING] == "missing audio"
    assert any(EMPTY_KNOWN_BAD[0] in note for note in report["notes"])  # known bad, and in neither protocol
    assert any("binary.npy agrees" in note and "differs" not in note for note in report["notes"])
    listed = {c["clip_id"]: c for c in clips if c["split"] and c["clip_id"] != UNTAGGED}
    assert set(dataset.track_ids) == set(listed) - {EMPTY_IN_VALID[0], CORRUPT, MISSING}
    top = [mtat.ANNOTATION_TAGS.index(t) for t in mtat.TOP50_TAGS]
    for i, track_id in enumerate(dataset.track_ids):  # labels of the clip, not of the clip at row == clip id
        assert np.array_equal(dataset.labels[i], listed[track_id]["labels"][top])
        assert dataset.tracks["split"][i] == listed[track_id]["split"]
    assert dataset.labels.any(axis=1).all()
    assert report["n_candidates"] == len(listed)


def test_pons_protocol_keeps_clips_without_a_top50_tag(mtat_root):
    importer(mtat_root).prepare(frontend=MelFrontend(), progress=False)  # won first: its clips' mels are cached
    dataset = importer(mtat_root, split="pons").prepare(frontend=MelFrontend(), progress=False)
    assert dataset.name == "mtat-pons-top50"
    row = dataset.track_ids.index(UNTAGGED)
    assert dataset.tracks["split"][row] == "test" and not dataset.labels[row].any()
    report = report_of(dataset)
    assert EMPTY_KNOWN_BAD[0] not in dataset.track_ids and EMPTY_KNOWN_BAD[0] not in skipped_ids(report)
    assert any("gt files agree with annotations_final.csv on" in note and "differ" not in note
               for note in report["notes"])
    assert any("mels: 1 computed" in note for note in report["notes"])  # only UNTAGGED is new: mels are shared


def test_pons_keeps_untagged_training_clips_and_training_uses_them_as_negatives(mtat_root, tmp_path):
    # musicnn trains on its ~3.4k training clips without a top-50 tag: here UNTAGGED is listed in train_gt_mtt.tsv
    clips = [{**c, "split": "train"} if c["clip_id"] == UNTAGGED else c for c in clip_rows()]
    write_pons_split(tmp_path / "pons", clips)
    dataset = importer(mtat_root, split="pons", split_dir=str(tmp_path / "pons"),
                       prepared_dir=str(tmp_path / "p")).prepare(frontend=MelFrontend(), progress=False)
    row = dataset.track_ids.index(UNTAGGED)
    assert dataset.tracks["split"][row] == "train" and not dataset.labels[row].any()
    index = PositiveIndex.from_labels(dataset.labels, dataset.split_indices("train"))
    assert index.untagged.tolist() == [row]
    batch = RandomPairSampler(batch_size=64).batch(index, np.random.default_rng(0))
    assert row in batch[64:, 0] and (batch[64:, 1] == UNTAGGED_TAG).all()


def test_all_188_tags_and_doctored_split_files(mtat_root, tmp_path):
    dataset = importer(mtat_root, split="pons", tags="all").prepare(frontend=MelFrontend(), progress=False)
    assert dataset.tags == [t for t in mtat.ANNOTATION_TAGS if t in dataset.tags] and len(dataset.tags) > 100
    assert dataset.labels[dataset.track_ids.index(UNTAGGED), dataset.tags.index("birds")] == 1
    report = report_of(dataset)
    assert len(dataset.tags) + len(report["skipped"].get("tag: no training clip", {})) == 188
    # a split file that names a known-bad clip, and one whose <row> is a clip id (a common mistake)
    clips = clip_rows()
    won = tmp_path / "won"
    write_won_split(won, clips)
    bad_row = next(i for i, c in enumerate(clips) if c["clip_id"] == EMPTY_KNOWN_BAD[0])
    np.save(won / "train.npy", np.append(np.load(won / "train.npy"), f"{bad_row}\t{EMPTY_KNOWN_BAD[1]}"))
    valid = np.load(won / "valid.npy")
    first_id = valid[0].split("\t")[1]
    clip_id = next(c["clip_id"] for c in clips if c["mp3_path"] == first_id)
    np.save(won / "valid.npy", np.array([f"{clip_id}\t{first_id}", *valid[1:]]))
    doctored = importer(mtat_root, split_dir=str(won), prepared_dir=str(tmp_path / "p"), max_skipped_fraction=0.5)
    report = report_of(doctored.prepare(frontend=MelFrontend(), progress=False))
    assert set(report["skipped"]["known bad audio"]) == {EMPTY_KNOWN_BAD[0]}
    assert set(report["skipped"]["split entry mismatch"]) == {f"valid.npy:{clip_id}"}
    with pytest.raises(TooManySkippedError, match="prepare_report.json"):
        importer(mtat_root, split_dir=str(won), prepared_dir=str(tmp_path / "p"), max_skipped_fraction=0.05).prepare(
            frontend=MelFrontend(), progress=False)


# -- end to end: docs/datasets/mtat.md's commands --------------------------------------------------------------------
def test_main_prepare_only(mtat_root, tmp_path):
    run_task(["mode=prepare", "data=mtat", f"data.root={mtat_root}", "data.max_skipped_fraction=0.2", "progress=false"],
             tmp_path)
    assert json.loads((tmp_path / "prepare_report.json").read_text())["dataset"] == "mtat-won"


# sota's front end (16 kHz, n_fft 512, hop 256, 128 mels, 59,049-sample input), in its own prepared folder
SOTA_FRONTEND = ["audio.sample_rate=16000", "audio.n_fft=512", "audio.hop_length=256", "chunk_frames=230"]


@pytest.mark.parametrize("split, tags, frontend", [("won", "top50", []), ("pons", "top50", []), ("won", "all", []),
                                                   ("won", "top50", SOTA_FRONTEND)])
def test_main_trains_and_evaluates(mtat_root, tmp_path, split, tags, frontend):
    prepared = [f"data.prepared_dir={mtat_root}/prepared-16k"] if frontend else []
    run_task(["data=mtat", f"data.root={mtat_root}", f"data.split={split}", f"data.tags={tags}", *frontend,
              *prepared, "data.max_skipped_fraction=0.2", "model=acoustic", "experiment=smoke", "trainer.max_epochs=1",
              "sampler.pairs_per_epoch=32", "progress=false", "logger=none"], tmp_path)
    metrics = read_metrics(tmp_path)
    n_test = {"won": 12, "pons": 13}[split]  # the 12 clips of d-f (+ UNTAGGED in pons; MISSING has no audio)
    assert metrics["n_songs"] == n_test and set(metrics["per_category"]) <= CATEGORIES
    if tags == "top50":
        assert len(metrics["per_tag"]) == 50
    else:  # the rare tags without a positive (or a negative) among the test clips cannot be scored
        assert 50 < len(metrics["per_tag"]) + len(metrics["skipped_tags"]) <= 188
    assert all(0.0 <= row["roc_auc"] <= 1.0 for row in metrics["per_tag"].values())
    report = json.loads((tmp_path / "prepare_report.json").read_text())
    assert report["dataset"] == f"mtat-{split}"
