"""Decoder step time (and encoder window time) with each switchable part of the fast path on and off (same GPU,
same run).

The time of one one-token step of the C++ decoding loop, as the loop runs it (CUDA graph replay,
logit filters, greedy update or beam ranking, the stop test): for each configuration a child process
(the switches are environment variables read once per process) builds each model (random weights of
the real dims), decodes 1 + `--tokens` tokens and 1 token with EOT suppressed, and reports

    ms per step = (median time of the long decode - median time of the 1-token decode) / tokens

so the once-per-window work (cross-attention K/V, the first multi-token step, the Python set-up of
the DecodingTask) cancels out. fp16 activations, CUDA events, warm-up, median of repeats.

Configurations (FASTWHISPER_PDL, FASTWHISPER_CROSS_ATTENTION, FASTWHISPER_CROSS_FUSED,
FASTWHISPER_LINEAR_PRELOAD, FASTWHISPER_ROW_SUMS, FASTWHISPER_STEP_COPIES, FASTWHISPER_GREEDY_TAIL,
FASTWHISPER_MANY_ROWS, FASTWHISPER_PREFILL, FASTWHISPER_GEMM_ALGO; see README):
    default       as shipped (one row per audio: the cross query, then SDPA; several: the cluster kernel, which
                  computes the query itself where its blocks fit two to an SM)
    no-pdl        programmatic dependent launch off
    cross-sdpa    cross-attention through ATen's SDPA
    cross-split   cross-attention through fastwhisper's cluster kernel
    split-no-pdl  the cluster kernel, programmatic dependent launch off
    cross-fused   the cross query and the cross-attention as one op (decoder_cross_query_attention) for every
                  row count (default: for several rows per audio only)
    cross-unfused the cross query (decoder_linear) and the cross-attention as two ops for every row count
    linear-late   decoder_linear reads its biases and LayerNorm parameters where it uses them, after its input
    rows-apart    decoder_linear with one input row sums each weight row alone, not a slot's rows together
    step-copies   the next token, its position and the finished flag pass between steps as copies (copy
                  engine), not kernel writes
    greedy-separate  greedy decoding's suppress filters, token choice (the ticket kernel) and step feedback
                  (next token and position, finished flag) as separate kernels, not one kernel
    many-rows-gemm   4-16 fp16/bf16 rows (beams, batched windows) through a LayerNorm kernel and cuBLASLt GEMMs, not
                  the tensor-core decoder_linear kernel (default: that kernel up to 2048 features, cuBLASLt above)
    many-rows-mma the tensor-core kernel for every feature count where it fits
    prefill-eager the first step's initial tokens as one forward of ATen ops, not one-token graph steps (this
                  moves the fixed cost of a call, which the difference of two decodes cancels: see
                  decode_call_profile.py)
    gemm-heuristic   cuBLASLt's heuristic's first algorithm for every GEMM, not the fastest of its candidates timed
                  at the first call of a problem of 6000 rows or more (the encoder's GEMMs from four windows up)

Modes: greedy and beam5 decode one window; batch8 and batch16 decode eight or sixteen windows of different audio
together (greedy), as batched long-form transcription does: their ms per step is for all the rows. Modes encoder1
and encoder8 time the encoder instead (FastAudioEncoder, fp32 weights, fp16 log-mel, its CUDA graph; one or eight
windows per call): their figure is ms per 30-s window, the median call over the windows in it.

With --rounds R every configuration runs R times, the configurations taking turns, and the table gives
the median over rounds (the JSON keeps every round), so a drift of the GPU's speed during the run
touches every configuration alike.

    python benchmarks/decoder_ablation.py --models tiny,turbo,large-v3 --out results/<gpu>-<date>-ablation.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DIMS, device_name, encoder_dims, fixed_length_options, git_commit,  # noqa: E402
                    make_mel, random_audio_features, random_whisper, time_calls)

CONFIGS = {
    "default": {},
    "no-pdl": {"FASTWHISPER_PDL": "0"},
    "cross-sdpa": {"FASTWHISPER_CROSS_ATTENTION": "sdpa"},
    "cross-split": {"FASTWHISPER_CROSS_ATTENTION": "split"},
    "split-no-pdl": {"FASTWHISPER_CROSS_ATTENTION": "split", "FASTWHISPER_PDL": "0"},
    "cross-fused": {"FASTWHISPER_CROSS_FUSED": "on"},
    "cross-unfused": {"FASTWHISPER_CROSS_FUSED": "off"},
    "linear-late": {"FASTWHISPER_LINEAR_PRELOAD": "off"},
    "rows-apart": {"FASTWHISPER_ROW_SUMS": "apart"},
    "step-copies": {"FASTWHISPER_STEP_COPIES": "copies"},
    "greedy-separate": {"FASTWHISPER_GREEDY_TAIL": "separate"},
    "many-rows-gemm": {"FASTWHISPER_MANY_ROWS": "gemm"},
    "many-rows-mma": {"FASTWHISPER_MANY_ROWS": "mma"},
    "prefill-eager": {"FASTWHISPER_PREFILL": "eager"},
    "gemm-heuristic": {"FASTWHISPER_GEMM_ALGO": "heuristic"},
}
# mode: (DecodingOptions fields, windows decoded together: rows of different audio)
MODES = {"greedy": ({}, 1), "beam5": ({"beam_size": 5}, 1), "batch8": ({}, 8), "batch16": ({}, 16)}
ENCODER_MODES = {"encoder1": 1, "encoder8": 8}  # mode: windows per encoder call


def window_ms(model, name, windows, warmup, repeats):
    """ms per 30-s window of FastAudioEncoder (fp32 weights, fp16 log-mel) encoding ``windows`` windows per call."""
    from fastwhisper import FastAudioEncoder

    encoder = FastAudioEncoder.from_audio_encoder(model.encoder)
    mel = make_mel(encoder_dims(name), windows).to("cuda", torch.float16)
    with torch.no_grad():
        return statistics.median(time_calls(lambda: encoder(mel), "cuda", max(warmup, 1), repeats)) / windows


def step_ms(name, modes, tokens, warmup, repeats):
    """{mode: ms per decoding step (encoder modes: ms per window)} of model ``name`` in this process's
    configuration."""
    from fastwhisper.decoder.cpp import decode_cpp, decoder_session

    model = random_whisper(name, device="cuda")
    session = decoder_session(model.decoder)
    out = {}
    for mode in modes:
        if mode in ENCODER_MODES:
            out[mode] = window_ms(model, name, ENCODER_MODES[mode], warmup, repeats)
            continue
        fields, windows = MODES[mode]
        features = random_audio_features(model.dims, windows)

        def run(n):
            options = fixed_length_options(model, n, **fields)
            return lambda: decode_cpp(model, features, options, session=session)

        with torch.inference_mode():
            long_ms = statistics.median(time_calls(run(1 + tokens), "cuda", warmup, repeats))
            short_ms = statistics.median(time_calls(run(1), "cuda", warmup, repeats))
        out[mode] = (long_ms - short_ms) / tokens
    del model, session
    torch.cuda.empty_cache()
    return out


def child(args):
    for name in args.models.split(","):
        result = step_ms(name, args.modes.split(","), args.tokens, args.warmup, args.repeats)
        print("RESULT " + json.dumps({"model": name, "ms_per_step": result}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,turbo,large-v3")
    parser.add_argument("--modes", default="greedy,beam5")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--commit", default=None, help="recorded in the outputs (default: git rev-parse HEAD)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for mode in args.modes.split(","):
        if mode not in MODES and mode not in ENCODER_MODES:
            parser.error(f"unknown mode {mode!r}; choose from {', '.join([*MODES, *ENCODER_MODES])}")
    for name in args.models.split(","):
        if name not in DIMS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(DIMS)}")
    if not torch.cuda.is_available():
        sys.exit("decoder_ablation.py needs a CUDA GPU")
    if args.child:
        return child(args)

    commit = args.commit or git_commit()
    rows = []
    for config in args.configs.split(","):
        if config not in CONFIGS:
            parser.error(f"unknown configuration {config!r}; choose from {', '.join(CONFIGS)}")
    for round_index in range(args.rounds):
        for config in args.configs.split(","):
            env = {k: v for k, v in os.environ.items() if not k.startswith("FASTWHISPER_")}
            env.update(CONFIGS[config])
            cmd = [sys.executable, __file__, "--child", "--models", args.models, "--modes", args.modes,
                   "--tokens", str(args.tokens), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            results = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0:
                print(f"{config}: child failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", flush=True)
            for r in results:
                for mode, ms in r["ms_per_step"].items():
                    rows.append({"model": r["model"], "mode": mode, "config": config, "round": round_index,
                                 "ms_per_step": ms})
                    print(f"{r['model']:9s} {mode:6s} {config:12s} round {round_index} {ms:7.3f} ms/step", flush=True)

    lines = [f"Decoder ms per step (encoder modes: ms per window) by configuration, {device_name('cuda')}, commit {commit} "
             f"(`benchmarks/decoder_ablation.py`, {args.tokens} tokens, median of {args.repeats} repeats, "
             f"median over {args.rounds} round(s)).", "",
             "| model | mode | " + " | ".join(args.configs.split(",")) + " |",
             "|---|---|" + "---|" * len(args.configs.split(","))]
    for name in args.models.split(","):
        for mode in args.modes.split(","):
            cells = []
            for config in args.configs.split(","):
                hit = [r["ms_per_step"] for r in rows if (r["model"], r["mode"], r["config"]) == (name, mode, config)]
                cells.append(f"{statistics.median(hit):.3f}" if hit else "failed")
            lines.append(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"commit": commit, "gpu": device_name("cuda"), "tokens": args.tokens,
                                        "repeats": args.repeats, "rounds": args.rounds, "rows": rows}, indent=1) + "\n")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
