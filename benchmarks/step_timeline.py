"""A timeline of greedy decoding steps as the C++ loop runs them (CUDA-graph replays with PDL), from the
profiler's kernel records: each kernel's start, duration and gap to the kernel before it.

Nsight Systems is not on the GPU machine; torch.profiler (CUPTI) records the kernels of graph replays with
their start and end times too. For each configuration (environment switches, read once per process, so a
child process each), the model (random weights of the real dims, fp16) decodes 1 + ``--tokens`` tokens
with EOT suppressed, twice untimed, then once under the profiler. The step graph begins with
``decoder_embedding``, so the records split into steps there; the table shows the step whose span is the
median of the steps after the first few. A negative gap is overlap: the kernel started (PDL) before the
one before it ended. Summary per kernel kind: summed durations and gaps per step.

    python benchmarks/step_timeline.py --models tiny,large-v3 --configs default,cross-split --out t.json
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_ablation import CONFIGS  # noqa: E402

STEP_START = "decoder_embedding"
# kind: pattern in the kernel name (first match wins)
KINDS = [("embedding", r"decoder_embedding"), ("linear", r"decoder_linear_kernel"),
         ("linear (tensor cores)", r"decoder_linear_stream_kernel"),
         ("self-attention", r"self_attention_kernel"), ("cross-attention (fastwhisper)", r"cross_attention_kernel"),
         ("cross-attention (cuDNN/SDPA)", r"cudnn|sdpa|fmha|flash"),
         ("greedy / filters", r"greedy|index_fill|indexFunc|timestamp"), ("copies", r"memcpy|memset"),
         ("GEMM (cuBLASLt)", r"gemm|xmma|cutlass|cublas|nvjet"), ("layer norm", r"layer_norm"),
         ("elementwise / cat", r"elementwise|vectorized|CatArray|gelu")]


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return kind
    return "other"


def short(name: str) -> str:
    name = re.sub(r"\(anonymous namespace\)::|fastwhisper::cuda::|void ", "", name)
    return re.sub(r"\(.*", "", name)[:70]


def profile_steps(name: str, tokens: int, windows: int = 1):
    """[[{name, start_us, dur_us}, ...] per step] of one decode."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from common import fixed_length_options, random_audio_features, random_whisper
    from fastwhisper.decoder.cpp import decode_cpp, decoder_session

    model = random_whisper(name, device="cuda")
    features = random_audio_features(model.dims, windows)
    session = decoder_session(model.decoder)
    options = fixed_length_options(model, 1 + tokens)
    with torch.inference_mode():
        for _ in range(2):
            decode_cpp(model, features, options, session=session)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            decode_cpp(model, features, options, session=session)
            torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    records = sorted(({"name": e["name"], "start_us": float(e["ts"]), "dur_us": float(e.get("dur", 0.0))}
                      for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                     key=lambda r: r["start_us"])
    steps, current = [], None
    for r in records:
        if STEP_START in r["name"]:
            current = []
            steps.append(current)
        if current is not None:
            current.append(r)
    return steps


def step_rows(step):
    rows, prev_end = [], None
    t0 = step[0]["start_us"]
    for r in step:
        gap = None if prev_end is None else r["start_us"] - prev_end
        rows.append({"kernel": short(r["name"]), "kind": kind_of(r["name"]), "start_us": r["start_us"] - t0,
                     "dur_us": r["dur_us"], "gap_us": gap})
        prev_end = r["start_us"] + r["dur_us"] if prev_end is None else max(prev_end, r["start_us"] + r["dur_us"])
    return rows


def summarize(steps, skip: int):
    """The median-span step's rows and per-kind sums (durations, gaps) averaged over the steps kept."""
    kept = steps[skip:-1] if len(steps) > skip + 1 else steps
    spans = [s[-1]["start_us"] + s[-1]["dur_us"] - s[0]["start_us"] for s in kept]
    median_span = statistics.median(spans)
    chosen = kept[min(range(len(kept)), key=lambda i: abs(spans[i] - median_span))]
    kinds = {}
    for s in kept:
        for row in step_rows(s):
            k = kinds.setdefault(row["kind"], {"kernels": 0, "dur_us": 0.0, "gap_us": 0.0})
            k["kernels"] += 1 / len(kept)
            k["dur_us"] += row["dur_us"] / len(kept)
            k["gap_us"] += (row["gap_us"] or 0.0) / len(kept)
    between = [kept[i + 1][0]["start_us"] - (kept[i][-1]["start_us"] + kept[i][-1]["dur_us"])
               for i in range(len(kept) - 1)]
    return {"steps": len(kept), "span_us_median": median_span, "span_us_min": min(spans), "span_us_max": max(spans),
            "step_start_to_start_us_median": statistics.median(
                [kept[i + 1][0]["start_us"] - kept[i][0]["start_us"] for i in range(len(kept) - 1)] or [0.0]),
            "idle_between_steps_us_median": statistics.median(between or [0.0]),
            "kinds": kinds, "median_step": step_rows(chosen)}


def child(args):
    for name in args.models.split(","):
        steps = profile_steps(name, args.tokens, args.windows)
        print("RESULT " + json.dumps({"model": name, **summarize(steps, args.skip)}), flush=True)


def markdown(results, meta):
    lines = [f"# Greedy step timelines: {meta['gpu']}", "",
             f"commit `{meta['commit']}`; {meta['windows']} window(s) of different audio decoded together; "
             f"{meta['tokens']} steps per decode, steps {meta['skip']}.. kept; "
             "torch.profiler (CUPTI) kernel records of CUDA-graph replays; gap = start minus the end of the "
             "kernels before (negative: overlap through PDL).", ""]
    for r in results:
        lines += [f"## {r['model']}, {r['config']} ({', '.join(f'{k}={v}' for k, v in r['switches'].items()) or 'as shipped'})",
                  "",
                  f"Step span median {r['span_us_median']:.1f} us (min {r['span_us_min']:.1f}, max "
                  f"{r['span_us_max']:.1f}) over {r['steps']} steps; start to start {r['step_start_to_start_us_median']:.1f} us; "
                  f"idle between steps {r['idle_between_steps_us_median']:.1f} us.", "",
                  "| kind | kernels per step | summed duration us | summed gap us |", "|---|---|---|---|"]
        for kind, k in sorted(r["kinds"].items(), key=lambda kv: -kv[1]["dur_us"]):
            lines.append(f"| {kind} | {k['kernels']:.1f} | {k['dur_us']:.1f} | {k['gap_us']:.1f} |")
        lines += ["", "<details><summary>the median step, kernel by kernel</summary>", "",
                  "| # | kernel | kind | start us | duration us | gap us |", "|---|---|---|---|---|---|"]
        for i, row in enumerate(r["median_step"]):
            gap = "" if row["gap_us"] is None else f"{row['gap_us']:.2f}"
            lines.append(f"| {i} | `{row['kernel']}` | {row['kind']} | {row['start_us']:.2f} | {row['dur_us']:.2f} | {gap} |")
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,large-v3")
    parser.add_argument("--configs", default="default,cross-split", help="comma list of " + ", ".join(CONFIGS))
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--windows", type=int, default=1, help="windows of different audio decoded together (rows)")
    parser.add_argument("--skip", type=int, default=4, help="first steps left out (the prompt step and warm-up)")
    parser.add_argument("--commit", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    import torch

    from common import device_name, git_commit

    results = []
    for config in args.configs.split(","):
        env = dict(os.environ, **CONFIGS[config])
        proc = subprocess.run([sys.executable, __file__, "--child", "--models", args.models, "--tokens", str(args.tokens),
                               "--windows", str(args.windows), "--skip", str(args.skip)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            return 1
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                results.append({"config": config, "switches": CONFIGS[config], **json.loads(line[len("RESULT "):])})
    meta = {"commit": args.commit or git_commit(), "gpu": device_name("cuda") if torch.cuda.is_available() else "cpu",
            "tokens": args.tokens, "skip": args.skip, "windows": args.windows}
    report = markdown(results, meta)
    print(report)
    if args.out:
        args.out.write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
