"""fastwhisper.load_audio: bundled samples, resampling and downmix, array/tensor inputs, every error path.

ffmpeg is optional: tests that need a real ffmpeg are skipped without one; the "ffmpeg is missing" path is
simulated by hiding it, and the timeout / failure paths by replacing subprocess.run.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import fastwhisper.audio as audio_mod
from fastwhisper.audio import SAMPLE_RATE, load_audio, resample
from fastwhisper.errors import AudioLoadError, FastWhisperError

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "audio_samples"
MANIFEST = json.loads((SAMPLES_DIR / "manifest.json").read_text())
HAS_FFMPEG = shutil.which("ffmpeg") is not None
requires_ffmpeg = pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg is not installed")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def best_lag_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 4000) -> float:
    """Correlation after shifting b by the lag (|lag| <= max_lag) that aligns it best with a (codec delays)."""
    n = min(len(a), len(b))
    spec = np.fft.rfft(a[:n], 2 * n) * np.conj(np.fft.rfft(b[:n], 2 * n))
    xc = np.fft.irfft(spec, 2 * n)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    lag = int(lags[np.argmax(xc[lags])])
    return correlation(a[lag:], b) if lag >= 0 else correlation(a, b[-lag:])


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLES_DIR / MANIFEST[0]["file"])


@pytest.fixture
def no_ffmpeg(monkeypatch):
    """Hide ffmpeg: shutil.which finds nothing and PATH is empty."""
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setenv("PATH", "")


# ------------------------------------------------------------------------------------------------ samples

def test_manifest_describes_redistributable_samples():
    assert len(MANIFEST) >= 4
    for entry in MANIFEST:
        assert set(entry) >= {"file", "text", "duration_s", "source", "license"}
        assert (SAMPLES_DIR / entry["file"]).is_file() and entry["file"].endswith(".flac")
        real_speech = "BSD-2-Clause" in entry["license"] and "pocketsphinx" in entry["source"]
        synthesized = entry["license"].startswith("MIT") and "espeak-ng" in entry["source"]
        assert entry["text"].strip() and (real_speech or synthesized), entry
    assert sum("pocketsphinx" in e["source"] for e in MANIFEST) >= 4, "real human speech first"
    assert any(e["duration_s"] > 60 for e in MANIFEST), "one long clip for long-form transcription"
    assert (SAMPLES_DIR / "SOURCES.md").is_file()
    total = sum(f.stat().st_size for f in SAMPLES_DIR.iterdir() if f.is_file())
    assert total < 4.5e6, f"audio_samples/ is {total / 1e6:.1f} MB"


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_manifest_sample_loads_as_16k_mono_float32(entry):
    path = SAMPLES_DIR / entry["file"]
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    audio = load_audio(path)
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - entry["duration_s"]) <= 0.05
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 0.01, "real speech, not silence"
    # str path and pathlib.Path give the same samples
    np.testing.assert_array_equal(load_audio(str(path)), audio)


def test_long_sample_is_a_concatenation_of_the_short_ones():
    long_audio = load_audio(SAMPLES_DIR / next(e["file"] for e in MANIFEST if e["duration_s"] > 60))
    first = load_audio(SAMPLES_DIR / "librivox_sense_and_sensibility_0870.flac")
    np.testing.assert_array_equal(long_audio[: len(first)], first)


# ------------------------------------------------------------------------------- long files, in parts

@pytest.mark.parametrize("name,subtype,channels", [("long.flac", "PCM_16", 1), ("long.wav", "PCM_16", 2),
                                                   ("long_float.wav", "FLOAT", 1)])
def test_long_file_decoded_in_parallel_parts_like_one_read(tmp_path, monkeypatch, speech, name, subtype, channels):
    """Files of several _PART_SECONDS are decoded by one thread per part: the same samples as one read (parts
    whose bounds fall anywhere in a FLAC frame), mono or downmixed."""
    clip = np.tile(speech, 3)[: 7 * SAMPLE_RATE + 123]
    data = np.stack([clip, -0.5 * clip], axis=1)[:, :channels]
    path = tmp_path / name
    sf.write(path, data, SAMPLE_RATE, subtype=subtype)
    expected = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1, dtype=np.float64).astype(np.float32)
    parts = []
    real = audio_mod._read_parts
    monkeypatch.setattr(audio_mod, "_PART_SECONDS", 1.0)
    monkeypatch.setattr(audio_mod.os, "cpu_count", lambda: 5)
    monkeypatch.setattr(audio_mod, "_read_parts", lambda *args: parts.append(args[-1]) or real(*args))
    loaded = load_audio(path)
    assert parts == [5]
    np.testing.assert_array_equal(loaded, expected)


def test_parts_that_come_back_short_are_a_truncated_file(tmp_path, monkeypatch, speech):
    """A part that decodes fewer frames than the header promises makes the file corrupt, not shorter."""
    path = tmp_path / "long.flac"
    sf.write(path, np.tile(speech, 2)[: 5 * SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
    monkeypatch.setattr(audio_mod, "_PART_SECONDS", 1.0)
    monkeypatch.setattr(audio_mod, "_read_parts", lambda sf_, path_, frames, channels, parts:
                        np.zeros((frames // 2, channels), dtype=np.float32))
    with pytest.raises(AudioLoadError, match=r"long\.flac.*corrupt or truncated.*promises 80000 frames"):
        load_audio(path)


def test_short_or_unseekable_formats_are_read_in_one_part(tmp_path, monkeypatch, speech):
    monkeypatch.setattr(audio_mod, "_read_parts", lambda *args: pytest.fail("read in parts"))
    path = tmp_path / "short.flac"
    sf.write(path, speech[: SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(path), sf.read(path, dtype="float32")[0])
    monkeypatch.setattr(audio_mod, "_PART_SECONDS", 0.1)
    ogg = tmp_path / "speech.ogg"  # not in _PARALLEL_FORMATS
    sf.write(ogg, speech[: 2 * SAMPLE_RATE], SAMPLE_RATE, format="OGG", subtype="VORBIS")
    assert load_audio(ogg).shape == (2 * SAMPLE_RATE,)


# ----------------------------------------------------------------------------- resampling and downmixing

def test_44k_stereo_wav_loads_back_like_the_16k_original(tmp_path, speech):
    up = resample(speech, 16000, 44100)
    assert len(up) == int(np.ceil(len(speech) * 44100 / 16000))
    noise = 0.05 * np.random.default_rng(0).standard_normal(len(up)).astype(np.float32)
    stereo = np.stack([up + noise, up - noise], axis=1)  # only a mean downmix cancels the noise
    assert np.abs(stereo).max() < 1.0
    path = tmp_path / "speech_44k_stereo.wav"
    sf.write(path, stereo, 44100, subtype="PCM_16")
    loaded = load_audio(path)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(len(loaded) - len(speech)) <= 1
    assert correlation(loaded, speech) > 0.99
    assert correlation(load_audio(stereo[:, 0].copy()), speech) < 0.9, "the first channel alone is noisy"


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 24000, 44100, 48000, 96000, 11111])
def test_resampled_file_matches_an_analytic_tone(tmp_path, rate):
    seconds, freq = 1.5, 1000.0
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    path = tmp_path / f"tone_{rate}.flac"
    sf.write(path, np.stack([tone, tone], axis=1), rate, subtype="PCM_24")
    loaded = load_audio(path)
    expected = 0.5 * np.sin(2 * np.pi * freq * np.arange(len(loaded)) / SAMPLE_RATE)
    assert abs(len(loaded) - seconds * SAMPLE_RATE) <= 1
    inner = slice(1600, len(loaded) - 1600)  # away from the zero-padded ends
    assert np.abs(loaded[inner] - expected[inner]).max() < 1e-3


def test_resampler_rejects_above_the_target_nyquist():
    rate = 44100
    t = np.arange(rate) / rate
    loaded = resample(np.sin(2 * np.pi * 9000 * t).astype(np.float32), rate, 16000)  # 9 kHz > 8 kHz
    assert np.abs(loaded[1600:-1600]).max() < 1e-3  # would alias to 7 kHz at full level otherwise


def test_resample_rates_and_identity():
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    assert len(resample(x, 48000, 16000)) == 334 and len(resample(x, 8000, 16000)) == 2000
    back = resample(resample(x, 16000, 48000), 48000, 16000)
    assert len(back) == len(x)


def test_sr_argument_resamples_files(tmp_path, speech):
    path = SAMPLES_DIR / MANIFEST[0]["file"]
    half = load_audio(path, sr=8000)
    assert abs(len(half) - len(speech) / 2) <= 1
    assert correlation(resample(half, 8000, 16000), speech) > 0.9  # 4-8 kHz band is gone


# ---------------------------------------------------------------------------------- array / tensor input

def test_float_arrays_and_tensors(speech):
    f64 = speech.astype(np.float64)
    for source in (speech, f64, torch.from_numpy(speech), torch.from_numpy(f64)):
        out = load_audio(source)
        assert out.dtype == np.float32 and out.shape == speech.shape
        np.testing.assert_array_equal(out, speech)
    for half in (speech.astype(np.float16), torch.from_numpy(speech).half(), torch.from_numpy(speech).bfloat16()):
        out = load_audio(half)
        assert out.dtype == np.float32 and out.shape == speech.shape
        np.testing.assert_allclose(out, speech, atol=4e-3)
    out = load_audio(speech)
    assert out is not speech and not np.shares_memory(out, speech)
    assert load_audio(torch.from_numpy(speech).requires_grad_()).dtype == np.float32


def test_int_pcm_is_scaled():
    pcm16 = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    expected = np.array([0, 0.5, -1, 32767 / 32768], dtype=np.float32)
    np.testing.assert_array_equal(load_audio(pcm16), expected)
    np.testing.assert_array_equal(load_audio(torch.from_numpy(pcm16)), expected)
    pcm32 = np.array([0, 2**30, -(2**31), 2**31 - 1], dtype=np.int32)
    np.testing.assert_allclose(load_audio(pcm32), [0, 0.5, -1, 1], atol=1e-7)
    np.testing.assert_allclose(load_audio(torch.from_numpy(pcm32)), [0, 0.5, -1, 1], atol=1e-7)


def test_two_dimensional_inputs_are_downmixed(speech):
    left, right = speech[:16000], 0.5 * speech[:16000]
    mean = (left + right) / 2
    np.testing.assert_allclose(load_audio(np.stack([left, right])), mean, atol=1e-7)          # [channels, samples]
    np.testing.assert_allclose(load_audio(np.stack([left, right], axis=1)), mean, atol=1e-7)  # [samples, channels]
    np.testing.assert_allclose(load_audio(torch.from_numpy(np.stack([left, right]))), mean, atol=1e-7)
    np.testing.assert_array_equal(load_audio(left[None, :]), left)
    np.testing.assert_array_equal(load_audio(left[:, None]), left)
    pcm = (np.stack([left, left]) * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm), pcm[0] / 32768.0, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensor_input(speech):
    np.testing.assert_array_equal(load_audio(torch.from_numpy(speech).cuda()), speech)


# ------------------------------------------------------------------------------------------------ errors

def test_audio_load_error_is_a_value_error():
    assert issubclass(AudioLoadError, ValueError) and issubclass(AudioLoadError, FastWhisperError)


def test_missing_file(tmp_path):
    with pytest.raises(AudioLoadError, match=r"not found.*nope\.wav"):
        load_audio(tmp_path / "nope.wav")


def test_directory(tmp_path):
    with pytest.raises(AudioLoadError, match="is a directory"):
        load_audio(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    with pytest.raises(AudioLoadError, match=r"empty\.flac.*empty \(0 bytes\)"):
        load_audio(path)


def test_empty_path():
    with pytest.raises(AudioLoadError, match="empty audio file path"):
        load_audio("")


def test_file_with_no_samples(tmp_path):
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 16000)
    assert path.stat().st_size > 0
    with pytest.raises(AudioLoadError, match=r"nothing\.wav.*no audio samples"):
        load_audio(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_file_with_nan_or_inf(tmp_path, value):
    samples = np.zeros(1600, dtype=np.float32)
    samples[100] = value
    path = tmp_path / "bad.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match=r"bad\.wav.*NaN or infinite"):
        load_audio(path)


@pytest.mark.parametrize("name", ["corrupt.wav", "corrupt.flac", "corrupt.ogg", "corrupt.bin"])
@pytest.mark.parametrize("ffmpeg", ["with_ffmpeg", "without_ffmpeg"])
def test_corrupt_file(tmp_path, request, name, ffmpeg):
    if ffmpeg == "with_ffmpeg" and not HAS_FFMPEG:
        pytest.skip("ffmpeg is not installed")
    if ffmpeg == "without_ffmpeg":
        request.getfixturevalue("no_ffmpeg")
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(2).bytes(20000))
    expected = "corrupt|needs ffmpeg" if name.endswith(".bin") and ffmpeg == "without_ffmpeg" else "corrupt"
    with pytest.raises(AudioLoadError, match=rf"{re.escape(name)}.*({expected})"):
        load_audio(path)


def test_truncated_flac(tmp_path, speech):
    good = tmp_path / "good.flac"
    sf.write(good, speech, 16000, subtype="PCM_16")
    path = tmp_path / "truncated.flac"
    path.write_bytes(good.read_bytes()[:30])  # header cut short
    with pytest.raises(AudioLoadError, match=r"truncated\.flac"):
        load_audio(path)


# ---- corrupt and truncated files: an error, never a silent partial decode (issue: the ffmpeg fallback decoded
# the first seconds of a FLAC that libsndfile had found corrupt)

@pytest.fixture(scope="module")
def sample_bytes() -> bytes:
    return (SAMPLES_DIR / "librivox_sense_and_sensibility_0870.flac").read_bytes()


@pytest.fixture
def partial_ffmpeg(monkeypatch):
    """An ffmpeg that 'decodes' 3 s of any file and succeeds, as a real one does with a broken FLAC without
    -xerror; records its calls."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, np.zeros(3 * SAMPLE_RATE, np.int16).tobytes(), b"")

    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/ffmpeg" if name == "ffmpeg" else None)
    monkeypatch.setattr(subprocess, "run", fake_run)
    return calls


@pytest.mark.parametrize("damage", ["cut at 30 %", "cut at 90 %", "bytes overwritten in the middle"])
def test_damaged_flac_is_an_error_not_a_partial_decode(tmp_path, sample_bytes, partial_ffmpeg, damage):
    data = bytearray(sample_bytes)
    if damage.startswith("cut"):
        data = data[: len(data) * int(damage.split()[2]) // 100]
    else:
        middle = len(data) // 2
        data[middle:middle + 2000] = bytes((b * 7 + 13) & 255 for b in data[middle:middle + 2000])
    path = tmp_path / "damaged.flac"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioLoadError, match=r"damaged\.flac.*corrupt or truncated.*libsndfile says: .*lost sync"):
        load_audio(path)
    assert partial_ffmpeg == []  # libsndfile read the header: ffmpeg would only decode part of the file


def _truncated_copy(tmp_path, speech, fmt, subtype, ext, keep=0.5):
    whole = tmp_path / f"whole.{ext}"
    sf.write(whole, np.tile(speech, 2), SAMPLE_RATE, format=fmt, subtype=subtype)
    data = whole.read_bytes()
    path = tmp_path / f"truncated.{ext}"
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("fmt, subtype, ext, reason", [
    ("WAV", "PCM_16", "wav", "data chunk promises"),
    ("WAV", "FLOAT", "wav", "data chunk promises"),
    ("AIFF", "PCM_16", "aiff", "SSND chunk promises"),
    ("OGG", "VORBIS", "ogg", "end-of-stream"),
    ("MP3", "MPEG_LAYER_III", "mp3", "header promises .* frames"),
])
def test_truncated_files_are_errors(tmp_path, speech, partial_ffmpeg, fmt, subtype, ext, reason):
    """libsndfile reads what is left of a truncated WAV, AIFF, Ogg or MP3 without an error; the header (or
    libsndfile's log of it) shows that audio is missing."""
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    path = _truncated_copy(tmp_path, speech, fmt, subtype, ext)
    with pytest.raises(AudioLoadError, match=rf"truncated\.{ext}.*corrupt or truncated.*{reason}"):
        load_audio(path)
    assert partial_ffmpeg == []


@pytest.mark.parametrize("fmt, subtype, ext", [("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac"),
                                               ("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")])
def test_whole_files_still_load(tmp_path, speech, fmt, subtype, ext):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    path = _truncated_copy(tmp_path, speech, fmt, subtype, ext, keep=1.0)
    assert abs(load_audio(path).size - 2 * speech.size) < 0.05 * SAMPLE_RATE


def test_streamed_wav_with_unset_sizes_loads(tmp_path, speech):
    """A WAV written to a pipe has its RIFF and data sizes left at 0xFFFFFFFF: not a truncated file."""
    path = tmp_path / "streamed.wav"
    sf.write(path, speech, SAMPLE_RATE, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"
    data[data.index(b"data") + 4: data.index(b"data") + 8] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(load_audio(path), speech)


def _ffmpeg_reply(monkeypatch, stderr: bytes, seconds: float, returncode: int = 0):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode, np.zeros(int(seconds * SAMPLE_RATE), np.int16).tobytes(),
                                           stderr)

    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/ffmpeg" if name == "ffmpeg" else None)
    monkeypatch.setattr(subprocess, "run", fake_run)
    return calls


def test_ffmpeg_decoding_less_than_the_header_promises_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "clip.m4a"
    path.write_bytes(bytes(1000))
    calls = _ffmpeg_reply(monkeypatch, b"Input #0, mov,mp4,m4a, from 'clip.m4a':\n  Duration: 00:00:07.10, start: "
                          b"0.000000, bitrate: 40 kb/s\n  Stream #0:0: Audio: aac, 16000 Hz, mono\n", 3.0)
    with pytest.raises(AudioLoadError, match=r"clip\.m4a.*corrupt or truncated.*promises 7\.10 s.*decoded 3\.00 s"):
        load_audio(path)
    assert "-xerror" in calls[0]  # a decoding error ends ffmpeg with a failure


@pytest.mark.parametrize("stderr", [
    b"  Duration: 00:00:03.02, start: 0.000000\n",  # within the slack of codec padding
    b"  Duration: 00:00:07.10\n  Stream #0:0: Video: h264\n  Stream #0:1: Audio: aac\n",  # a video's length
    b"Estimating duration from bitrate, this may be inaccurate\n  Duration: 00:00:07.10\n",
    b"  Duration: N/A, bitrate: N/A\n",
])
def test_ffmpeg_durations_that_are_no_promise(tmp_path, monkeypatch, stderr):
    path = tmp_path / "clip.webm"
    path.write_bytes(bytes(1000))
    _ffmpeg_reply(monkeypatch, stderr, 3.0)
    assert load_audio(path).size == 3 * SAMPLE_RATE


@requires_ffmpeg
@pytest.mark.parametrize("ext, codec", [(".m4a", ["-c:a", "aac"]), (".mka", ["-c:a", "flac"])])
def test_truncated_file_through_real_ffmpeg_is_an_error(tmp_path, speech, ext, codec):
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.tile(speech, 3), 16000, subtype="PCM_16")
    whole = tmp_path / f"whole{ext}"
    made = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), *codec, str(whole)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"this ffmpeg cannot encode {ext}: {made.stderr.decode()[-200:]}")
    assert abs(load_audio(whole).size - 3 * speech.size) < 0.1 * SAMPLE_RATE
    data = whole.read_bytes()
    path = tmp_path / f"truncated{ext}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioLoadError, match=rf"truncated{re.escape(ext)}.*(corrupt|ffmpeg failed)"):
        load_audio(path)


def test_missing_ffmpeg_is_named(tmp_path, no_ffmpeg):
    path = tmp_path / "speech.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(2000))
    with pytest.raises(AudioLoadError, match=r"speech\.m4a.*needs ffmpeg.*ffmpeg is not installed"):
        load_audio(path)
    fake_mp3 = tmp_path / "song.mp3"
    fake_mp3.write_bytes(b"ID3" + bytes(100) + b"not really an mp3" * 50)
    with pytest.raises(AudioLoadError, match=r"song\.mp3.*needs ffmpeg.*not installed"):
        load_audio(fake_mp3)


def test_libsndfile_formats_need_no_ffmpeg(tmp_path, no_ffmpeg, speech):
    for name, kwargs in (("a.wav", {}), ("a.flac", {}), ("a.ogg", {"format": "OGG", "subtype": "VORBIS"})):
        sf.write(tmp_path / name, speech, 16000, **kwargs)
        assert correlation(load_audio(tmp_path / name), speech) > 0.95
    assert load_audio(SAMPLES_DIR / MANIFEST[0]["file"]).size == speech.size


def test_ffmpeg_timeout_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "slow.m4a"
    path.write_bytes(bytes(3_000_000))
    seen = {}

    def fake_run(cmd, **kwargs):
        seen.update(kwargs, cmd=cmd)
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/ffmpeg" if name == "ffmpeg" else None)
    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(AudioLoadError, match=r"ffmpeg timed out.*slow\.m4a"):
        load_audio(path)
    assert seen["timeout"] >= 60 and seen["timeout"] > audio_mod._ffmpeg_timeout(0)  # grows with size
    assert seen["stdin"] == subprocess.DEVNULL and "-nostdin" in seen["cmd"] and "16000" in seen["cmd"]


@pytest.mark.parametrize("returncode, stdout, message", [
    (1, b"", r"clip\.m4a.*ffmpeg failed: .*moov atom not found"),
    (0, b"", r"clip\.m4a.*no audio samples"),
])
def test_ffmpeg_failure_or_empty_output_is_an_error(tmp_path, monkeypatch, returncode, stdout, message):
    path = tmp_path / "clip.m4a"
    path.write_bytes(bytes(1000))
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/ffmpeg")
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, returncode, stdout, b"[mov,mp4] moov atom not found\nclip.m4a: Invalid data found"))
    with pytest.raises(AudioLoadError, match=message):
        load_audio(path)


@pytest.mark.parametrize("source, message", [
    (np.zeros(0, dtype=np.float32), "empty"),
    (np.zeros((2, 0), dtype=np.float32), "empty"),
    (torch.zeros(0), "empty"),
    (np.array([0.0, np.nan], dtype=np.float32), "NaN or infinite"),
    (torch.tensor([0.0, float("inf")]), "NaN or infinite"),
    (np.array([0.0, -np.inf]), "NaN or infinite"),
    (np.zeros(10, dtype=np.complex64), "unsupported array dtype complex64"),
    (torch.zeros(10, dtype=torch.complex64), "unsupported tensor dtype"),
    (np.array([0.1, 0.2], dtype=object), "unsupported array dtype object"),
    (np.zeros(10, dtype=bool), "unsupported array dtype bool"),
    (torch.zeros(10, dtype=torch.bool), "unsupported tensor dtype"),
    (np.zeros(10, dtype=np.int64), "unsupported array dtype int64"),
    (np.zeros(10, dtype=np.uint8), "unsupported array dtype uint8"),
    (np.array(0.5, dtype=np.float32), "must be 1-D"),
    (np.zeros((2, 3, 1600), dtype=np.float32), "must be 1-D.*shape \\(2, 3, 1600\\)"),
    (np.zeros((16, 1600), dtype=np.float32), "ambiguous 2-D"),
    (np.zeros((4, 4), dtype=np.float32), "ambiguous 2-D"),
    ([0.0, 0.1], "unsupported audio source of type list"),
    (b"RIFF....WAVE", "unsupported audio source of type bytes"),
    (None, "unsupported audio source of type NoneType"),
    (16000, "unsupported audio source of type int"),
])
def test_bad_in_memory_sources(source, message):
    with pytest.raises(AudioLoadError, match=message):
        load_audio(source)


@pytest.mark.parametrize("sr", [0, -16000, 16000.0, True, "16000"])
def test_bad_sample_rate(sr):
    with pytest.raises(AudioLoadError, match="sample rate must be a positive integer"):
        load_audio(np.zeros(100, dtype=np.float32), sr=sr)


# ----------------------------------------------------------------------------------- real ffmpeg decoding

@requires_ffmpeg
@pytest.mark.parametrize("ext, rate, codec", [(".m4a", "44100", ["-c:a", "aac", "-b:a", "128k"]),
                                              (".mp3", "44100", ["-c:a", "libmp3lame", "-b:a", "128k"]),
                                              (".opus", "48000", ["-c:a", "libopus", "-b:a", "64k"])])
def test_compressed_formats_decode_like_the_original(tmp_path, speech, ext, rate, codec):
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech, 16000, subtype="PCM_16")
    out = tmp_path / f"speech{ext}"
    made = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-ar", rate,
                           *codec, str(out)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"this ffmpeg cannot encode {ext}: {made.stderr.decode()[-200:]}")
    loaded = load_audio(out)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(len(loaded) - len(speech)) < 0.1 * SAMPLE_RATE
    score = best_lag_correlation(loaded, speech)
    print(f"{ext}: correlation {score:.4f}")
    assert score > 0.95


@requires_ffmpeg
def test_m4a_goes_through_ffmpeg(tmp_path, speech, monkeypatch):
    out = tmp_path / "speech.m4a"
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech, 16000)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", str(out)],
                   check=True)
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or real_run(cmd, **kw))
    assert load_audio(out).size > 0
    assert len(calls) == 1 and Path(calls[0][0]).name == "ffmpeg"
