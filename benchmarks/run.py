"""fastwhisper's benchmark CLI: openai-whisper, HF transformers (SDPA), fastwhisper hybrid and fastwhisper
cpp, and faster-whisper (CTranslate2), timed in one process on one device, with the floor beside every figure.

Implementations (rows' "impl")
------------------------------
  openai-whisper      whisper.model.Whisper, fp32 weights, fp16 activations on a GPU (as its users run it:
                      its Linear/Conv1d cast the weights on every call), fp32 on the CPU
  hf-sdpa             transformers' WhisperForConditionalGeneration, attn_implementation="sdpa", fp16
                      weights on a GPU (fp32 on the CPU); encoder = model.model.encoder, decoding =
                      GenerationMixin.generate (the loop WhisperForConditionalGeneration.generate runs
                      per 30-s segment) with the same initial tokens and suppressed tokens as openai-whisper
  fastwhisper         FastAudioEncoder (encoder rows; hybrid and cpp share it), fp32 weights, fp16 activations
  fastwhisper-hybrid  fastwhisper's encoder + openai-whisper's PyTorch decoder (decoder="torch")
  fastwhisper-cpp     fastwhisper's encoder + the C++ decoding loop (decoder="cpp")
  faster-whisper      CTranslate2 (faster-whisper's engine), float16 on a GPU, float32 on the CPU: random weights
                      written with fastwhisper.save_checkpoint(fmt="ctranslate2") and run by
                      ctranslate2.models.Whisper (encoder, decoder rows); real weights run by
                      faster_whisper.WhisperModel.transcribe (long-form rows). Optional: its rows are "not
                      available", with the reason, when faster-whisper / ctranslate2 are not installed.
  faster-whisper-int8 the same with int8 weights (CPU real-weight rows)

Sections (--sections)
---------------------
  encoder   ms per 30-s window at batch 1 and 8 (random weights of the real dims, log-mel-like input);
            checked against an fp32 reference (openai-whisper, TF32 off): relative error <= 5e-2.
  decoder   ms per token at batch 1, greedy and beam 5: one call decoding --tokens tokens with the
            end-of-text token suppressed (every implementation decodes the same count), divided by the
            count, so the once-per-window work is included. fastwhisper hybrid decodes with
            openai-whisper's decoder: its decoder figure is the openai-whisper row. Checked in fp32
            first: the C++ loop must give openai-whisper's tokens exactly (--check-tokens); HF's
            teacher-forced logits must match openai-whisper's (relative error <= 1e-3) and its first
            greedy token must be the same.
  longform  RTFx = audio seconds / wall seconds, end to end: audio decoding (fastwhisper.load_audio, for
            every implementation: openai-whisper's loader needs ffmpeg) and the log-mel are inside the
            timed region. Random weights: a FIXED TOKEN BUDGET of --longform-tokens tokens per 30-s
            window (EOT suppressed, greedy, no timestamps) over the bundled long clip tiled to
            --longform-seconds; "single" decodes one window at a time, "batched" encodes and decodes
            --longform-batch windows at a time. Each row first runs a warm-up over one batch of windows,
            then times a prefix of the audio whose length is set from the warm-up so one timed run
            takes about --longform-budget-s (at least one batch; the row records the audio seconds used).
            Rows (--longform-rows): single stream for openai-whisper, hybrid and cpp; batched for HF
            (as the Open ASR leaderboard runs it) and cpp; openai-whisper's batched row is "not
            available" (its transcribe() has no batching).
            Real weights (the sizes whose weights are installed: tiny.en, base): transcribe() of
            --real-audio (default: the bundled 73-s clip), greedy with temperature fallback, checked
            against openai-whisper's transcript with the same weights: identical text in fp32 (CPU);
            in fp16 (GPU) identical, or "differs" when openai-whisper's own fp16 text differs from its
            fp32 text too (a failure otherwise). Batched real-weight rows use fastwhisper's batched
            API when it exists (fastwhisper.transcribe_batch, or transcribe(batch_size=)) and are
            "not available" otherwise; openai-whisper has no batched long-form transcription. They
            transcribe the one clip with without_timestamps=True and condition_on_previous_text=False,
            so that its windows are decoded --longform-batch at a time, and are checked against
            openai-whisper's transcript with the same options (untimed), by the same rules.
  cpu       on a GPU run, CPU rows for tiny and base: openai-whisper vs fastwhisper, encoder at batch
            1, decoder greedy, and the real-weight long-form rows (faster-whisper float32 and int8 among them).
            With --device cpu, --sections cpu runs the same rows.

Every figure is the median of --repeats timed runs (--encoder-repeats for the encoder) after --warmup
untimed runs; CUDA events on a GPU, time.perf_counter on the CPU; CTranslate2 runs on a CUDA stream of
its own, so its rows use time.perf_counter between device-wide synchronizations; model building is
outside the timed region. A row whose output is wrong (empty, too few tokens, non-finite, an exception, or
differing from the reference) is a "failure" with its error and no time; a run never stops on one
bad row. Peak GPU memory = torch.cuda.max_memory_allocated over the row (reset at its start).

Floors (measured ceilings: matmul rate and copy bandwidth, fp16 on a GPU, fp32 on the CPU):
encoder = max(FLOPs / GEMM rate, (weights + input + output bytes) / copy bandwidth), per window;
decoder = (decoder weights + cross-attention K/V of every row) bytes per step / copy bandwidth, per
token; long-form RTFx ceiling = 30 s / (encoder floor per window + tokens per window x decoder floor
per step / rows), for real weights with the tokens and windows the transcript actually has.

CTranslate2's PyPI build wants CUDA 12's libcublas.so.12: on a CUDA 13 machine run.py links it to CUDA 13's
libcublas.so.13 and re-executes itself with that folder on LD_LIBRARY_PATH (ctranslate2_cuda.py).

Output: benchmarks/results/<gpu>-<date>.json (meta + one record per row), .md (tables) and .png
(speedup over openai-whisper per model, floors marked), each with the git commit; rewritten after
every model, so an interrupted run leaves its rows so far (--deadline-s stops measuring in time to
write them). --append adds this run's rows to an existing result file (one file from two calls);
--render rewrites the .md and .png of a result file.

    python benchmarks/run.py --deadline-s 540                  # every section, every model, on CUDA
    python benchmarks/run.py --sections encoder,decoder,longform && python benchmarks/run.py --sections cpu --append
    python benchmarks/run.py --models tiny,large-v3 --sections encoder,decoder
    python benchmarks/run.py --device cpu --models tiny --quick --threads 1 --out-dir /tmp/bench
"""

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
if __name__ == "__main__":
    import ctranslate2_cuda  # noqa: E402

    ctranslate2_cuda.reexec_with_cublas12(sys.argv)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Callable, Dict, List, Optional  # noqa: E402

import torch  # noqa: E402
import whisper  # noqa: E402

sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
import fastwhisper  # noqa: E402
from common import (DIMS, ceilings_text, device_name, error_status, free_device_memory, git_commit,  # noqa: E402
                    is_cuda, measure_ceilings, slug)
from report import markdown_report, output_paths, write_outputs  # noqa: E402
from sections.random_weights import bench_random  # noqa: E402
from sections.real_weights import bench_real  # noqa: E402
from sections.rows import (CPP, CPU_SECTION_MODELS, FAST, FW, FW_INT8, HF, HYBRID, IMPLS, LONG_CLIP,  # noqa: E402
                           OPENAI, QUICK_REAL_AUDIO, SECTIONS, Runner, new_row)
from sections.timed_rows import LongAudio  # noqa: E402


def gpu_slug(device: str) -> str:
    return name_slug(device_name(device)) if is_cuda(device) else "cpu"


def name_slug(name: str) -> str:
    """h100 for "NVIDIA H100 80GB HBM3", a100 for "NVIDIA A100-SXM4-80GB", rtx-4090 for "NVIDIA GeForce
    RTX 4090", h200 for "NVIDIA H200"."""
    words = [w for w in name.lower().replace("-", " ").split() if w not in ("nvidia", "geforce", "tesla")]
    for i, word in enumerate(words):
        if any(c.isdigit() for c in word):
            prefix = words[i - 1] + "-" if i and words[i - 1].isalpha() else ""
            return slug(prefix + word)
    return slug(" ".join(words))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> Dict[str, Optional[str]]:
    import importlib.metadata

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "fastwhisper": fastwhisper.__version__,
            "fastwhisper_with_cuda": fastwhisper.WITH_CUDA, "openai-whisper": getattr(whisper, "__version__", None),
            "transformers": version("transformers"), "matplotlib": version("matplotlib"),
            "faster-whisper": version("faster-whisper"), "ctranslate2": version("ctranslate2"),
            "python": platform.python_version()}


def comma_list(text: str) -> List[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


QUICK = {"warmup": 1, "repeats": 2, "encoder_repeats": 2, "tokens": 8, "check_tokens": 8, "longform_seconds": 60,
         "longform_tokens": 8, "longform_batch": 2, "longform_budget_s": 0.0, "batch_sizes": "1,2",
         "real_audio": QUICK_REAL_AUDIO}
# long-form: 64 windows of audio, whole batches of 16 (a short last batch would leave rows idle; 16 rows keep the
# GPU busier per decoder step than 8 do)
FULL = {"warmup": 1, "repeats": 3, "encoder_repeats": 10, "tokens": 50, "check_tokens": 32, "longform_seconds": 1920,
        "longform_tokens": 100, "longform_batch": 16, "longform_budget_s": 2.0, "batch_sizes": "1,8",
        "real_audio": LONG_CLIP}
DEFAULT_LONGFORM_ROWS = "single:openai-whisper,fastwhisper-hybrid,fastwhisper-cpp;batched:hf-sdpa,fastwhisper-cpp"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__[
                                         __doc__.index("Implementations"):])
    parser.add_argument("--models", default=",".join(DIMS), help="comma list of " + ", ".join(DIMS))
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma list of " + ", ".join(SECTIONS))
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma list of " + ", ".join(IMPLS))
    parser.add_argument("--warmup", type=int, help=f"untimed runs before timing (default {FULL['warmup']})")
    parser.add_argument("--repeats", type=int, help=f"timed runs, median reported (default {FULL['repeats']})")
    parser.add_argument("--encoder-repeats", type=int, help=f"timed encoder calls (default {FULL['encoder_repeats']})")
    parser.add_argument("--batch-sizes", help=f"encoder batch sizes (default {FULL['batch_sizes']})")
    parser.add_argument("--tokens", type=int, help=f"tokens per decoder call (default {FULL['tokens']})")
    parser.add_argument("--check-tokens", type=int, help=f"fp32 tokens checked against openai-whisper (default {FULL['check_tokens']})")
    parser.add_argument("--longform-seconds", type=float, help=f"random-weight long audio (default {FULL['longform_seconds']:g} s)")
    parser.add_argument("--longform-tokens", type=int, help=f"fixed token budget per window (default {FULL['longform_tokens']})")
    parser.add_argument("--longform-batch", type=int, help=f"windows per batch for batched long-form (default {FULL['longform_batch']})")
    parser.add_argument("--longform-budget-s", type=float,
                        help=f"target seconds of one timed long-form run, sets the audio prefix (default {FULL['longform_budget_s']:g}; "
                             "0 = one batch of windows; the whole audio when --warmup 0)")
    parser.add_argument("--longform-rows", default=DEFAULT_LONGFORM_ROWS,
                        help="random-weight long-form rows, 'single:impl,...;batched:impl,...' (default %(default)s)")
    parser.add_argument("--long-audio", type=Path, default=LONG_CLIP, help="clip tiled into the random-weight long audio")
    parser.add_argument("--real-audio", type=Path, help=f"clip for real-weight transcribe() rows (default {LONG_CLIP.name})")
    parser.add_argument("--real-weights-only", action="store_true", help="only the real-weight long-form rows")
    parser.add_argument("--cpu-models", default=None, help="models of the cpu section (default: tiny and base among --models)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--name", default=None, help="output file stem (default <gpu>-<date>)")
    parser.add_argument("--commit", default=None, help="recorded in every output (default: git rev-parse HEAD)")
    parser.add_argument("--quick", action="store_true", help="few repeats, few tokens, short audio: a smoke test")
    parser.add_argument("--deadline-s", type=float, default=0.0,
                        help="after this many seconds remaining rows are recorded as skipped (0: no deadline)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--decoder-modes", default="greedy,beam5", help="decoder rows: greedy and/or beam5")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows of an existing <out-dir>/<name>.json that this run does not measure "
                             "(e.g. --sections cpu after a GPU-sections run: one result file from two calls)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only rewrite the .md and .png of an existing result JSON")
    parser.add_argument("--inject-failure", action="append", default=[], metavar="IMPL[=raise|empty]",
                        help="test hook: make an implementation raise, or return empty output")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.models = comma_list(args.models)
    args.sections = comma_list(args.sections)
    args.impls = comma_list(args.impls)
    for what, values, allowed in (("model", args.models, DIMS), ("section", args.sections, SECTIONS),
                                  ("impl", args.impls, IMPLS)):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            parser.error(f"unknown {what}(s) {unknown}; choose from {list(allowed)}")
    try:
        args.batch_sizes = [int(b) for b in comma_list(args.batch_sizes)]
        args.longform_rows = {mode.split(":")[0].strip(): comma_list(mode.split(":", 1)[1])
                              for mode in args.longform_rows.split(";") if ":" in mode}
    except (ValueError, IndexError):
        parser.error("--batch-sizes: integers; --longform-rows: 'single:impl,...;batched:impl,...'")
    args.longform_modes = [m for m in ("single", "batched") if m in args.longform_rows]
    args.decoder_modes = comma_list(args.decoder_modes)
    if not set(args.decoder_modes) <= {"greedy", "beam5"}:
        parser.error("--decoder-modes: greedy and/or beam5")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.warmup < 0 or min(
            args.repeats, args.encoder_repeats, args.tokens, args.check_tokens, args.longform_tokens,
            args.longform_batch) < 1:
        parser.error("batch sizes, repeats, token counts and --longform-batch must be >= 1, --warmup >= 0")
    args.inject = {}
    for spec in args.inject_failure:
        impl, _, kind = spec.partition("=")
        if impl not in IMPLS or kind not in ("", "raise", "empty"):
            parser.error(f"--inject-failure {spec}: IMPL[=raise|empty] with IMPL one of {list(IMPLS)}")
        args.inject[impl] = kind or "empty"
    if is_cuda(args.device) and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device (use --device cpu)")
    args.cpu_models = comma_list(args.cpu_models) if args.cpu_models else [m for m in args.models if m in CPU_SECTION_MODELS]
    args.commit = args.commit or git_commit()
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    args.out_base = args.out_dir / (args.name or f"{gpu_slug(args.device)}-{day}")
    return args


def guarded(runner: Runner, section: str, model: str, device: str, fn: Callable, *args) -> None:
    """fn(*args); an exception outside any row (e.g. out of memory building the weights) becomes a
    failure row, and the run goes on."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        runner.run(new_row(section, model, OPENAI, device), lambda row: None, f"setup failed: {error_status(exc)}")
    free_device_memory(device)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        data = json.loads(args.render.read_text())
        write_outputs(data["meta"], data["rows"], args.render.parent / args.render.name.removesuffix(".json"))
        print(f"rewrote the .md and .png beside {args.render}")
        return 0
    started = time.monotonic()
    meta = {
        "commit": args.commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device, "gpu": device_name(args.device) if is_cuda(args.device) else None,
        "cpu": cpu_name(), "cpu_threads": torch.get_num_threads(), "versions": versions(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out_base"},
        "impls": {OPENAI: "whisper.model.Whisper (fp32 weights; fp16 activations on a GPU)",
                  HF: "transformers WhisperForConditionalGeneration, attn_implementation=sdpa, fp16 on a GPU; "
                      "GenerationMixin.generate with openai-whisper's initial and suppressed tokens",
                  FAST: "fastwhisper.FastAudioEncoder (fp32 weights; fp16 activations on a GPU)",
                  HYBRID: "fastwhisper encoder + openai-whisper's PyTorch decoder (decoder='torch')",
                  CPP: "fastwhisper encoder + the C++ decoding loop (decoder='cpp')",
                  FW: "CTranslate2 (faster-whisper's engine): ctranslate2.models.Whisper encode/generate with random "
                      "weights, faster_whisper.WhisperModel.transcribe with real weights; float16 on a GPU, float32 "
                      "on the CPU",
                  FW_INT8: "faster_whisper.WhisperModel with compute_type int8 (CPU)"},
        "ceilings": None, "cpu_ceilings": None, "stopped": None, "elapsed_s": None,
    }
    print(f"{meta['gpu'] or 'cpu'}: torch {torch.__version__}, fastwhisper {fastwhisper.__version__}, "
          f"commit {args.commit}; writing {args.out_base}.{{json,md,png}}", file=sys.stderr, flush=True)
    runner = Runner(args, meta, write_outputs)
    json_path = output_paths(args.out_base)[0]
    if args.append and json_path.is_file():
        old = json.loads(json_path.read_text())
        runner.kept = [r for r in old["rows"] if not runner.planned(r)]
        meta["appended_to"] = {"commit": old["meta"]["commit"], "date": old["meta"]["date"]}
        for key in ("ceilings", "cpu_ceilings"):
            meta[key] = old["meta"].get(key)
    main_sections = [s for s in args.sections if s in ("encoder", "decoder", "longform")]
    if main_sections:
        meta["ceilings"] = measure_ceilings(args.device)
        print(f"ceilings: {ceilings_text(meta['ceilings'])}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="fastwhisper-bench-") as tmp:
        long_audio = None
        if "longform" in main_sections and not args.real_weights_only:
            long_audio = LongAudio(args.long_audio, args.longform_seconds, Path(tmp))
        for name in args.models:
            if runner.past_deadline():
                meta["stopped"] = f"deadline reached before {name}"
                break
            t0 = time.monotonic()
            random_sections = [s for s in main_sections if not args.real_weights_only]
            if random_sections:
                guarded(runner, random_sections[0], name, args.device, bench_random, runner, name, args.device,
                        random_sections, args.impls, meta["ceilings"], args.batch_sizes, args.decoder_modes,
                        args.longform_modes, long_audio)
            if "longform" in main_sections:
                guarded(runner, "longform", name, args.device, bench_real, runner, name, args.device,
                        meta["ceilings"], args.real_audio)
            print(f"{name}: {time.monotonic() - t0:.0f} s (total {time.monotonic() - started:.0f} s)",
                  file=sys.stderr, flush=True)
            meta["elapsed_s"] = time.monotonic() - started
            runner.write()
        if "cpu" in args.sections and not meta["stopped"]:
            if not is_cuda(args.device) and main_sections:
                print("cpu section: the run is on the CPU already", file=sys.stderr)
            else:
                meta["cpu_ceilings"] = measure_ceilings("cpu")
                for name in args.cpu_models:
                    if runner.past_deadline():
                        meta["stopped"] = f"deadline reached before cpu rows of {name}"
                        break
                    if not args.real_weights_only:
                        guarded(runner, "encoder", name, "cpu", bench_random, runner, name, "cpu", ["encoder", "decoder"],
                                [OPENAI, FAST, CPP], meta["cpu_ceilings"], [1], ["greedy"], [], None)
                    guarded(runner, "longform", name, "cpu", bench_real, runner, name, "cpu", meta["cpu_ceilings"],
                            args.real_audio)
                    runner.write()
    meta["elapsed_s"] = time.monotonic() - started
    runner.write()
    failed = [r for r in runner.rows if r["status"] == "failure"]
    print(markdown_report(meta, runner.rows).split("### All rows")[0])
    print(f"{len(runner.rows)} rows, {len(failed)} failures, {meta['elapsed_s']:.0f} s; wrote "
          f"{args.out_base}.json, .md, .png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
