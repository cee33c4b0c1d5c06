"""MTG-Jamendo import (``data=jamendo``) on a miniature copy of the real on-disk format
(docs: DATA_FORMATS_MTAT_JAMENDO.md section 2).

The miniature has the real files and quirks: ``data/splits/split-K/autotagging_<subset>-{train,validation,test}.tsv``
with the exact header, CRLF on every line, one TAGS header name over a variable number of tab-separated tag fields
(sorted, ``mood/theme---`` with its slash), rows sorted by numeric id, padded ids (``track_%07d``) and a PATH of
the unpadded id (``05/5.mp3``); parts artist-disjoint, with several tracks per artist; two independent split
redraws of top50 and a moodtheme subset; the real 50 top-50 tag names; audio at ``audio/NN/<n>.low.mp3`` (mono)
and ``audio/NN/<n>.mp3`` (stereo 44.1 kHz); an empty audio-low file and a missing one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tagretrieval.audio import MelFrontend
from tagretrieval.data.jamendo import importer as jamendo
from tagretrieval.data.report import PrepareReport

from conftest import read_metrics, run_task

TOP50 = (
    "genre---alternative genre---ambient genre---atmospheric genre---chillout genre---classical genre---dance "
    "genre---downtempo genre---easylistening genre---electronic genre---experimental genre---folk genre---funk "
    "genre---hiphop genre---house genre---indie genre---instrumentalpop genre---jazz genre---lounge genre---metal "
    "genre---newage genre---orchestral genre---pop genre---popfolk genre---poprock genre---reggae genre---rock "
    "genre---soundtrack genre---techno genre---trance genre---triphop genre---world instrument---acousticguitar "
    "instrument---bass instrument---computer instrument---drummachine instrument---drums instrument---electricguitar "
    "instrument---electricpiano instrument---guitar instrument---keyboard instrument---piano instrument---strings "
    "instrument---synthesizer instrument---violin instrument---voice mood/theme---emotional mood/theme---energetic "
    "mood/theme---film mood/theme---happy mood/theme---relaxing"
).split()
MOODS = ("mood/theme---calm", "mood/theme---dark", "mood/theme---epic", "mood/theme---happy", "mood/theme---sad",
         "mood/theme---space")
TRACK_NUMBERS = (5, 42, 99, 100, 214, 241, 1007, 3301, 12345, 20000, 31415, 40004, 55555, 60606, 70707, 81818,
                 90000, 99999, 101010, 123456, 222222, 314159, 400000, 500001, 612612, 700700, 818181, 900009,
                 1000000, 1111111, 1234567, 1422060)
EMPTY, MISSING = "track_0031415", "track_0055555"
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"


def tracks() -> list[dict]:
    """track_id, n, artist, album: four tracks per artist, two per album."""
    return [{"track_id": f"track_{n:07d}", "n": n, "artist": f"artist_{i // 4:06d}", "album": f"album_{i // 2:06d}"}
            for i, n in enumerate(TRACK_NUMBERS)]


def parts(seed: int) -> dict[str, list[dict]]:
    """An artist-disjoint train/validation/test draw (5/1.5/1.5 of the 8 artists, by whole artists)."""
    artists = sorted({t["artist"] for t in tracks()})
    order = np.random.default_rng(seed).permutation(len(artists))
    part_of = {artists[a]: "train" if k < 4 else "validation" if k < 6 else "test" for k, a in enumerate(order)}
    return {p: [t for t in tracks() if part_of[t["artist"]] == p] for p in ("train", "validation", "test")}


def write_tsv(path, rows, vocabulary):
    """The real line format: CRLF, ragged sorted tag fields; tag j on row k iff (k + j) % 3 == 0 (>= 3 rows per
    part: every tag has positives and negatives in every part)."""
    lines = [HEADER]
    for k, t in enumerate(sorted(rows, key=lambda t: t["n"])):
        tags = sorted(tag for j, tag in enumerate(vocabulary) if (k + j) % 3 == 0)
        lines.append("\t".join([t["track_id"], t["artist"], t["album"], f"{t['n'] % 100:02d}/{t['n']}.mp3",
                                f"{30 + t['n'] % 200}.{t['n'] % 10}", *tags]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def write_audio(audio_dir, *, seconds=2.5):
    for i, t in enumerate(tracks()):
        folder = audio_dir / f"{t['n'] % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        if t["track_id"] == MISSING:
            continue
        low = folder / f"{t['n']}.low.mp3"
        if t["track_id"] == EMPTY:
            low.write_bytes(b"")
        else:
            time = np.arange(int(seconds * 22050)) / 22050
            sf.write(low, 0.3 * np.sin(2 * np.pi * (150 + 20 * i) * time), 22050, format="MP3")
        time = np.arange(int(seconds * 44100)) / 44100
        y = 0.3 * np.sin(2 * np.pi * (150 + 20 * i) * time)
        sf.write(folder / f"{t['n']}.mp3", np.stack([y, 0.5 * y], axis=1), 44100, format="MP3")


@pytest.fixture(scope="module")
def jamendo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("jamendo")
    splits = root / "data" / "splits"
    for k in (0, 1):
        for part, rows in parts(seed=k).items():
            write_tsv(splits / f"split-{k}" / f"autotagging_top50tags-{part}.tsv", rows, TOP50)
    for part, rows in parts(seed=7).items():
        write_tsv(splits / "split-0" / f"autotagging_moodtheme-{part}.tsv", rows, MOODS)
    write_audio(root / "audio")
    return root


def importer(root, **settings):
    audio = settings.get("audio", "low")
    defaults = dict(root=str(root), prepared_dir=str(root / "prepared" / audio), splits_dir=str(root / "data" / "splits"),
                    audio_dir=str(root / "audio"), max_skipped_fraction=0.1)
    return jamendo.JamendoImporter(**{**defaults, **settings})


def report_of(dataset) -> dict:
    return json.loads((dataset.root / "prepare_report.json").read_text())


# -- the files -------------------------------------------------------------------------------------------------
def test_split_files_are_crlf_with_ragged_tag_columns(jamendo_root):
    path = jamendo.split_file(jamendo_root / "data" / "splits", subset="top50", split_index=0, split="valid")
    assert path.name == "autotagging_top50tags-validation.tsv"
    raw = path.read_bytes()
    assert raw.startswith(HEADER.encode() + b"\r\n") and raw.endswith(b"\r\n")
    assert len({line.count(b"\t") for line in raw.splitlines()[1:]}) > 1  # ragged
    report = PrepareReport(dataset="t")
    table = jamendo.read_split_file(path, report)
    expected = sorted(parts(seed=0)["validation"], key=lambda t: t["n"])
    assert table["track_id"].tolist() == [t["track_id"] for t in expected]
    assert table["path"].tolist() == [f"{t['n'] % 100:02d}/{t['n']}.mp3" for t in expected]
    assert table["tags"][0] == [tag for j, tag in enumerate(TOP50) if j % 3 == 0]
    assert not report.counts


def test_malformed_rows_are_reported_and_bad_headers_refused(tmp_path):
    good = "track_0000005\tartist_000001\talbum_000002\t05/5.mp3\t30.0\tgenre---rock"
    rows = [good, "track_0000006\tartist_000001\talbum_000002\t06/6.mp3\t30.0",  # no tag field
            "track_0000007\tartist_000001\talbum_000002\t7/7.mp3\t30.0\tgenre---rock",  # PATH not zero-padded
            "track_0000008\tartist_000001\talbum_000002\t08/8.mp3\t30.0\trock"]  # no prefix
    (tmp_path / "a.tsv").write_bytes(("\r\n".join([HEADER, *rows]) + "\r\n").encode())
    report = PrepareReport(dataset="t")
    assert jamendo.read_split_file(tmp_path / "a.tsv", report)["track_id"].tolist() == ["track_0000005"]
    assert set(report.items("malformed row")) == {"a.tsv:3", "a.tsv:4", "a.tsv:5"}
    (tmp_path / "b.tsv").write_text(HEADER.replace("\t", ",") + "\n" + good.replace("\t", ",") + "\n")
    with pytest.raises(ValueError, match="header"):
        jamendo.read_split_file(tmp_path / "b.tsv", report)
    for key, value in (("subset", "mood"), ("split_index", 5), ("audio", "wav")):
        with pytest.raises(ValueError, match=f"data.{key}"):
            importer(tmp_path, **{key: value})


def test_tag_names_drop_the_prefix_unless_shared():
    assert jamendo.short_tag_names(["genre---rock", "mood/theme---calm"]) == {"genre---rock": "rock",
                                                                              "mood/theme---calm": "calm"}
    assert jamendo.short_tag_names(["genre---x", "mood/theme---x"]) == {"genre---x": "genre---x",
                                                                        "mood/theme---x": "mood/theme---x"}
    assert jamendo.tag_category("mood/theme---calm") == "mood"


# -- importing ----------------------------------------------------------------------------------------------
def test_top50_split0_audio_low(jamendo_root):
    dataset = importer(jamendo_root).prepare(frontend=MelFrontend(), progress=False)
    assert dataset.name == "jamendo-top50-split0"
    assert dataset.tags == [t.split("---")[1] for t in TOP50]  # sorted by full name, as top50.txt
    assert dataset.categories == [t.split("---")[0].split("/")[0] for t in TOP50]
    assert set(dataset.categories) == {"genre", "instrument", "mood"}
    report = report_of(dataset)
    assert report["skipped"]["empty"].keys() == {EMPTY} and report["skipped"]["missing audio"].keys() == {MISSING}
    assert report["n_candidates"] == len(TRACK_NUMBERS) and report["n_kept"] == len(TRACK_NUMBERS) - 2
    row = dataset.track_ids.index("track_0000005")
    assert dataset.tracks["audio_path"][row].endswith("/audio/05/5.low.mp3")
    assert (dataset.tracks.groupby("artist")["split"].nunique() == 1).all()
    expected = {t["track_id"]: p for p, rows in parts(seed=0).items() for t in rows}
    assert all(jamendo.PART_NAMES[s] == expected[t] for t, s in zip(dataset.track_ids, dataset.tracks["split"]))
    # the labels are the row's tag fields
    valid = sorted(parts(seed=0)["validation"], key=lambda t: t["n"])
    first = dataset.track_ids.index(valid[0]["track_id"])
    assert [dataset.tags[j] for j in np.flatnonzero(dataset.labels[first])] == \
        [t.split("---")[1] for j, t in enumerate(TOP50) if j % 3 == 0]


def test_another_split_index_reuses_the_mels(jamendo_root):
    importer(jamendo_root).prepare(frontend=MelFrontend(), progress=False)
    dataset = importer(jamendo_root, split_index=1).prepare(frontend=MelFrontend(), progress=False)
    assert dataset.name == "jamendo-top50-split1"
    expected = {t["track_id"]: p for p, rows in parts(seed=1).items() for t in rows}
    assert all(jamendo.PART_NAMES[s] == expected[t] for t, s in zip(dataset.track_ids, dataset.tracks["split"]))
    assert expected != {t["track_id"]: p for p, rows in parts(seed=0).items() for t in rows}
    assert "mels: 0 computed, 30 already cached" in report_of(dataset)["notes"]


# -- end to end: docs/datasets/jamendo.md's commands -----------------------------------------------------------------
def test_main_prepare_only(jamendo_root, tmp_path):
    run_task(["mode=prepare", "data=jamendo", f"data.root={jamendo_root}", "data.max_skipped_fraction=0.1",
              "progress=false"], tmp_path)
    assert json.loads((tmp_path / "prepare_report.json").read_text())["dataset"] == "jamendo-top50-split0"


@pytest.mark.parametrize("subset, audio, split_index", [("top50", "low", 0), ("top50", "low", 1),
                                                       ("moodtheme", "full", 0)])
def test_main_trains_and_evaluates(jamendo_root, tmp_path, subset, audio, split_index):
    run_task(["data=jamendo", f"data.root={jamendo_root}", f"data.subset={subset}", f"data.audio={audio}",
              f"data.split_index={split_index}",
              "data.max_skipped_fraction=0.1", "model=acoustic", "experiment=smoke", "trainer.max_epochs=1",
              "sampler.pairs_per_epoch=32", "progress=false", "logger=none"], tmp_path)
    metrics = read_metrics(tmp_path)
    test_tracks = {t["track_id"] for t in parts(seed=split_index if subset == "top50" else 7)["test"]}
    n_bad = len(test_tracks & ({EMPTY, MISSING} if audio == "low" else {MISSING}))
    assert metrics["n_songs"] == len(test_tracks) - n_bad
    assert set(metrics["per_category"]) == ({"genre", "instrument", "mood"} if subset == "top50" else {"mood"})
    assert len(metrics["per_tag"]) == (50 if subset == "top50" else len(MOODS))
    assert all(0.0 <= row["roc_auc"] <= 1.0 for row in metrics["per_tag"].values())
    report = json.loads((tmp_path / "prepare_report.json").read_text())
    assert report["dataset"] == f"jamendo-{subset}-split{split_index}"
