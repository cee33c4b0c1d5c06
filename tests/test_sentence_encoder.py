"""tag_encoder=sentence with the packaged all-MiniLM-L6-v2 (the optional extra ``.[text]``), offline.

Skipped, with the reason, when the extra is not installed, unless ``TAGRETRIEVAL_REQUIRE_TEXT=1`` (CI installs it and
sets it, so that a broken install fails instead of skipping).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tagretrieval.tags.sentence import SentenceEncoder, text_extra_missing

from conftest import read_metrics, run_main, run_task

MISSING = text_extra_missing()
if MISSING and os.environ.get("TAGRETRIEVAL_REQUIRE_TEXT") == "1":
    raise RuntimeError(f"TAGRETRIEVAL_REQUIRE_TEXT=1 but the sentence encoder cannot run: {MISSING}")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"tag_encoder=sentence needs the .[text] extra: {MISSING}")

QUERY = "calm piano for studying"


def test_the_packaged_model_embeds_tags_and_free_text_offline_and_caches_a_vocabulary(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be fetched
    tags = ["piano", "drums", "sad", "string quartet"]
    encoder = SentenceEncoder(cache_dir=str(tmp_path / "cache"))
    vectors, missing = encoder.vectors(tags, train_tag_lists=[])
    assert missing == [] and vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query = encoder.lookup(QUERY)
    # the model's own knowledge: a query about piano is closest to the tag piano (cosines 0.66 against <= 0.28)
    assert int(np.argmax(vectors @ query)) == 0 and float(vectors[0] @ query) > float(vectors[1] @ query) + 0.2
    np.testing.assert_allclose(encoder.lookup("piano"), vectors[0], atol=1e-5)

    again = SentenceEncoder(cache_dir=str(tmp_path / "cache"))
    cached, _ = again.vectors(tags, train_tag_lists=[])
    assert again._encoder is None  # read from the cache: the model was not loaded
    np.testing.assert_array_equal(cached, vectors)
    assert again.cache_path(tags) != again.cache_path(tags[:3])  # one file per tag vocabulary


@pytest.mark.slow  # a training run and a main.py subprocess that loads the model: CI runs it with -m slow
def test_sentence_tags_train_zero_shot_and_retrieve_songs_for_a_free_text_query(tmp_path, smoke_overrides):
    cache = tmp_path / "sentence_cache"
    run_dir = tmp_path / "run"
    # docs/usage/evaluation.md's zero-shot command (a quarter of every category's tags held out), shortened by
    # experiment=smoke
    run_task([*smoke_overrides, "tag_encoder=sentence", f"tag_encoder.cache_dir={cache}", "eval.unseen_tags=0.25"],
             run_dir)
    metrics = read_metrics(run_dir)
    unseen = set(metrics["unseen"]["per_tag"]) | set(metrics["unseen"]["skipped_tags"])
    assert len(unseen) == 5 and {metrics["per_tag"][t]["category"] for t in unseen} == set(metrics["per_category"])
    assert not unseen & set(metrics["seen"]["per_tag"])

    # docs/usage/trained-model.md's command, as typed
    out = tmp_path / "retrieve"
    result = run_main(["mode=retrieve", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", f'query="{QUERY}"',
                       "top_k=3", f"hydra.run.dir={out}", "progress=false"])
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads((out / "retrieval.json").read_text())
    assert list(found) == [QUERY] and len(found[QUERY]) == 3
    assert all(hit["track_id"].startswith("track") for hit in found[QUERY])
