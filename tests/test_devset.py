"""The real-music dev set (``scripts/build_devset.py``): a tiny build, as a user runs it, imports with ``data=folder``.

Needs music21 + mido (``pip install -e ".[devset]"``) and FluidSynth with a GM soundfont (``apt-get install
fluidsynth fluid-soundfont-gm``); skipped (with the reason) without them, unless ``TAGRETRIEVAL_REQUIRE_DEVSET=1``
(CI sets it, so that a broken install fails instead of skipping).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from conftest import REPO, read_metrics, run_task
from tagretrieval.data.prepared import PreparedDataset

SCRIPT = REPO / "scripts" / "build_devset.py"
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
N_CLIPS = 24   # every split can score tags (valid and test get 4 clips; at 12, valid gets 1)
CATEGORIES = ["instrument", "texture", "composer", "collection", "tempo", "mode", "meter"]
# collection -> composers, as docs/datasets/devset.md documents
COMPOSERS = {"chorale": {"bach"}, "mass": {"palestrina"}, "madrigal": {"monteverdi"},
             "string quartet": {"beethoven", "mozart", "haydn"}, "folk song": {"traditional"},
             "fiddle tune": {"traditional"}}

MISSING = [what for what, ok in [
    ("music21", importlib.util.find_spec("music21") is not None),
    ("mido", importlib.util.find_spec("mido") is not None),
    ("fluidsynth", shutil.which("fluidsynth") is not None),
    (str(SOUNDFONT), SOUNDFONT.is_file()),
] if not ok]
pytestmark = pytest.mark.skipif(
    bool(MISSING) and os.environ.get("TAGRETRIEVAL_REQUIRE_DEVSET") != "1",
    reason=f"missing {', '.join(MISSING)}: apt-get install fluidsynth fluid-soundfont-gm; pip install -e '.[devset]'",
)


def build(out: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--n-clips", str(N_CLIPS), "--seed", "3",
                           *extra], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def devset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("devset") / "dev"
    build(out)
    return out


def read_tags(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "tags.csv", dtype=str, keep_default_na=False)


def test_tags_categories_splits_and_audio_are_as_documented(devset):
    check_as_documented(devset)
    manifest = json.loads((devset / "devset_manifest.json").read_text())
    assert manifest["n_clips"] == N_CLIPS and manifest["seed"] == 3 and manifest["plain"] is False


def check_as_documented(devset: Path) -> None:
    table = read_tags(devset)
    assert list(table.columns) == ["track_id", "tags", "artist", "split"]
    assert len(table) == N_CLIPS and table["track_id"].is_unique
    category_of = dict(pd.read_csv(devset / "tag_categories.csv", dtype=str).itertuples(index=False))
    assert sorted(set(category_of.values())) == sorted(CATEGORIES)
    for track_id, tags, artist, split in table.itertuples(index=False):
        tags = tags.split(";")
        per_category = {c: [t for t in tags if category_of.get(t) == c] for c in CATEGORIES}
        assert sum(map(len, per_category.values())) == len(tags), f"{track_id}: a tag without a category"
        assert 1 <= len(per_category["instrument"]) <= 2, track_id
        assert all(len(per_category[c]) == 1 for c in CATEGORIES[1:]), (track_id, tags)
        assert per_category["composer"][0] in COMPOSERS[per_category["collection"][0]], (track_id, tags)
        assert artist.startswith(per_category["collection"][0] + "/"), (track_id, artist)
        info = sf.info(str(next((devset / "audio").rglob(f"{track_id}.flac"))))
        assert (info.samplerate, info.channels) == (22050, 1)
        assert 10.0 <= info.duration <= 20.0, (track_id, info.duration)
    # split by piece (the artist column): all of a piece's clips in one split, and every split used
    assert (table.groupby("artist")["split"].nunique() == 1).all()
    assert set(table["split"]) == {"train", "valid", "test"}
    # every collection is represented, even at this size
    assert {t for tags in table["tags"] for t in tags.split(";") if category_of[t] == "collection"} == set(COMPOSERS)


def test_imports_and_trains_with_data_folder(devset, tmp_path):
    # docs/datasets/devset.md's command (python main.py data=folder data.root=DEV model=acoustic), shortened by
    # experiment=smoke;
    # at 24 clips some tags have no training clip, so no co-occurrence vector: they are dropped (the full set has
    # every tag in every split)
    run_task(["data=folder", f"data.root={devset}", "model=acoustic", "experiment=smoke", "progress=false",
              "logger=none", "tag_encoder.drop_missing=true"], tmp_path / "run")
    dataset = PreparedDataset.load(devset / "prepared")
    table = read_tags(devset).set_index("track_id")
    assert sorted(dataset.tracks["track_id"]) == sorted(table.index)   # nothing skipped
    assert (dataset.tracks.set_index("track_id")["split"] == table["split"]).all()
    category_of = dict(pd.read_csv(devset / "tag_categories.csv", dtype=str).itertuples(index=False))
    assert dict(zip(dataset.tags, dataset.categories)) == {t: category_of[t] for t in dataset.tags}
    assert set(dataset.categories) == set(CATEGORIES)
    report = json.loads((tmp_path / "run" / "prepare_report.json").read_text())
    assert report["n_kept"] == N_CLIPS and not report["skipped"]
    metrics = read_metrics(tmp_path / "run")
    assert metrics["n_songs"] == (table["split"] == "test").sum()
    assert set(metrics["per_tag"]) | set(metrics["skipped_tags"]) <= set(category_of)


def audio_digest(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(sf.read(str(p), dtype="int16")[0].tobytes()).hexdigest()
            for p in sorted((root / "audio").rglob("*.flac"))}


@pytest.mark.slow
def test_same_seed_builds_the_same_set_whatever_the_number_of_processes(devset, tmp_path):
    build(tmp_path / "again", "--jobs", "1")
    for name in ("tags.csv", "clips.csv", "tag_categories.csv"):
        assert (tmp_path / "again" / name).read_text() == (devset / name).read_text(), name
    assert audio_digest(tmp_path / "again") == audio_digest(devset)


@pytest.mark.slow
def test_plain_builds_a_set_without_the_render_variation(devset, tmp_path):
    # --plain (the second set of another make, docs/datasets/devset.md): the same tags, categories and splits as
    # documented, one level, FluidSynth's own reverb and chorus
    build(tmp_path / "plain", "--plain")
    check_as_documented(tmp_path / "plain")
    clips = pd.read_csv(tmp_path / "plain" / "clips.csv", dtype=str)
    assert (clips["synth"] == "{}").all()
    assert (pd.read_csv(devset / "clips.csv", dtype=str)["synth"] != "{}").all()
    peaks = [abs(sf.read(str(p))[0]).max() for p in (tmp_path / "plain" / "audio").rglob("*.flac")]
    assert len(peaks) == N_CLIPS and max(abs(peak - 0.7) for peak in peaks) < 1e-4   # 16-bit rounding: 3e-5
    varied = [abs(sf.read(str(p))[0]).max() for p in (devset / "audio").rglob("*.flac")]
    assert max(varied) - min(varied) > 0.1   # the drawn levels: 0.3-0.9
    assert json.loads((tmp_path / "plain" / "devset_manifest.json").read_text())["plain"] is True


def test_refuses_a_non_empty_output_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--n-clips", "6"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not empty" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
