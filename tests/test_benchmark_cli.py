"""benchmarks/run.py, the benchmark CLI: a small CPU run end to end (random weights of tiny's dims,
a few tokens, one timed run), its JSON schema, markdown and PNG, a deliberately broken implementation
recorded as a failure without a time, and (with the tiny.en weights package installed) a real-weight
transcribe() row whose text equals openai-whisper's. Plus in-process checks of the row runner."""

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
HAS_TINY_EN = all(importlib.util.find_spec(m) for m in PACKAGE_MODULES["tiny.en"])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def impls():
    names = ["openai-whisper", "fastwhisper", "fastwhisper-hybrid", "fastwhisper-cpp"]
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
    sys.path.insert(0, str(BENCH_DIR))
    import run

    return run


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


def _ncu_rows(kernel_id, name, grid, us, dram_bytes, pct):
    """The three metric rows ncu --csv writes for one kernel (values as ncu prints them, with thousands commas)."""
    return _ncu_metric_rows(kernel_id, name, grid, [
        ("gpu__time_duration.sum", "ns", f"{int(us * 1000):,}"), ("dram__bytes_read.sum", "byte", f"{dram_bytes:,}"),
        ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "%", f"{pct}")])


def _ncu_metric_rows(kernel_id, name, grid, metrics):
    """ncu --csv's rows for one kernel: one per (metric, unit, value as ncu prints it)."""
    return [f'"{kernel_id}","7","python3","host","{name}","1","7","(512, 1, 1)","{grid}","0","9.0",'
            f'"Command line profiler metrics","{metric}","{unit}","{value}"' for metric, unit, value in metrics]


def test_ncu_summary_groups_kernels_by_name_grid_and_bytes(tmp_path):
    """benchmarks/ncu_decoder_step.py --summarize on a hand-written ncu CSV: two linear kernels of one shape
    merge into one row (calls, total and mean time, bytes per call, GB/s), a third with other bytes and the
    attention kernel keep their own rows, in first-seen order."""
    lin = "void fastwhisper::<unnamed>::decoder_linear_kernel<c10::Half, 1>(const T1 *, long)"  # as ncu names it
    lines = ["==PROF== Connected to process 7", '"ID","Process ID","Process Name","Host Name","Kernel Name","Context",'
             '"Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"']
    lines += _ncu_rows(0, lin, "(128, 1, 1)", 8.0, 3_300_000, 12.0)
    lines += _ncu_rows(1, "void fastwhisper::<unnamed>::decoder_self_attention_kernel<c10::Half>(long)",
                       "(1, 20, 1)", 6.5, 50_000, 0.2)
    lines += _ncu_rows(2, lin, "(128, 1, 1)", 6.0, 3_340_000, 14.0)
    lines += _ncu_rows(3, lin, "(128, 1, 1)", 12.0, 13_100_000, 30.0)
    csv_path = tmp_path / "step.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "ncu_decoder_step.py"), "--summarize", str(csv_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("4 kernels, 32.5 us in all")
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == 3
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert cells[0][0] == "`decoder_linear_kernel<c10::Half, 1>`" and cells[0][1] == "(128, 1, 1)"
    assert cells[0][2:] == ["2", "14.0", "7.00", "3.32", "474", "13.0"]  # (3.30 + 3.34) MB / 14 us
    assert cells[1][0] == "`decoder_self_attention_kernel<c10::Half>`" and cells[1][2] == "1"
    assert cells[2][2:5] == ["1", "12.0", "12.00"] and cells[2][5] == "13.10"


def test_ncu_encoder_summary_ranks_kernels_and_rates(tmp_path):
    """benchmarks/ncu_encoder.py --summarize on a hand-written ncu CSV of a tiny encoder call: kernels grouped by
    name and grid, the slowest group first, each with its share of the sum, its tensor TFLOP/s (ncu's op count
    over its time) and its percentages averaged over its kernels' time; a metric ncu reports as n/a is left out."""
    gemm, norm = "void cutlass::device_kernel<Gemm>(Params)", "void fastwhisper::<unnamed>::layer_norm_kernel<c10::Half>(long)"

    def rows(i, name, us, ops, tensor_pct, dram_pct):
        return _ncu_metric_rows(i, name, "(66, 1, 1)", [
            ("gpu__time_duration.sum", "ns", f"{int(us * 1000):,}"), ("sm__ops_path_tensor_src_fp16_dst_fp32.sum", "", ops),
            ("sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_elapsed", "%", tensor_pct),
            ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "%", dram_pct)])

    lines = ['"ID","Process ID","Process Name","Host Name","Kernel Name","Context",'
             '"Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"']
    lines += rows(0, norm, 4.0, "0", "2", "40")
    lines += rows(1, gemm, 10.0, f"{5_000_000_000:,}", "60", "20")
    lines += rows(2, gemm, 30.0, f"{15_000_000_000:,}", "80", "10")
    lines += rows(3, norm, 6.0, "n/a", "n/a", "60")
    csv_path = tmp_path / "enc.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "ncu_encoder.py"), "tiny", "--batch", "2", "--summarize",
                           str(csv_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("4 kernels, 50.0 us in all for 2 window(s), 25.0 us per window"), proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1:-1] == [" kernel ", " grid ", " calls ", " us ", " us/call ", " share % ",
                                         " tensor TFLOP/s ", " tensor pipe % ", " DRAM % "]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in table[2:]]
    assert [c[0] for c in cells] == ["`cutlass::device_kernel<Gemm>`", "`layer_norm_kernel<c10::Half>`"]
    # 20e9 ops / 40 us; (60 x 10 + 80 x 30) / 40; (20 x 10 + 10 x 30) / 40
    assert cells[0][2:] == ["2", "40.0", "20.00", "80.0", "500", "75.0", "12.5"]
    # tensor pipe: the one kernel that has it (n/a in the other); DRAM (40 x 4 + 60 x 6) / 10
    assert cells[1][2:] == ["2", "10.0", "5.00", "20.0", "", "2.0", "52.0"]


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
