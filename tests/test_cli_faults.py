"""The command line under faults: a bad output directory, a writer that fails, Ctrl-C.

Found by a probe: a bad --output_dir printed a raw traceback, a read-only one was found only after every
file was transcribed, and Ctrl-C printed a traceback (and waited for the window being decoded).
"""

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import fastwhisper
from conftest import TESTS_DIR, FakeModel, error_lines, run_cli

cli_main = importlib.import_module("fastwhisper.cli.main")  # the module (fastwhisper.cli.main is the function)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def fake_model(monkeypatch):
    model = FakeModel()
    model.loads = []

    def load_model(name, device=None, dtype=None, download_root=None):
        model.loads.append(name)
        return model

    monkeypatch.setattr(fastwhisper, "load_model", load_model)
    return model


def _run(*argv):
    try:
        return run_cli(*argv)
    except BaseException as exc:  # noqa: B902 (a KeyboardInterrupt escaping main is the failure tested for)
        pytest.fail(f"{type(exc).__name__} escaped main: {exc!r}")


def _assert_usage_error(status, err, *words):
    assert status == 2, err
    [line] = error_lines(err)
    assert "--output_dir" in line and all(word in line for word in words), line
    assert "Traceback" not in err


# ---- the output directory, checked before the model is loaded

def test_output_dir_that_is_a_file(fake_model, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    status, out, err = _run("a.wav", "--device", "cpu", "--output_dir", target)
    _assert_usage_error(status, err, "not a directory")
    assert fake_model.loads == [] and fake_model.calls == []


def test_output_dir_that_cannot_be_made(fake_model, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    status, out, err = _run("a.wav", "--device", "cpu", "--output_dir", blocker / "sub" / "dir")
    _assert_usage_error(status, err, "cannot be made")
    assert fake_model.loads == [] and fake_model.calls == []


def test_unwritable_output_dir_is_found_before_transcribing(fake_model, tmp_path, monkeypatch):
    """Root writes anywhere, so the refusal is simulated where the probe creates its file."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli_main.tempfile, "mkstemp", refuse)
    status, out, err = _run("a.wav", "b.wav", "--device", "cpu", "--output_dir", out_dir)
    _assert_usage_error(status, err, "cannot be written", "Permission denied")
    assert fake_model.calls == []


@pytest.mark.skipif(IS_ROOT, reason="permission bits do not stop root")
def test_read_only_output_dir(fake_model, tmp_path):
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    out_dir.chmod(0o555)
    try:
        status, out, err = _run("a.wav", "--device", "cpu", "--output_dir", out_dir)
    finally:
        out_dir.chmod(0o755)
    _assert_usage_error(status, err, "cannot be written")
    assert fake_model.calls == []


def test_probe_leaves_nothing_behind(fake_model, tmp_path):
    out_dir = tmp_path / "new" / "dir"
    status, out, err = _run("a.wav", "--device", "cpu", "--output_dir", out_dir, "--output_format", "txt")
    assert status == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.txt"]


# ---- atomic outputs

class BrokenSegmentModel(FakeModel):
    """A result whose second segment makes openai-whisper's txt writer fail after the first line."""

    def transcribe(self, audio, **options):
        result = super().transcribe(audio, **options)
        result["segments"].append(dict(result["segments"][0], id=1, text=None))
        return result


def test_a_failing_writer_leaves_the_old_file_whole(monkeypatch, tmp_path):
    monkeypatch.setattr(fastwhisper, "load_model", lambda *a, **k: BrokenSegmentModel())
    (tmp_path / "a.txt").write_text("the previous transcript\n")
    status, out, err = _run("a.wav", "--device", "cpu", "--output_dir", tmp_path, "--output_format", "txt")
    assert status == 1
    [line] = error_lines(err)
    assert "a.wav" in line and "cannot write" in line
    assert (tmp_path / "a.txt").read_text() == "the previous transcript\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary file left


def test_outputs_are_renamed_into_place_with_the_usual_mode(fake_model, tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(cli_main.os, "replace", lambda src, dst: replaced.append((src, dst)) or real_replace(src, dst))
    status, out, err = _run("a.wav", "--device", "cpu", "--output_dir", tmp_path)
    assert status == 0, err
    names = sorted(os.path.basename(dst) for _, dst in replaced)
    assert names == ["a.json", "a.srt", "a.tsv", "a.txt", "a.vtt"]
    assert all(os.path.dirname(src) == os.path.dirname(dst) == str(tmp_path) for src, dst in replaced)
    umask = os.umask(0)
    os.umask(umask)
    assert all((tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask for name in names)
    assert "Hello there." in (tmp_path / "a.txt").read_text()


# ---- Ctrl-C

class InterruptedModel(FakeModel):
    def transcribe(self, audio, **options):
        raise KeyboardInterrupt


def test_ctrl_c_is_a_clean_exit_130(monkeypatch, tmp_path):
    monkeypatch.setattr(fastwhisper, "load_model", lambda *a, **k: InterruptedModel())
    previous = signal.getsignal(signal.SIGINT)
    status, out, err = _run("a.wav", "--device", "cpu", "--output_dir", tmp_path)
    assert status == 130
    assert error_lines(err) == ["fastwhisper: error: interrupted"]
    assert "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is previous  # main puts the handler back


def _start(code: str, tmp_path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{marker!r} never came; stderr: {seen}")
        seen += line
    return seen


def test_second_ctrl_c_exits_at_once(tmp_path):
    """The first Ctrl-C is swallowed by a model that will not stop; the second ends the process."""
    proc = _start("""
        import sys, time
        import fastwhisper
        from conftest import FakeModel
        from fastwhisper import cli

        class Stubborn(FakeModel):
            def transcribe(self, audio, **options):
                while True:
                    try:
                        sys.stderr.write("BUSY\\n"); sys.stderr.flush()
                        time.sleep(60)
                    except KeyboardInterrupt:
                        sys.stderr.write("SWALLOWED\\n"); sys.stderr.flush()

        fastwhisper.load_model = lambda *a, **k: Stubborn()
        sys.exit(cli.main(["a.wav", "--device", "cpu", "--output_dir", "out"]))
    """, tmp_path)
    _wait_for(proc, "BUSY")
    proc.send_signal(signal.SIGINT)
    _wait_for(proc, "SWALLOWED")
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=10)
    err = proc.stderr.read()
    assert code == 130 and time.monotonic() - start < 5
    assert "interrupted" in err and "Traceback" not in err


def test_ctrl_c_does_not_wait_for_the_window_being_decoded(tmp_path):
    """With the engine, the main thread leaves at once; the window being decoded (here: a decode that takes a
    minute) is dropped with the cancelled job."""
    model_path = tmp_path / "small.pt"
    audio = tmp_path / "noise.wav"
    proc = _start(f"""
        import sys, time
        import numpy as np, soundfile as sf
        import whisper.decoding
        from whisper.model import ModelDimensions
        import fastwhisper
        from conftest import random_model
        from fastwhisper import cli
        from fastwhisper.loading import save_checkpoint

        save_checkpoint(random_model(ModelDimensions(80, 1500, 64, 2, 1, 51864, 448, 64, 2, 1)), {str(model_path)!r})
        sf.write({str(audio)!r}, np.random.default_rng(0).normal(0, 0.1, 16000 * 5), 16000)

        def slow_loop(self, *args, **kwargs):
            sys.stderr.write("DECODING\\n"); sys.stderr.flush()
            time.sleep(60)

        whisper.decoding.DecodingTask._main_loop = slow_loop
        sys.exit(cli.main([{str(audio)!r}, "--model", {str(model_path)!r}, "--device", "cpu",
                           "--output_dir", "out"]))
    """, tmp_path)
    _wait_for(proc, "DECODING")
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    elapsed = time.monotonic() - start
    err = proc.stderr.read()
    assert code == 130, err
    assert elapsed < 10, f"took {elapsed:.1f} s to exit"
    assert "interrupted" in err and "Traceback" not in err
