"""Importing checkpoints of the reference implementation gives the reference's embeddings.

The reference networks below are a literal transcription of minzwon/tag-based-music-retrieval
(train/model.py, train/modules.py; attribute names and forward order kept), built with random
weights and random BatchNorm statistics, saved the way its Lightning 0.9 trainer does, and imported.
"""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from tagretrieval.models import (
    AcousticModel,
    ConcatModel,
    CulturalModel,
    convert_reference_state_dict,
    detect_reference_kind,
    load_reference_checkpoint,
    model_from_reference,
)

N_CHUNKS, CHUNK = 8, 173


# --- literal transcription of the reference (modules.py / model.py) ------------------------------
class Conv_2d(nn.Module):
    def __init__(self, input_channels, output_channels, shape=3, pooling=2):
        super().__init__()
        self.conv = nn.Conv2d(input_channels, output_channels, shape, padding=shape // 2)
        self.bn = nn.BatchNorm2d(output_channels)
        self.relu = nn.ReLU()
        self.mp = nn.MaxPool2d(pooling)

    def forward(self, x):
        return self.mp(self.relu(self.bn(self.conv(x))))


class Conv_emb(nn.Module):
    def __init__(self, input_channels, output_channels, with_bn=True):
        super().__init__()
        self.conv = nn.Conv2d(input_channels, output_channels, 1)
        if with_bn:  # the earlier revision; the later one has no BatchNorm here
            self.bn = nn.BatchNorm2d(output_channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.conv(x)
        if hasattr(self, "bn"):
            out = self.bn(out)
        return self.relu(out)


class _RefCNN(nn.Module):
    def _build_cnn(self, out, with_bn):
        self.spec_bn = nn.BatchNorm2d(1)
        self.layer1 = Conv_2d(1, 128, pooling=2)
        self.layer2 = Conv_2d(128, 128, pooling=2)
        self.layer3 = Conv_2d(128, 256, pooling=2)
        self.layer4 = Conv_2d(256, 256, pooling=2)
        self.layer5 = Conv_2d(256, 256, pooling=2)
        self.layer6 = Conv_2d(256, 256, pooling=2)
        self.layer7 = Conv_2d(256, 512, pooling=2)
        self.layer8 = Conv_emb(512, out, with_bn)

    def spec_to_embedding(self, spec):
        out = spec.unsqueeze(1)
        out = self.spec_bn(out)
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = self.layer5(out)
        out = self.layer6(out)
        out = self.layer7(out)
        out = self.layer8(out)
        out = out.squeeze(2)
        out = nn.MaxPool1d(out.size(-1))(out)
        out = out.view(out.size(0), -1)
        return out

    def _build_word(self):
        self.fc1 = nn.Linear(300, 512)
        self.bn1 = nn.BatchNorm1d(512)
        self.fc2 = nn.Linear(512, 256)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    def word_to_embedding(self, emb):
        out = self.fc1(emb)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.dropout(out)
        out = self.fc2(out)
        return out


class RefAudioModel(_RefCNN):
    def __init__(self, with_bn=True):
        super().__init__()
        self._build_cnn(256, with_bn)
        self._build_word()

    def song_to_emb(self, spec, cf):  # Solver.song_to_emb, input_type == 'spec'
        b, c, f, t = spec.size()
        out = self.spec_to_embedding(spec.view(-1, f, t))
        return out.view(b, c, -1).mean(dim=1)


class RefCFModel(_RefCNN):
    def __init__(self):
        super().__init__()
        self.cf_fc1 = nn.Linear(200, 512)
        self.cf_bn1 = nn.BatchNorm1d(512)
        self.cf_fc2 = nn.Linear(512, 256)
        self._build_word()

    def song_to_emb(self, spec, cf):  # input_type == 'cf'
        out = self.cf_fc1(cf)
        out = self.cf_bn1(out)
        out = self.relu(out)
        out = self.dropout(out)
        return self.cf_fc2(out)


class RefHybridModel(_RefCNN):
    def __init__(self, with_bn=True):
        super().__init__()
        self._build_cnn(200, with_bn)
        self.cat_fc1 = nn.Linear(400, 512)
        self.cat_bn1 = nn.BatchNorm1d(512)
        self.cat_fc2 = nn.Linear(512, 256)
        self._build_word()

    def cat_to_embedding(self, cat):
        out = self.cat_fc1(cat)
        out = self.cat_bn1(out)
        out = self.relu(out)
        out = self.dropout(out)
        return self.cat_fc2(out)

    def song_to_emb(self, spec, cf):  # input_type == 'hybrid'
        b, c, f, t = spec.size()
        out = self.spec_to_embedding(spec.view(-1, f, t))
        spec_emb = out.view(b, c, -1).mean(dim=1)
        return self.cat_to_embedding(torch.cat([spec_emb, cf], dim=-1))


def reference_chunks(spec: torch.Tensor) -> torch.Tensor:
    """data_loader.MyDataset.load_spec for VALID/TEST, batched: [B, 128, T] -> [B, 8, 128, 173]."""
    hop = (spec.shape[-1] - CHUNK) // N_CHUNKS
    return torch.stack([spec[:, :, i * hop : i * hop + CHUNK] for i in range(N_CHUNKS)], dim=1)


# --- helpers --------------------------------------------------------------------------------------
def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and random BatchNorm running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = module.num_features
                module.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in**0.5)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    return model.eval()


def save_lightning_checkpoint(model: nn.Module, path, **extra) -> None:
    state_dict = {f"model.{key}": value for key, value in model.state_dict().items()}
    torch.save({"epoch": 3, "global_step": 300, "state_dict": state_dict, **extra}, path)


# name -> (reference network, our class, song length in frames). Full songs (8 chunks, hop 5) check
# the chunk cutting and averaging; single chunks keep the paper-size CNN cheap for the other cases.
LONG, SHORT = CHUNK + 8 * 5 + 3, CHUNK
REFERENCES = {
    "acoustic": (lambda: RefAudioModel(), AcousticModel, LONG),
    "acoustic_no_layer8_bn": (lambda: RefAudioModel(with_bn=False), AcousticModel, SHORT),
    "cultural": (lambda: RefCFModel(), CulturalModel, SHORT),
    "concat": (lambda: RefHybridModel(), ConcatModel, LONG),
    "concat_no_layer8_bn": (lambda: RefHybridModel(with_bn=False), ConcatModel, SHORT),
}


@pytest.mark.parametrize("name", list(REFERENCES))
def test_imported_checkpoint_reproduces_reference_embeddings(name, tmp_path):
    build_reference, expected_class, n_frames = REFERENCES[name]
    reference = randomize(build_reference(), seed=len(name))
    path = tmp_path / "reference.ckpt"
    save_lightning_checkpoint(reference, path)

    ours = load_reference_checkpoint(path)
    assert type(ours) is expected_class
    assert not ours.training

    generator = torch.Generator().manual_seed(0)
    words = torch.randn(4, 300, generator=generator)
    spec = torch.randn(1, 128, n_frames, generator=generator)
    cf = torch.randn(1, 200, generator=generator)
    reference_input = reference_chunks(spec) if n_frames > CHUNK else spec.unsqueeze(1)
    with torch.no_grad():
        torch.testing.assert_close(ours.embed_tags(words), reference.word_to_embedding(words), atol=1e-5, rtol=1e-5)
        expected_songs = reference.song_to_emb(reference_input, cf)
        torch.testing.assert_close(ours.embed_songs(mel=spec, cf=cf), expected_songs, atol=1e-5, rtol=1e-5)


def test_paper_sizes_are_rebuilt():
    model = model_from_reference(RefHybridModel().state_dict())  # bare state dict, no "model." prefix
    assert isinstance(model, ConcatModel)
    spec = model.spec()
    assert spec["cnn_channels"] == [128, 128, 256, 256, 256, 256, 512]
    assert (spec["cnn_out_dim"], spec["cf_dim"], spec["hidden_dim"], spec["embedding_dim"]) == (200, 200, 512, 256)
    assert (spec["word_dim"], spec["n_mels"], spec["chunk_frames"], spec["n_eval_chunks"]) == (300, 128, 173, 8)


def test_detect_and_convert_are_prefix_renames():
    state_dict = {f"model.{key}": value for key, value in RefCFModel().state_dict().items()}
    assert detect_reference_kind(state_dict) == "cultural"
    kind, ours = convert_reference_state_dict(state_dict)
    assert kind == "cultural"
    assert "cf_branch.bn1.running_var" in ours and "tag_branch.fc2.bias" in ours
    assert ours["cf_branch.fc1.weight"] is state_dict["model.cf_fc1.weight"]
    assert detect_reference_kind(RefAudioModel().state_dict()) == "acoustic"
    assert detect_reference_kind(RefHybridModel().state_dict()) == "concat"


def test_unrecognised_keys_are_listed():
    with pytest.raises(ValueError, match="not a recognised reference"):
        detect_reference_kind({"model.encoder.weight": torch.zeros(1)})
    state_dict = dict(RefAudioModel().state_dict())
    state_dict["projector.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match="projector.weight"):
        convert_reference_state_dict(state_dict)
    del state_dict["projector.weight"]
    del state_dict["layer3.bn.running_mean"]
    with pytest.raises(ValueError, match=r"missing \['cnn.layer3.bn.running_mean'\]"):
        model_from_reference(state_dict)


def test_old_checkpoints_without_num_batches_tracked_load():
    reference = randomize(RefCFModel(), seed=1)
    state_dict = {key: value for key, value in reference.state_dict().items() if "num_batches_tracked" not in key}
    model = model_from_reference(state_dict)
    words = torch.randn(3, 300)
    with torch.no_grad():
        torch.testing.assert_close(model.embed_tags(words), reference.word_to_embedding(words))


def test_checkpoint_with_python_objects_needs_trust(tmp_path):
    path = tmp_path / "with_hparams.ckpt"
    save_lightning_checkpoint(randomize(RefCFModel(), seed=2), path, hparams=argparse.Namespace(margin=0.4))
    with pytest.raises(ValueError, match="trusted=True") as error:
        load_reference_checkpoint(path)
    assert "torch.save({'state_dict'" in str(error.value)
    assert isinstance(load_reference_checkpoint(path, trusted=True), CulturalModel)


def test_missing_file_and_missing_state_dict(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_reference_checkpoint(tmp_path / "nope.ckpt")
    path = tmp_path / "other.ckpt"
    torch.save({"epoch": 1}, path)
    with pytest.raises(ValueError, match="no 'state_dict'"):
        load_reference_checkpoint(path)
