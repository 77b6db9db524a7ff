"""benchmarks/run.py, the benchmark CLI: a small CPU run end to end (random weights of tiny's dims,
a few tokens, one timed run), its JSON schema, markdown and PNG, a deliberately broken implementation
recorded as a failure without a time, (with the tiny.en weights package installed) a real-weight
transcribe() row whose text equals openai-whisper's, and faster-whisper's rows (or the reason they are not
available). Plus in-process checks of the row runner."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from real_models import PACKAGE_MODULES, SAMPLES_DIR

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
RUN = BENCH_DIR / "run.py"
COMMIT = "0123456789abcdef-test-commit"
STATUSES = {"ok", "failure", "not available", "skipped"}
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
HAS_CTRANSLATE2 = importlib.util.find_spec("ctranslate2") is not None
HAS_FASTER_WHISPER = HAS_CTRANSLATE2 and importlib.util.find_spec("faster_whisper") is not None
HAS_TINY_EN = all(importlib.util.find_spec(m) for m in PACKAGE_MODULES["tiny.en"])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def impls():
    names = ["openai-whisper", "fastwhisper", "fastwhisper-hybrid", "fastwhisper-cpp", "faster-whisper",
             "faster-whisper-int8"]
    return names + (["hf-sdpa"] if HAS_TRANSFORMERS else [])


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One quick CPU run; fastwhisper-hybrid made to return empty output (the --inject-failure hook)."""
    out = tmp_path_factory.mktemp("bench")
    argv = [sys.executable, str(RUN), "--device", "cpu", "--models", "tiny", "--quick",
            "--sections", "encoder,decoder,longform", "--impls", ",".join(impls()),
            "--batch-sizes", "1", "--encoder-repeats", "1", "--warmup", "1", "--repeats", "1",
            "--tokens", "2", "--check-tokens", "2", "--longform-seconds", "30", "--longform-tokens", "2",
            "--longform-batch", "2", "--longform-rows",
            "single:openai-whisper,fastwhisper-hybrid;batched:fastwhisper-cpp",
            "--real-audio", str(SAMPLES_DIR / "pocketsphinx_goforward.flac"),
            "--inject-failure", "fastwhisper-hybrid=empty", "--threads", "1",
            "--out-dir", str(out), "--name", "smoke", "--commit", COMMIT]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "smoke.json").read_text())
    return out, data, proc


def rows_where(data, **fields):
    return [r for r in data["rows"] if all(r.get(k) == v for k, v in fields.items())]


def test_json_schema(cpu_run):
    _, data, _ = cpu_run
    meta, rows = data["meta"], data["rows"]
    assert meta["commit"] == COMMIT
    assert meta["ceilings"]["gemm_tflops"] > 0 and meta["ceilings"]["copy_gb_per_s"] > 0
    assert meta["png"] == "smoke.png"
    assert {r["section"] for r in rows} == {"encoder", "decoder", "longform"}
    for r in rows:
        assert r["status"] in STATUSES, r
        assert r["device"] == "cpu" and r["model"] == "tiny"
        if r["status"] == "ok":
            assert r["value"] > 0 and r["median_ms"] > 0 and len(r["times_ms"]) >= 1, r
            assert r["floor"] is not None and r["floor"] > 0, r  # the CPU's ceilings define every floor
            assert r["x_floor"] > 0, r
        else:
            assert r["error"], r
            for key in ("value", "median_ms", "times_ms", "x_floor", "speedup_vs_openai"):
                assert r.get(key) is None, (key, r)


def test_every_section_timed(cpu_run):
    _, data, _ = cpu_run
    for impl in ("openai-whisper", "fastwhisper"):
        assert [r["status"] for r in rows_where(data, section="encoder", impl=impl)] == ["ok"]
    for impl in ("openai-whisper", "fastwhisper-cpp") + (("hf-sdpa",) if HAS_TRANSFORMERS else ()):
        decoder = rows_where(data, section="decoder", impl=impl)
        assert sorted(r["mode"] for r in decoder) == ["beam5", "greedy"]
        assert all(r["status"] == "ok" and r["tokens"] == 2 for r in decoder), decoder
    cpp = rows_where(data, section="decoder", impl="fastwhisper-cpp")
    assert all(r["check"]["fp32_tokens_equal_to_openai"] for r in cpp)
    assert all(r["speedup_vs_openai"] > 0 for r in cpp)
    random_long = rows_where(data, section="longform", weights="random")
    assert rows_where(data, section="longform", weights="random", impl="openai-whisper", mode="single")[0]["status"] == "ok"
    batched = rows_where(data, section="longform", weights="random", impl="fastwhisper-cpp", mode="batched")[0]
    assert batched["status"] == "ok" and batched["audio_s"] == 30 and batched["tokens_per_window"] == 2
    assert "fixed" in batched["budget"]
    assert rows_where(data, section="longform", weights="random", impl="openai-whisper",
                      mode="batched")[0]["status"] == "not available"
    assert all(r["metric"] == "RTFx" for r in random_long)


def test_faster_whisper_rows(cpu_run):
    """CTranslate2 rows beside the others: random weights written by fastwhisper's CTranslate2 writer (encoder
    checked against the fp32 reference, fp32 greedy tokens equal to openai-whisper's), and real weights transcribed
    by faster-whisper in float32 and int8 with their text compared; "not available" with the reason without it."""
    _, data, _ = cpu_run
    random_rows = [r for r in rows_where(data, impl="faster-whisper") if r["weights"] == "random"]
    assert {r["section"] for r in random_rows} == {"encoder", "decoder"}
    if not HAS_CTRANSLATE2:
        assert all(r["status"] == "not available" and "not installed" in r["error"] for r in random_rows), random_rows
    else:
        encoder = rows_where(data, section="encoder", impl="faster-whisper")
        assert [r["status"] for r in encoder] == ["ok"] and encoder[0]["check"]["rel_err"] <= 1e-3, encoder
        decoder = rows_where(data, section="decoder", impl="faster-whisper")
        assert sorted(r["mode"] for r in decoder) == ["beam5", "greedy"]
        assert all(r["status"] == "ok" and r["tokens"] == 2 and r["value"] > 0 for r in decoder), decoder
        greedy = rows_where(data, section="decoder", impl="faster-whisper", mode="greedy")[0]
        assert greedy["check"]["tokens_equal_to_openai_fp32"] == 2
        assert all(r["speedup_vs_openai"] > 0 for r in encoder + decoder)
    if not HAS_TINY_EN:
        return
    for impl, compute_type in (("faster-whisper", "float32"), ("faster-whisper-int8", "int8")):
        row = rows_where(data, section="longform", weights="tiny.en", impl=impl)[0]
        if not HAS_FASTER_WHISPER:
            assert row["status"] == "not available" and "faster-whisper" in row["error"], row
            continue
        assert row["status"] == "ok" and row["compute_type"] == compute_type, row
        assert "forward" in row["text"].lower() and row["check"]["text"] in ("identical", "differs")
        assert row["tokens"] > 0 and row["floor"] > 0


def test_broken_implementation_is_a_failure_without_time(cpu_run):
    _, data, _ = cpu_run
    broken = rows_where(data, impl="fastwhisper-hybrid")
    assert broken and all(r["status"] == "failure" for r in broken if r["mode"] == "single"), broken
    for r in broken:
        if r["status"] == "failure":
            assert "wrong output" in r["error"]
            assert r["value"] is None and r["times_ms"] is None


@pytest.mark.skipif(not HAS_TINY_EN, reason="weights package for tiny.en is not installed")
def test_real_weights_text_identical_to_openai(cpu_run):
    _, data, _ = cpu_run
    openai = rows_where(data, weights="tiny.en", impl="openai-whisper", mode="single")[0]
    cpp = rows_where(data, weights="tiny.en", impl="fastwhisper-cpp", mode="single")[0]
    assert openai["status"] == "ok" and cpp["status"] == "ok", (openai, cpp)
    assert cpp["check"]["text"] == "identical" and cpp["text"] == openai["text"]
    assert "forward" in openai["text"].lower()
    assert cpp["floor"] > 0 and cpp["tokens"] > 0
    hybrid = rows_where(data, weights="tiny.en", impl="fastwhisper-hybrid", mode="single")[0]
    assert hybrid["status"] == "failure"  # injected: empty transcript
    # batched: the clip without timestamps or carried text, against openai-whisper with the same options
    batched = rows_where(data, weights="tiny.en", impl="fastwhisper-cpp", mode="batched")[0]
    assert batched["status"] == "ok" and batched["check"]["text"] == "identical", batched
    assert batched["options"] == {"without_timestamps": True, "condition_on_previous_text": False}


def test_markdown_and_png(cpu_run, tmp_path):
    out, data, proc = cpu_run
    md = (out / "smoke.md").read_text()
    assert COMMIT in md and "### Encoder, ms per 30-s window" in md and "FIXED BUDGET of 2 tokens" in md
    assert "| FAIL |" in md and "### Failures" in md
    png = (out / "smoke.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    assert COMMIT.encode() in png  # in the PNG's text metadata
    # --render rewrites the .md and .png of a result file without measuring
    (tmp_path / "copy.json").write_text(json.dumps(data))
    subprocess.run([sys.executable, str(RUN), "--render", str(tmp_path / "copy.json")], check=True, timeout=300,
                   capture_output=True)
    assert (tmp_path / "copy.md").read_text().count("|") == md.count("|")
    assert (tmp_path / "copy.png").read_bytes().startswith(PNG_SIGNATURE)


# -- in process -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_module():
    """run.py with the names the tests use from its modules (rows, report)."""
    sys.path.insert(0, str(BENCH_DIR))
    import types

    import report
    import run
    from sections import rows

    return types.SimpleNamespace(**{**vars(rows), **vars(report), **vars(run)})


def test_runner_records_exceptions_and_wrong_outputs(run_module, tmp_path):
    run = run_module
    args = run.parse_args(["--device", "cpu", "--out-dir", str(tmp_path), "--inject-failure", "hf-sdpa=raise"])
    runner = run.Runner(args, {})

    def raises(row):
        row.update(value=1.0, median_ms=1.0, times_ms=[1.0])
        raise ValueError("boom")

    def wrong(row):
        row.update(value=1.0, times_ms=[1.0])
        raise run.WrongOutput("wrong output: empty transcript")

    def fine(row):
        row.update(value=2.0, median_ms=2.0, times_ms=[2.0])

    a = runner.run(run.new_row("encoder", "tiny", run.OPENAI, "cpu", batch=1), raises)
    b = runner.run(run.new_row("decoder", "tiny", run.CPP, "cpu", mode="greedy"), wrong)
    c = runner.run(run.new_row("decoder", "tiny", run.CPP, "cpu", mode="beam5"), fine)
    d = runner.run(run.new_row("decoder", "tiny", run.HF, "cpu", mode="beam5"), fine, "build failed: x")
    assert (a["status"], a["error"], a["value"], a["times_ms"]) == ("failure", "error: ValueError: boom", None, None)
    assert (b["status"], b["error"], b["value"]) == ("failure", "wrong output: empty transcript", None)
    assert (c["status"], c["value"]) == ("ok", 2.0)
    assert (d["status"], d["error"], d["value"]) == ("failure", "build failed: x", None)
    with pytest.raises(RuntimeError, match="injected failure"):
        runner.inject(run.HF, lambda: 1)()
    assert runner.inject(run.CPP, lambda: 1)() == 1


def test_emptied_outputs_and_slugs(run_module):
    import torch

    run = run_module
    assert run.emptied(torch.ones(2, 3, 4)).shape == (2, 3, 0)
    assert run.emptied({"text": "hi", "segments": [1], "language": "en"}) == {"text": "", "segments": [], "language": "en"}
    assert run.emptied([[1, 2], [3]]) == [[], []]
    assert run.name_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert run.name_slug("NVIDIA A100-SXM4-80GB") == "a100"
    assert run.name_slug("NVIDIA GeForce RTX 4090") == "rtx-4090"
    assert run.sig(1532.7) == "1533" and run.sig(0.01234) == "0.0123" and run.sig(24.19) == "24.2"


def test_table_cells_say_when_a_transcript_was_not_compared(run_module):
    """A time whose text differs from openai-whisper's, or was not compared (no openai-whisper row in the
    run), carries that word in the table; a failure shows no time."""
    cell = run_module.cell
    assert cell({"status": "ok", "value": 641.2, "check": {"text": "identical"}}) == "641"
    assert cell({"status": "ok", "value": 641.2, "check": {"text": "differs"}}) == "641 (differs)"
    assert cell({"status": "ok", "value": 641.2, "check": {"text": "unchecked"}}) == "641 (unchecked)"
    assert cell({"status": "failure", "value": None, "check": {}}) == "FAIL"


def test_table_title_takes_its_settings_from_a_measured_row(run_module):
    """A long-form table whose first row is an implementation without that mode (no token budget) still
    states the budget of the rows that were measured."""
    run = run_module
    absent = run.new_row("longform", "tiny", run.OPENAI, "cuda", mode="batched", batch=8)
    absent["status"] = "not available"
    measured = run.new_row("longform", "tiny", run.CPP, "cuda", mode="batched", batch=8, tokens_per_window=100)
    measured["status"] = "ok"
    (title, group), = run.table_groups([absent, measured])
    assert "FIXED BUDGET of 100 tokens" in title and group == [absent, measured]


def test_append_replaces_only_the_rows_this_run_measures(run_module, tmp_path):
    run = run_module
    gpu_run = run.Runner(run.parse_args(["--device", "cpu", "--sections", "cpu", "--models", "tiny,large-v3",
                                         "--out-dir", str(tmp_path)]), {})
    assert gpu_run.args.cpu_models == ["tiny"]
    assert gpu_run.planned(run.new_row("encoder", "tiny", run.OPENAI, "cpu"))
    assert not gpu_run.planned(run.new_row("encoder", "large-v3", run.OPENAI, "cpu"))
    encoder_only = run.Runner(run.parse_args(["--device", "cpu", "--sections", "encoder", "--models", "tiny",
                                              "--out-dir", str(tmp_path)]), {})
    assert encoder_only.planned(run.new_row("encoder", "tiny", run.FAST, "cpu"))
    assert not encoder_only.planned(run.new_row("decoder", "tiny", run.CPP, "cpu"))
    real_only = run.Runner(run.parse_args(["--device", "cpu", "--sections", "longform", "--real-weights-only",
                                           "--out-dir", str(tmp_path)]), {})
    assert real_only.planned(run.new_row("longform", "tiny", run.CPP, "cpu", weights="tiny.en"))
    assert not real_only.planned(run.new_row("longform", "tiny", run.CPP, "cpu"))


def test_benchmarks_record_the_commit_they_are_given():
    """benchmarks/common.py's git_commit: $FASTWHISPER_COMMIT where set (scripts/gpu_run.sh sets it from its
    argument, since the GPU machine's .git is the session's first commit), else this checkout's HEAD."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import common; print(common.git_commit())"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k != "FASTWHISPER_COMMIT"}
    plain = subprocess.run([sys.executable, "-c", code, str(BENCH_DIR)], capture_output=True, text=True, env=env)
    given = subprocess.run([sys.executable, "-c", code, str(BENCH_DIR)], capture_output=True, text=True,
                           env=dict(env, FASTWHISPER_COMMIT="c0ffee1"))
    assert given.returncode == 0 and given.stdout.strip() == "c0ffee1", given.stderr[-2000:]
    assert plain.returncode == 0 and plain.stdout.strip() == (head or "unknown"), plain.stderr[-2000:]
    assert "export FASTWHISPER_COMMIT=$commit" in (BENCH_DIR.parent / "scripts" / "gpu_run.sh").read_text()


def test_faster_whisper_rows_say_why_when_it_is_missing(run_module, tmp_path, monkeypatch):
    from sections import ctranslate2_rows

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faster_whisper" else find_spec(name, *a))
    assert ctranslate2_rows.unavailable_reason("cpu") is None or not HAS_FASTER_WHISPER  # random rows: ctranslate2 only
    why = ctranslate2_rows.unavailable_reason("cpu", ("ctranslate2", "faster_whisper"))
    assert why.startswith("faster-whisper not installed") and "faster-whisper==1.2.1" in why
    run = run_module
    runner = run.Runner(run.parse_args(["--device", "cpu", "--out-dir", str(tmp_path)]), {})
    ctranslate2_rows.bench_real(runner, "tiny.en", None, "cpu", lambda impl: run.new_row("longform", "tiny", impl, "cpu"),
                                None, lambda: None, "en")
    assert [(r["impl"], r["status"], r["error"]) for r in runner.rows] == [
        ("faster-whisper", "not available", why), ("faster-whisper-int8", "not available", why)]
