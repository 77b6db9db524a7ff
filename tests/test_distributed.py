"""fastwhisper.distributed on a local Ray (2 CPUs) with real tiny.en weights: the outputs are those of
single-process transcribe(), a bad file fails alone, a re-run does nothing twice, and a worker killed mid-run
does not stop the job."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

ray = pytest.importorskip("ray", reason="the distributed extra (ray[data]) is not installed")

import fastwhisper  # noqa: E402
from fastwhisper.distributed import Manifest, transcribe_dataset  # noqa: E402
from real_models import SAMPLES_DIR, fast_model, require  # noqa: E402

SHORT = ["librivox_sense_and_sensibility_0870.flac", "librivox_sense_and_sensibility_0890.flac",
         "pocketsphinx_goforward.flac", "cards_005.flac"]
OPTIONS = dict(language="en", fp16=False)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    yield
    ray.shutdown()


def corpus(folder, copies=1):
    """The short English samples (each `copies` times, under new names) and one corrupt file."""
    folder.mkdir()
    paths = []
    for i in range(copies):
        for name in SHORT:
            target = folder / f"{i}_{name}"
            shutil.copy(SAMPLES_DIR / name, target)
            paths.append(str(target))
    bad = folder / "corrupt.flac"
    bad.write_bytes((SAMPLES_DIR / SHORT[0]).read_bytes()[:3000])  # a truncated FLAC
    return paths, str(bad)


@pytest.mark.real_weights
def test_outputs_equal_single_process_transcribe_bad_file_fails_alone_and_rerun_resumes(local_ray, tmp_path):
    require("tiny.en")
    paths, bad = corpus(tmp_path / "in")
    out = tmp_path / "out"
    summary = transcribe_dataset(paths + [bad], str(out), model="tiny.en", concurrency=2, files_per_batch=2,
                                 output_formats=("json", "txt"), **OPTIONS)
    assert summary["files"] == 5 and summary["done"] == 4 and summary["skipped"] == 0
    [(failed_path, error)] = summary["failed"]
    assert failed_path == bad and "AudioLoadError" in error
    durations = [fastwhisper.load_audio(p).size / 16000 for p in paths]
    assert abs(summary["audio_hours"] * 3600 - sum(durations)) < 0.01
    assert sum(w["files"] for w in summary["workers"].values()) == 5
    assert any(w["rtfx"] and w["rtfx"] > 0 for w in summary["workers"].values())

    model = fast_model("tiny.en")
    for path in paths:
        expected = fastwhisper.transcribe(model, path, **OPTIONS)
        name = os.path.splitext(os.path.basename(path))[0]
        written = json.loads((out / f"{name}.json").read_text())
        assert written["text"] == expected["text"]
        assert [s["tokens"] for s in written["segments"]] == [s["tokens"] for s in expected["segments"]]
        assert (out / f"{name}.txt").read_text().strip()
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]

    mtimes = {p: os.stat(out / p).st_mtime_ns for p in os.listdir(out) if p != "manifest.json"}
    again = transcribe_dataset(paths + [bad], str(out), model="tiny.en", concurrency=2, files_per_batch=2,
                               output_formats=("json", "txt"), **OPTIONS)
    assert again["skipped"] == 4 and again["done"] == 4 and len(again["failed"]) == 1  # only the bad one again
    assert {p: os.stat(out / p).st_mtime_ns for p in mtimes} == mtimes

    (out / "0_pocketsphinx_goforward.txt").unlink()  # one of its outputs is gone: that file runs again
    third = transcribe_dataset(paths, str(out), model="tiny.en", concurrency=1, files_per_batch=2,
                               output_formats=("json", "txt"), **OPTIONS)
    assert third["skipped"] == 3 and third["done"] == 4 and not third["failed"]
    manifest = Manifest.load(str(out))
    assert all(manifest.is_done(p, manifest.entries[os.path.abspath(p)]["sha256"]) for p in paths)


@pytest.mark.real_weights
def test_a_worker_killed_mid_run_does_not_stop_the_job(local_ray, tmp_path):
    require("tiny.en")
    paths, _ = corpus(tmp_path / "in", copies=3)
    killed = []

    def kill_one_worker(row):  # the actor that sent the first result, while it has files left to do
        if not killed:
            pid = int(row["worker"].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    summary = transcribe_dataset(paths, str(tmp_path / "out"), model="tiny.en", concurrency=2, files_per_batch=1,
                                 output_formats=("txt",), on_file=kill_one_worker, **OPTIONS)
    assert killed, "no worker was found to kill"
    assert summary["done"] == len(paths) and not summary["failed"]
    assert all((tmp_path / "out" / (os.path.splitext(os.path.basename(p))[0] + ".txt")).exists() for p in paths)


@pytest.mark.real_weights
def test_fastwhisper_batch_command(local_ray, tmp_path):
    require("tiny.en")
    paths, bad = corpus(tmp_path / "in")
    listing = tmp_path / "files.txt"
    listing.write_text("# inputs\n" + "\n".join(paths[:2] + [bad]) + "\n\n")
    out = tmp_path / "out"
    address = ray.get_runtime_context().gcs_address
    run = subprocess.run([sys.executable, "-m", "fastwhisper.distributed.cli", "--input_list", str(listing),
                          "--output_dir", str(out), "--model", "tiny.en", "--workers", "1", "--language", "en",
                          "--output_format", "txt", "--address", address], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "3 files: 2 done (0 skipped, done before), 1 failed" in run.stdout
    assert f"failed: {bad}: AudioLoadError" in run.stdout
    assert "RTFx" in run.stdout
    assert sorted(os.listdir(out)) == sorted([os.path.splitext(os.path.basename(p))[0] + ".txt" for p in paths[:2]]
                                             + ["manifest.json"])
    usage = subprocess.run([sys.executable, "-m", "fastwhisper.distributed.cli", "--input_list",
                            str(tmp_path / "missing.txt"), "--output_dir", str(out)], capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode == 2 and "--input_list" in usage.stderr


@pytest.mark.real_weights
def test_fastwhisper_batch_with_vad_writes_what_transcribe_with_vad_gives(local_ray, tmp_path):
    pytest.importorskip("silero_vad", reason="the vad extra is not installed")
    require("tiny.en")
    paths, _ = corpus(tmp_path / "in")
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(paths[:2]) + "\n")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "fastwhisper.distributed.cli", "--input_list", str(listing),
                          "--output_dir", str(out), "--model", "tiny.en", "--workers", "1", "--language", "en",
                          "--vad", "True", "--output_format", "json", "--address",
                          ray.get_runtime_context().gcs_address], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    model = fast_model("tiny.en")
    for path in paths[:2]:
        # the command's defaults are openai-whisper's CLI ones: beam search of 5, best_of 5
        expected = fastwhisper.transcribe(model, path, vad=True, beam_size=5, best_of=5, **OPTIONS)
        written = json.loads((out / (os.path.splitext(os.path.basename(path))[0] + ".json")).read_text())
        assert written["text"] == expected["text"]
        assert [(s["start"], s["end"]) for s in written["segments"]] == [(s["start"], s["end"])
                                                                        for s in expected["segments"]]
