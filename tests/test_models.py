"""Shapes, chunking, input checks, spec round trips and the gated hybrid fusion."""

from __future__ import annotations

import json

import pytest
import torch

from tagretrieval.models import (
    AcousticModel,
    ConcatModel,
    CulturalModel,
    GatedFusion,
    HybridModel,
    ShortChunkCNN,
    TagRetrievalModel,
    build_from_spec,
    cut_eval_chunks,
)

SMALL = {"cnn_channels": [4, 4, 8, 8, 8, 8, 16], "hidden_dim": 32, "embedding_dim": 16}
CHUNK = 173
VARIANTS = {
    "acoustic": lambda: AcousticModel(**SMALL),
    "cultural": lambda: CulturalModel(hidden_dim=32, embedding_dim=16),
    "concat": lambda: ConcatModel(**SMALL, cnn_out_dim=12),
    "hybrid": lambda: HybridModel(**SMALL, cnn_out_dim=12),
}


def make(name: str, seed: int = 0) -> TagRetrievalModel:
    torch.manual_seed(seed)
    return VARIANTS[name]().eval()


def inputs(batch: int, n_frames: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 128, n_frames, generator=generator), torch.randn(batch, 200, generator=generator)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_embedding_shapes(name):
    model = make(name)
    mel, cf = inputs(3, CHUNK)
    with torch.no_grad():
        assert model.embed_tags(torch.randn(5, 300)).shape == (5, 16)
        assert model.embed_songs(mel=mel, cf=cf).shape == (3, 16)
        assert model.embed_song_chunks(mel.unsqueeze(1), cf).shape == (3, 16)
    assert (model.uses_audio, model.uses_cf) == {
        "acoustic": (True, False),
        "cultural": (False, True),
        "concat": (True, True),
        "hybrid": (True, True),
    }[name]


def test_paper_size_acoustic_forward():
    model = AcousticModel().eval()
    mel, _ = inputs(2, CHUNK)
    with torch.no_grad():
        assert model.embed_songs(mel=mel).shape == (2, 256)
    assert model.cnn.layer8.conv.out_channels == 256 and model.cnn.layer7.conv.out_channels == 512


def test_cut_eval_chunks_follows_the_reference_hop():
    mel = torch.arange(2 * 3 * 200, dtype=torch.float32).reshape(2, 3, 200)
    chunks = cut_eval_chunks(mel, chunk_frames=20, n_chunks=8)
    hop = (200 - 20) // 8  # 22
    assert chunks.shape == (2, 8, 3, 20)
    for i in range(8):
        torch.testing.assert_close(chunks[:, i], mel[:, :, i * hop : i * hop + 20])
    assert cut_eval_chunks(mel[:, :, :20], chunk_frames=20, n_chunks=8).shape == (2, 1, 3, 20)
    short = cut_eval_chunks(mel[:, :, :7], chunk_frames=20, n_chunks=8)
    assert short.shape == (2, 1, 3, 20) and short[..., 7:].abs().sum() == 0


@pytest.mark.parametrize("name", ["acoustic", "concat", "hybrid"])
def test_long_song_is_the_mean_over_evenly_spaced_chunks(name):
    model = make(name)
    mel, cf = inputs(2, CHUNK + 8 * 11 + 5)  # hop 11
    starts = [i * 11 for i in range(8)]
    with torch.no_grad():
        got = model.embed_songs(mel=mel, cf=cf)
        if name == "acoustic":
            expected = torch.stack([model.embed_songs(mel=mel[:, :, s : s + CHUNK]) for s in starts]).mean(0)
        else:
            # audio features are averaged over chunks before meeting the song-level CF vector
            if name == "concat":
                audio = torch.stack([model.cnn(mel[:, :, s : s + CHUNK]) for s in starts]).mean(0)
                expected = model.cat_branch(torch.cat([audio, cf], dim=-1))
            else:
                heads = [model.audio_head(model.cnn(mel[:, :, s : s + CHUNK])) for s in starts]
                expected = model.fusion(torch.stack(heads).mean(0), model.cf_branch(cf))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_short_song_is_zero_padded():
    model = make("acoustic")
    mel, _ = inputs(2, 150)
    padded = torch.cat([mel, torch.zeros(2, 128, CHUNK - 150)], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(model.embed_songs(mel=mel), model.embed_songs(mel=padded))


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("acoustic", {"cf": torch.randn(2, 200)}, "AcousticModel needs mel"),
        ("cultural", {"mel": torch.randn(2, 128, CHUNK)}, "CulturalModel needs cf"),
        ("concat", {"mel": torch.randn(2, 128, CHUNK)}, "ConcatModel needs cf"),
        ("hybrid", {"cf": torch.randn(2, 200)}, "HybridModel needs mel"),
        ("hybrid", {"mel": torch.randn(2, 128, CHUNK), "cf": torch.randn(3, 200)}, "batch"),
        ("concat", {"mel": torch.randn(2, 96, CHUNK), "cf": torch.randn(2, 200)}, r"mel must be \[batch, 128"),
        ("cultural", {"cf": torch.randn(2, 100)}, r"cf must be \[batch, 200\]"),
    ],
)
def test_missing_or_misshaped_inputs_raise(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(name).embed_songs(**kwargs)


def test_wrong_chunk_length_and_word_dim_raise():
    model = make("acoustic")
    with pytest.raises(ValueError, match=r"mel_chunks must be \[batch, n_chunks, 128, 173\]"):
        model.embed_song_chunks(torch.randn(2, 3, 128, 100), None)
    with pytest.raises(ValueError, match=r"word_vectors must be \[batch, 300\]"):
        model.embed_tags(torch.randn(2, 200))


@pytest.mark.parametrize("channels", [[8, 8, 8], [8] * 8, []])
def test_bad_channel_count_is_a_clear_error(channels):
    with pytest.raises(ValueError, match="cnn_channels"):
        AcousticModel(cnn_channels=channels)


def test_channel_count_follows_n_mels():
    cnn = ShortChunkCNN(n_mels=40, channels=[4, 4, 4, 4, 4], out_dim=6)  # 40 -> 20 -> 10 -> 5 -> 2 -> 1
    assert cnn(torch.randn(2, 40, 64)).shape == (2, 6)
    with pytest.raises(ValueError, match="at least 32 frames"):
        cnn(torch.randn(2, 40, 20))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_spec_round_trip_gives_identical_embeddings(name):
    model = make(name, seed=3)
    spec = json.loads(json.dumps(model.spec()))  # as stored in a checkpoint
    assert spec["_target_"] == f"tagretrieval.models.{type(model).__name__}"
    rebuilt = build_from_spec(spec)
    assert type(rebuilt) is type(model)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    mel, cf = inputs(2, 300)
    words = torch.randn(3, 300)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.embed_tags(words), model.embed_tags(words), rtol=0, atol=0)
        torch.testing.assert_close(rebuilt.embed_songs(mel=mel, cf=cf), model.embed_songs(mel=mel, cf=cf), rtol=0, atol=0)


def test_spec_records_defaults():
    spec = HybridModel(cnn_channels=(4,) * 7).spec()
    assert spec["cnn_channels"] == [4] * 7
    assert (spec["embedding_dim"], spec["hidden_dim"], spec["word_dim"], spec["cf_dim"]) == (256, 512, 300, 200)
    assert spec["dropout"] == 0.5 and spec["modality_dropout"] == 0.25


def test_build_from_spec_refuses_foreign_targets_and_unknown_keys():
    with pytest.raises(ValueError, match="refusing _target_ 'os.system'.*model, loss or tag encoder class"):
        build_from_spec({"_target_": "os.system", "command": "echo hi"})
    with pytest.raises(ValueError, match="refusing"):
        build_from_spec({"_target_": "tagretrieval_evil.Model"})
    with pytest.raises(ValueError, match="refusing"):
        build_from_spec({"_target_": "tagretrieval.models.NoSuchModel"})
    with pytest.raises(ValueError, match="_target_"):
        build_from_spec({"embedding_dim": 3})
    with pytest.raises(TypeError, match="unknown_size"):
        build_from_spec({"_target_": "tagretrieval.models.CulturalModel", "unknown_size": 3})


# --- the gated hybrid -----------------------------------------------------------------------------
def test_fusion_weights_are_convex_per_dimension():
    model = make("hybrid")
    mel, cf = inputs(3, 250)
    with torch.no_grad():
        weights = model.fusion_weights(mel, cf)
        assert weights.shape == (3, 2, 16)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(3, 16))
        assert bool(((weights > 0) & (weights < 1)).all())
        chunks = cut_eval_chunks(mel, chunk_frames=CHUNK, n_chunks=8)
        audio, cf_emb = model._branch_embeddings(chunks, cf)
        audio, cf_emb = torch.nn.functional.normalize(audio, dim=-1), torch.nn.functional.normalize(cf_emb, dim=-1)
        expected = weights[:, 0] * audio + weights[:, 1] * cf_emb
        torch.testing.assert_close(model.embed_songs(mel=mel, cf=cf), expected)


def test_full_modality_dropout_uses_one_normalised_modality_per_sample():
    torch.manual_seed(0)
    fusion = GatedFusion(embedding_dim=5, modality_dropout=1.0).train()
    audio, cf = torch.randn(64, 5), torch.randn(64, 5)
    fused = fusion(audio, cf)
    is_audio = torch.isclose(fused, torch.nn.functional.normalize(audio, dim=-1)).all(dim=1)
    is_cf = torch.isclose(fused, torch.nn.functional.normalize(cf, dim=-1)).all(dim=1)
    assert bool((is_audio ^ is_cf).all())
    assert 10 < int(is_audio.sum()) < 54  # both modalities get dropped
    fusion.eval()
    torch.testing.assert_close(fusion(audio, cf), fusion(audio, cf))
    assert not bool(torch.isclose(fusion(audio, cf), torch.nn.functional.normalize(audio, dim=-1)).all())


def test_hybrid_is_stochastic_in_training_and_deterministic_in_eval():
    torch.manual_seed(0)
    model = HybridModel(**SMALL, cnn_out_dim=12, dropout=0.0, modality_dropout=0.5)
    mel, cf = inputs(8, CHUNK)
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model.embed_songs(mel=mel, cf=cf), model.embed_songs(mel=mel, cf=cf))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.embed_songs(mel=mel, cf=cf), model.embed_songs(mel=mel, cf=cf), rtol=0, atol=0)


def test_hybrid_trains_both_branches():
    model = make("hybrid").train()
    mel, cf = inputs(4, CHUNK)
    loss = model.embed_songs(mel=mel, cf=cf).sum() + model.embed_tags(torch.randn(4, 300)).sum()
    loss.backward()
    for name in ("cnn.layer1.conv.weight", "audio_head.fc1.weight", "cf_branch.fc1.weight", "fusion.gate.weight"):
        assert model.get_parameter(name).grad is not None, name


@pytest.mark.parametrize("mode", ["mean", "attention", "transformer"])
def test_chunk_pooling_starts_as_the_mean_and_takes_any_number_of_chunks(mode):
    from tagretrieval.models.branches import ChunkPooling

    torch.manual_seed(0)
    pooling = ChunkPooling(mode=mode, dim=16)
    chunks = torch.randn(3, 5, 16)
    # the learnt poolings are initialised to the mean (uniform attention, an identity block): never a worse start
    assert torch.allclose(pooling(chunks), chunks.mean(dim=1), atol=1e-5)
    assert pooling(chunks[:, :1]).shape == (3, 16) and pooling(torch.randn(2, 8, 16)).shape == (2, 16)
    if mode != "mean":
        for parameter in pooling.parameters():  # once trained they weigh chunks by content
            torch.nn.init.normal_(parameter, std=0.5)
        assert not torch.allclose(pooling(chunks), chunks.mean(dim=1), atol=1e-3)
        assert torch.allclose(pooling(chunks), pooling(chunks[:, [4, 2, 0, 1, 3]]), atol=1e-5)  # a set of chunks


@pytest.mark.parametrize("name", ["acoustic", "concat", "hybrid"])
def test_audio_models_pool_chunks_as_configured_and_rebuild_from_spec(name):
    torch.manual_seed(0)
    model = {"acoustic": lambda: AcousticModel(**SMALL, pooling="attention"),
             "concat": lambda: ConcatModel(**SMALL, cnn_out_dim=12, pooling="attention"),
             "hybrid": lambda: HybridModel(**SMALL, cnn_out_dim=12, pooling="attention")}[name]().eval()
    assert model.spec()["pooling"] == "attention"
    torch.nn.init.normal_(model.chunk_pooling.score[2].weight)
    rebuilt = build_from_spec(model.spec()).eval()
    rebuilt.load_state_dict(model.state_dict())
    mel, cf = inputs(2, 600)
    with torch.no_grad():
        assert torch.equal(model.embed_songs(mel=mel, cf=cf), rebuilt.embed_songs(mel=mel, cf=cf))
    with pytest.raises(ValueError, match="pooling must be one of"):
        AcousticModel(**SMALL, pooling="max")
