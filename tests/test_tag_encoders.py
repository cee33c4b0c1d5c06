"""Tag word vectors: gensim files in every format, co-occurrence vectors, missing tags refused or dropped."""

import numpy as np
import pytest
from gensim.models import Word2Vec

from tagretrieval.tags.encoders import (
    Cooccurrence, Learned, MissingWordVectorsError, Word2VecFile, resolve_missing, spellings,
)


def cosine(x, y):
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


@pytest.fixture(scope="module")
def word2vec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w2v")
    sentences = [["hip-hop", "rap", "beats"], ["drum_n_bass", "jungle", "breaks"], ["sad", "piano"],
                 ["happy", "guitar"], ["Rock", "guitar"]] * 20
    model = Word2Vec(sentences=sentences, vector_size=12, min_count=1, seed=1, workers=1, epochs=5)
    paths = {"model": folder / "w.model", "kv": folder / "w.kv", "txt": folder / "w.txt", "bin": folder / "w.bin"}
    model.save(str(paths["model"]))
    model.wv.save(str(paths["kv"]))
    model.wv.save_word2vec_format(str(paths["txt"]), binary=False)
    model.wv.save_word2vec_format(str(paths["bin"]), binary=True)
    return model, paths


@pytest.mark.parametrize("kind", ["model", "kv", "txt", "bin"])
def test_every_gensim_format_loads_the_same_vectors(word2vec, kind):
    model, paths = word2vec
    encoder = Word2VecFile(path=str(paths[kind]), dim=12, trust_pickle=kind in ("model", "kv"))
    vectors, missing = encoder.vectors(["piano", "sad"], train_tag_lists=[])
    assert missing == []
    assert np.allclose(vectors[0], model.wv["piano"], atol=1e-5)


def test_multi_word_tags_follow_the_vocabulary_spelling(word2vec):
    model, paths = word2vec
    encoder = Word2VecFile(path=str(paths["model"]), dim=12, trust_pickle=True)
    assert np.allclose(encoder.lookup("hip hop"), model.wv["hip-hop"])
    assert np.allclose(encoder.lookup("drum n bass"), model.wv["drum_n_bass"])
    assert np.allclose(encoder.lookup("rock"), model.wv["Rock"])
    # a phrase the vocabulary lacks: mean of its words
    assert np.allclose(encoder.lookup("sad piano"), (model.wv["sad"] + model.wv["piano"]) / 2, atol=1e-6)
    assert encoder.lookup("sad violin") is None
    assert "hip_hop" in spellings("hip hop") and "hip-hop" in spellings("hip_hop")


def test_missing_tags_are_listed_or_dropped(word2vec):
    _, paths = word2vec
    encoder = Word2VecFile(path=str(paths["model"]), dim=12, trust_pickle=True)
    tags = ["piano", "theremin", "sad", "zydeco"]
    vectors, missing = encoder.vectors(tags, train_tag_lists=[])
    assert missing == ["theremin", "zydeco"]
    with pytest.raises(MissingWordVectorsError, match="theremin, zydeco"):
        resolve_missing(tags, vectors, missing, drop_missing=False)
    kept, kept_vectors, dropped = resolve_missing(tags, vectors, missing, drop_missing=True)
    assert kept == ["piano", "sad"] and dropped == ["theremin", "zydeco"]
    assert np.array_equal(kept_vectors, vectors[[0, 2]])


def test_wrong_dimension_and_missing_file_are_clear(word2vec, tmp_path):
    _, paths = word2vec
    with pytest.raises(ValueError, match="12-d"):
        Word2VecFile(path=str(paths["model"]), dim=300, trust_pickle=True).vectors(["piano"], train_tag_lists=[])
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        Word2VecFile(path=str(tmp_path / "nothing.bin")).vectors(["piano"], train_tag_lists=[])


def test_cooccurrence_vectors_separate_exclusive_tags_and_are_deterministic():
    rng = np.random.default_rng(0)
    lists = []
    for _ in range(400):
        mood = rng.choice(["happy", "sad"])
        tempo = rng.choice(["slow", "fast"])
        place = rng.choice(["rio", "tokyo"])
        era = {"rio": "sixties", "tokyo": "eighties"}[place]   # era follows place: they co-occur
        lists.append([mood, tempo, place, era])
    tags = ["happy", "sad", "slow", "fast", "rio", "tokyo", "sixties", "eighties", "unused"]
    encoder = Cooccurrence(dim=32, epochs=30, seed=3)
    vectors, missing = encoder.vectors(tags, train_tag_lists=lists)
    assert missing == ["unused"]
    v = dict(zip(tags, vectors))
    # tags that exclude each other but share all contexts must not collapse onto one vector
    assert cosine(v["happy"], v["sad"]) < 0.8 and cosine(v["slow"], v["fast"]) < 0.8
    # tags that always occur together are closer than tags that never do
    assert cosine(v["rio"], v["sixties"]) > cosine(v["rio"], v["eighties"])
    again, _ = Cooccurrence(dim=32, epochs=30, seed=3).vectors(tags, train_tag_lists=lists)
    assert np.array_equal(again, vectors)


def test_learned_vectors_are_seeded_and_trainable():
    a, missing = Learned(dim=8, seed=1).vectors(["x", "y"], train_tag_lists=[])
    b, _ = Learned(dim=8, seed=1).vectors(["x", "y"], train_tag_lists=[])
    assert missing == [] and a.shape == (2, 8) and np.array_equal(a, b) and Learned.trainable
