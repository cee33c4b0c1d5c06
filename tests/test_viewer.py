"""The embedding viewer: spherical k-means, cluster tables, the page's data, and the page in a real headless Chromium.

The browser tests need ``pip install selenium`` and ``apt-get install -y chromium chromium-driver``; they are
skipped (with the reason) when either is missing, unless ``TAGRETRIEVAL_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import wave
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from tagretrieval.runtime.files import FileWriteError
from tagretrieval.viewer import (
    cluster_composition,
    plot_cluster_composition,
    read_viewer_data,
    spherical_kmeans,
    write_viewer,
)
from tagretrieval.viewer.browser import find_chromium
from tagretrieval.viewer.page import unpack_embeddings

TAGS = ["rock", "jazz", "calm"]
CATEGORIES = ["genre", "genre", "mood"]
DIM = 8
SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """t-SNE's OpenMP threads spin-wait: on a shared 2-core CI runner one thread is several times faster."""
    with threadpool_limits(limits=1):
        yield


def planted_directions(rng: np.random.Generator, k: int, dim: int) -> np.ndarray:
    """``k`` random unit directions, pairwise far apart (cosine < 0.5)."""
    while True:
        centres = rng.normal(size=(k, dim))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        if np.max(np.abs(centres @ centres.T - np.eye(k))) < 0.5:
            return centres


# ---------- spherical k-means ----------

def test_spherical_kmeans_recovers_planted_clusters():
    rng = np.random.default_rng(3)
    centres = planted_directions(rng, 3, 16)
    truth = np.repeat(np.arange(3), 40)
    X = centres[truth] + 0.15 * rng.normal(size=(120, 16))
    X *= rng.uniform(0.1, 10.0, size=(120, 1))  # scale must not matter: only directions are clustered
    labels, centroids = spherical_kmeans(X, 3, 0)
    assert adjusted_rand_score(truth, labels) == 1.0
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-12)
    for c in range(3):  # each centroid points at its planted direction
        planted = centres[np.bincount(truth[labels == c]).argmax()]
        assert centroids[c] @ planted > 0.98
    again, _ = spherical_kmeans(X, 3, 0)
    np.testing.assert_array_equal(labels, again)


def test_spherical_kmeans_keeps_every_cluster_non_empty():
    X = np.random.default_rng(0).normal(size=(7, 4))
    labels, _ = spherical_kmeans(X, 7, 1)
    assert sorted(labels) == list(range(7))
    with pytest.raises(ValueError, match="k=8"):
        spherical_kmeans(X, 8, 0)


# ---------- cluster composition ----------

def test_cluster_composition_counts_add_up(tmp_path):
    tracks = pd.DataFrame({"tags": ["rock;calm", "rock", "jazz", "", "jazz; calm", "polka"]})
    labels = np.array([0, 0, 1, 1, 2, 2])
    table = cluster_composition(labels, tracks, TAGS)
    assert list(table.columns) == ["n_tracks", *TAGS]
    assert table["n_tracks"].sum() == len(tracks)
    # naive reference: a tag's column sums to the number of tracks carrying it
    assert table[TAGS].sum().to_dict() == {"rock": 2, "jazz": 2, "calm": 2}
    assert table.loc[0].to_dict() == {"n_tracks": 2, "rock": 2, "jazz": 0, "calm": 1}
    assert table.loc[2].to_dict() == {"n_tracks": 2, "rock": 0, "jazz": 1, "calm": 1}  # "polka" is not counted
    png = plot_cluster_composition(table, tmp_path / "plots" / "clusters.png", top_n=2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------- the page ----------

def write_wav(path: Path, *, seconds: float = 0.5, sr: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    y = (0.2 * np.sin(2 * np.pi * 440.0 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sr)
        f.writeframes(y.tobytes())


def fixture_catalogue(root: Path) -> dict:
    """30 tracks, 10 per tag, in an 8-d space where tag ``j`` points along axis ``j``.

    Track ``best_<tag>`` lies almost on its tag's axis: it is the top song for that tag by cosine. Track
    ``loud_<tag>`` has the largest dot product with the tag (norm 50) but a smaller cosine: a page ranking
    by unnormalised scores would put it first. Tracks of tag 0 have audio files under ``root/audio``.
    """
    rng = np.random.default_rng(0)
    tag_embeddings = np.eye(len(TAGS), DIM) + 0.01 * rng.normal(size=(len(TAGS), DIM))
    rows, embeddings = [], []
    for j, tag in enumerate(TAGS):
        for n in range(10):
            track_id = {0: f"best_{tag}", 1: f"loud_{tag}"}.get(n, f"{tag}_{n:02d}")
            direction = np.eye(DIM)[j] + (0.005 if n == 0 else 0.35) * rng.normal(size=DIM)
            scale = 50.0 if n == 1 else rng.uniform(0.5, 2.0)
            embeddings.append(scale * direction)
            audio = f"audio/{track_id}.wav" if j == 0 else ""
            if audio:
                write_wav(root / audio)
            rows.append({"track_id": track_id, "artist": f"artist <{n % 4}>", "tags": tag,
                         "split": SPLITS[n % 3], "audio_path": audio})
    return {"track_embeddings": np.array(embeddings), "tracks": pd.DataFrame(rows),
            "tag_embeddings": tag_embeddings, "tags": TAGS, "categories": CATEGORIES}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("viewer")
    data = fixture_catalogue(root)
    page = write_viewer(root / "pages" / "viewer.html", **data, n_clusters=3, audio_base=root)
    return page, data


def oracle_ranking(data: dict, tag: str) -> tuple[list[str], np.ndarray]:
    """Naive oracle: track ids by decreasing cosine to ``tag``, and the sorted cosines."""
    songs = data["track_embeddings"] / np.linalg.norm(data["track_embeddings"], axis=1, keepdims=True)
    tag_vector = data["tag_embeddings"][TAGS.index(tag)]
    cosine = songs @ tag_vector / np.linalg.norm(tag_vector)
    order = np.argsort(-cosine, kind="stable")
    return data["tracks"]["track_id"].iloc[order].tolist(), cosine[order]


def expected_top(data: dict, tag: str) -> str:
    return oracle_ranking(data, tag)[0][0]


def test_page_is_self_contained_and_holds_the_data(catalogue):
    page, data = catalogue
    links = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            links.extend(value for name, value in attrs if name in ("src", "href") and value)

    text = page.read_text(encoding="utf-8")
    Links().feed(text)
    assert all(link.startswith("data:") for link in links), links  # no server, no CDN
    payload = read_viewer_data(page)
    assert payload["tracks"]["id"] == data["tracks"]["track_id"].tolist()
    assert payload["tracks"]["artist"][0] == "artist <0>"  # "<" survives the inlining
    assert set(payload["projections"]) == {"tsne"}
    assert len(payload["projections"]["tsne"]) == 2 * 30
    songs = unpack_embeddings(payload["track_embeddings"], DIM)
    normalised = data["track_embeddings"] / np.linalg.norm(data["track_embeddings"], axis=1, keepdims=True)
    np.testing.assert_allclose(songs, normalised, atol=0.5e-4 + 1e-12)
    # audio paths are written relative to the page, which sits in pages/
    assert payload["tracks"]["audio"][0] == "../audio/best_rock.wav"
    assert payload["tracks"]["audio"][10] == ""
    assert expected_top(data, "jazz") == "best_jazz"  # the fixture plants what it claims


def test_write_viewer_rejects_bad_input_and_subsamples(tmp_path):
    data = fixture_catalogue(tmp_path)
    bad = dict(data, track_embeddings=data["track_embeddings"].copy())
    bad["track_embeddings"][4] = 0.0
    with pytest.raises(ValueError, match="rock_04"):
        write_viewer(tmp_path / "bad.html", **bad)
    with pytest.raises(ValueError, match="audio_path"):
        write_viewer(tmp_path / "bad.html", **dict(data, tracks=data["tracks"].drop(columns="audio_path")))
    with pytest.warns(UserWarning, match="subsample of 20"):
        page = write_viewer(tmp_path / "small.html", **data, max_tracks=20)
    payload = read_viewer_data(page)
    assert len(payload["tracks"]["id"]) == 20 and payload["n_tracks_total"] == 30
    with pytest.raises(ValueError, match="unknown audio mode 'inline'"):
        write_viewer(tmp_path / "bad.html", **data, audio="inline")


def test_audio_paths_are_relative_to_the_page_never_local_absolute_ones(tmp_path):
    """An absolute audio path is written relative to the page's folder: the page holds no local path, no file://
    URL, and keeps playing when the page and the audio move together."""
    data = fixture_catalogue(tmp_path / "data")
    absolute = data["tracks"].assign(audio_path=[str(tmp_path / "data" / "audio" / "best_rock.wav")] + [""] * 29)
    page = write_viewer(tmp_path / "export" / "viewer.html", **dict(data, tracks=absolute))
    assert read_viewer_data(page)["tracks"]["audio"][0] == "../data/audio/best_rock.wav"
    assert "file://" not in json.dumps(read_viewer_data(page)) and str(tmp_path) not in page.read_text(encoding="utf-8")
    spaced = data["tracks"].assign(audio_path=[str(tmp_path / "a b.wav")] + [""] * 29)
    page = write_viewer(tmp_path / "viewer.html", **dict(data, tracks=spaced))
    assert read_viewer_data(page)["tracks"]["audio"][0] == "a%20b.wav"  # URL-quoted


def test_audio_copy_makes_a_folder_to_share_and_none_leaves_audio_out(tmp_path):
    data = fixture_catalogue(tmp_path / "data")  # tracks 0-9 have audio under data/audio, given relative to data/
    page = write_viewer(tmp_path / "export" / "viewer.html", **data, audio_base=tmp_path / "data", audio="copy")
    moved = tmp_path / "elsewhere"
    (tmp_path / "export").rename(moved)
    shutil.rmtree(tmp_path / "data")  # the shared folder needs nothing outside itself
    sources = read_viewer_data(moved / "viewer.html")["tracks"]["audio"]
    assert all(source.startswith("audio/") for source in sources[:10]) and sources[10:] == [""] * 20
    for source, track_id in zip(sources[:10], data["tracks"]["track_id"][:10]):
        copied = moved / unquote(source)
        assert copied.read_bytes()[:4] == b"RIFF" and track_id in copied.name
    page = write_viewer(tmp_path / "bare" / "viewer.html", **data, audio_base=tmp_path, audio="none")
    assert read_viewer_data(page)["tracks"]["audio"] == [""] * 30 and not (tmp_path / "bare" / "audio").exists()


def test_a_failed_page_write_leaves_no_partial_page(tmp_path, monkeypatch):
    data = fixture_catalogue(tmp_path)
    page = write_viewer(tmp_path / "viewer.html", **data)
    before = page.read_bytes()

    def disk_full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(FileWriteError, match=r"could not write .*viewer\.html"):
        write_viewer(page, **data, title="another title")
    assert page.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio", "viewer.html"]


def test_docs_example_runs(tmp_path, monkeypatch):
    """The Python example of docs/usage/viewer.md, as a user pastes it."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "usage" / "viewer.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/usage/viewer.md", "exec"), {})  # noqa: S102 (our own docs)
    assert len(read_viewer_data(tmp_path / "viewer.html")["tracks"]["id"]) == 200
    assert (tmp_path / "clusters.png").read_bytes()[:4] == b"\x89PNG"


# ---------- the page in a real browser ----------

# CI sets TAGRETRIEVAL_REQUIRE_BROWSER=1, so that a broken browser install fails instead of skipping
REQUIRE_BROWSER = os.environ.get("TAGRETRIEVAL_REQUIRE_BROWSER") == "1"
needs_browser = pytest.mark.skipif(
    find_chromium() is None and not REQUIRE_BROWSER,
    reason="no chromium + chromedriver (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def browser():
    if not REQUIRE_BROWSER:
        pytest.importorskip("selenium", reason="pip install selenium")
    from tagretrieval.viewer.browser import headless_chromium

    driver = headless_chromium(width_px=1200, height_px=800)
    yield driver
    driver.quit()


def open_page(driver, page: Path) -> None:
    driver.get(page.as_uri())
    deadline = time.monotonic() + 10
    while not driver.execute_script("return !!(window.viewerState && window.viewerState.ready)"):
        assert time.monotonic() < deadline, f"page never became ready; console: {driver.get_log('browser')}"
        time.sleep(0.05)


def console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def move_to(driver, x: float, y: float, *, click: bool = False) -> None:
    """A real mouse move (and click) at page coordinates ``(x, y)`` in CSS pixels."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(round(x), round(y))
    if click:
        actions.pointer_action.click()
    actions.perform()


def click_at(driver, x: float, y: float) -> None:
    move_to(driver, x, y, click=True)


@needs_browser
def test_page_loads_without_console_errors(browser, catalogue):
    page, _ = catalogue
    open_page(browser, page)
    assert console_errors(browser) == []
    state = browser.execute_script("return window.viewerState")
    assert state["nTracks"] == 30 and state["colorMode"] == "cluster"
    assert len(set(state["colors"])) == 3  # one colour per cluster
    assert sum(entry["count"] for entry in state["legend"]) == 30
    legend = browser.execute_script("window.viewer.setColorMode('category', 'genre'); return window.viewerState.legend")
    assert {entry["label"]: entry["count"] for entry in legend} == {"rock": 10, "jazz": 10, "none": 10}
    legend = browser.execute_script("window.viewer.setColorMode('tag', 2); return window.viewerState.legend")
    assert [entry["count"] for entry in legend] == [10, 20]  # has "calm" / not
    assert console_errors(browser) == []


@needs_browser
def test_click_selects_plays_and_recolours_by_full_embedding_distance(browser, catalogue):
    page, data = catalogue
    open_page(browser, page)
    before = browser.execute_script("return window.viewerState.colors")
    # click (a real mouse click) the song with audio that stands farthest from its neighbours on screen
    positions = np.array([[p["x"], p["y"]] for p in browser.execute_script(
        "return window.viewerState.colors.map((_, i) => window.viewer.clientPosition(i))")])
    gaps = np.linalg.norm(positions[:, None] - positions[None], axis=2) + np.eye(30) * 1e9
    target = int(np.argmax(np.where(np.arange(30) < 10, gaps.min(axis=1), -1)))  # tracks 0-9 have audio
    assert gaps[target].min() > 6, "fixture map too crowded to click one point"
    move_to(browser, *positions[target])
    tooltip = browser.find_element("id", "tooltip")
    assert tooltip.is_displayed()
    assert tooltip.text.splitlines()[:3] == [data["tracks"]["track_id"][target], f"artist: artist <{target % 4}>",
                                             "tags: rock"]
    click_at(browser, *positions[target])

    state = browser.execute_script("return window.viewerState")
    assert state["selected"] == target
    assert state["colorMode"] == "similarity"
    assert state["colors"] != before
    # colours follow the cosine distance in the full 8-d space, not distances on the 2-D map
    songs = data["track_embeddings"] / np.linalg.norm(data["track_embeddings"], axis=1, keepdims=True)
    np.testing.assert_allclose(state["values"], 1 - songs @ songs[target], atol=2e-3)
    assert state["colors"][target] == "#fde725"  # distance 0: the near end of the ramp
    assert state["audioSrc"].endswith(f"audio/{data['tracks']['track_id'][target]}.wav")
    deadline = time.monotonic() + 5  # the WAV file is found and decoded
    while browser.execute_script("return document.getElementById('player').readyState") < 1:
        assert time.monotonic() < deadline, "audio never loaded"
        time.sleep(0.05)
    player = browser.execute_script("const a = document.getElementById('player');"
                                    "return {error: a.error && a.error.code, src: a.currentSrc, paused: a.paused}")
    assert player == {"error": None, "src": player["src"], "paused": False}
    assert player["src"].startswith("file://")
    assert console_errors(browser) == []


@needs_browser
def test_search_ranks_songs_by_cosine_to_the_tag(browser, catalogue):
    page, data = catalogue
    open_page(browser, page)
    box = browser.find_element("id", "search")
    box.send_keys("jazz")  # an exact tag name searches as you type
    state = browser.execute_script("return window.viewerState")
    assert state["searchTag"] == "jazz"
    results = [r["track_id"] for r in state["searchResults"]]
    assert results[0] == expected_top(data, "jazz") == "best_jazz"
    assert "loud_jazz" in results[1:]  # biggest dot product, but ranked by cosine
    oracle_ids, oracle_cosines = oracle_ranking(data, "jazz")
    assert np.min(np.diff(-oracle_cosines[:11])) > 1e-3  # no near-tie in the fixture's top 10
    assert results == oracle_ids[:10]
    np.testing.assert_allclose([r["score"] for r in state["searchResults"]], oracle_cosines[:10], atol=1e-3)
    assert state["highlighted"] == [r["index"] for r in state["searchResults"]]
    first = browser.find_element("css selector", "#results li")
    assert first.text.startswith("best_jazz")
    box.clear()
    box.send_keys("cal\n")  # Enter on a prefix picks the first matching tag
    assert browser.execute_script("return window.viewerState.searchTag") == "calm"
    assert browser.execute_script("return window.viewerState.searchResults[0].track_id") == "best_calm"
    assert console_errors(browser) == []


@pytest.fixture(scope="module")
def sixty_song_page(tmp_path_factory) -> Path:
    """A 60-song export-like page: 4 planted clusters in 16-d (a map wider than tall or taller than wide)."""
    rng = np.random.default_rng(5)
    centres = planted_directions(rng, 4, 16)
    truth = np.repeat(np.arange(4), 15)
    songs = centres[truth] + 0.2 * rng.normal(size=(60, 16))
    tracks = pd.DataFrame({"track_id": [f"song{i:02d}" for i in range(60)], "artist": "a", "tags": "rock",
                           "split": "train", "audio_path": ""})
    return write_viewer(tmp_path_factory.mktemp("sixty") / "viewer.html", track_embeddings=songs, tracks=tracks,
                        tag_embeddings=centres[:3], tags=TAGS, categories=CATEGORIES, n_clusters=4)


def point_layout(driver) -> tuple[np.ndarray, dict, dict, dict, float]:
    """Every song's centre in page pixels, the canvas and reset-button rectangles, the plot area, the point radius."""
    positions = np.array([[p["x"], p["y"]] for p in driver.execute_script(
        "window.dispatchEvent(new Event('resize'));"  # as a browser does after a window resize
        "return window.viewerState.colors.map((_, i) => window.viewer.clientPosition(i))")])
    canvas, button = (driver.execute_script(f"const r = document.getElementById('{name}').getBoundingClientRect();"
                                            "return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}")
                      for name in ("map", "reset-view"))
    state = driver.execute_script("return window.viewerState")
    return positions, canvas, button, state["plotArea"], state["pointRadius"]


@needs_browser
@pytest.mark.parametrize("width_px, height_px", [(1280, 900), (900, 1000)])
def test_the_map_is_fitted_to_the_canvas_and_clear_of_the_reset_button(browser, sixty_song_page, width_px,
                                                                        height_px):
    browser.set_window_size(width_px, height_px)
    try:
        check_fitted_layout(browser, sixty_song_page, width_px, height_px)
    finally:
        browser.set_window_size(1200, 800)  # the size the other browser tests were written for


def check_fitted_layout(browser, page: Path, width_px: int, height_px: int) -> None:
    open_page(browser, page)
    positions, canvas, button, area, radius = point_layout(browser)
    assert radius > 0
    x, y = positions[:, 0], positions[:, 1]
    # every point, drawn with its radius, lies inside the canvas
    assert (x - radius >= canvas["left"]).all() and (x + radius <= canvas["right"]).all()
    assert (y - radius >= canvas["top"]).all() and (y + radius <= canvas["bottom"]).all()
    # and none under the reset button
    under = ((x + radius > button["left"]) & (x - radius < button["right"]) & (y + radius > button["top"])
             & (y - radius < button["bottom"]))
    assert not under.any(), positions[under]
    # the map's extent fills the plot area along one axis (within a pixel) and is centred along the other
    width, height = x.max() - x.min(), y.max() - y.min()
    area_w, area_h = area["right"] - area["left"], area["bottom"] - area["top"]
    assert max(width / area_w, height / area_h) == pytest.approx(1.0, abs=1 / min(area_w, area_h))
    centre = np.array([(x.max() + x.min()) / 2 - canvas["left"], (y.max() + y.min()) / 2 - canvas["top"]])
    np.testing.assert_allclose(centre, [(area["left"] + area["right"]) / 2, (area["top"] + area["bottom"]) / 2],
                               atol=1.0)
    # a smaller window: fitted again
    browser.set_window_size(width_px * 2 // 3, height_px * 2 // 3)
    positions, canvas, button, area, radius = point_layout(browser)
    assert (positions[:, 0] + radius <= canvas["right"]).all() and (positions[:, 1] + radius <= canvas["bottom"]).all()
    assert (positions[:, 1] + radius <= button["top"]).all()
    assert console_errors(browser) == []
