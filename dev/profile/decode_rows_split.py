"""Whether a decode call of many windows goes faster whole or split into calls of at most 16 rows.

The C++ decoder's step ops (fused LayerNorm + GEMV kernels, the cluster cross-attention) take at most 16 rows
(windows x beams) a step; a larger call runs each step as ATen ops (cuBLAS GEMMs, SDPA). For each window count
W this times, on one warm session (random weights of the real dims, fp16, greedy, EOT suppressed, --tokens
tokens): one call of W windows, and ceil(W / 16) calls of at most 16 windows one after another.

Floor per step: the weights once per call (large-v3: 1.6 GB of fp16 decoder weights) plus every window's
cross-attention K/V (32 layers x 1500 x 1280 x 2 x 2 B = 246 MB per window), at the card's copy rate; a split
call reads the weights once per part, so splitting pays only when the whole call's step is far from its floor.
CUDA events, one warm-up call, median of --repeats.

    python dev/profile/decode_rows_split.py --model large-v3 --windows 16,32,64 --tokens 50
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # benchmarks/common.py
from common import fixed_length_options, random_audio_features, random_whisper, time_calls  # noqa: E402

STEP_OPS_MAX_ROWS = 16


def main() -> None:
    from fastwhisper.decoder.cpp import decode_cpp, decoder_session

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="large-v3")
    p.add_argument("--windows", default="16,32,64")
    p.add_argument("--tokens", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    model = random_whisper(args.model, "cuda")
    session = decoder_session(model.decoder)
    options = fixed_length_options(model, args.tokens)
    rows = []
    with torch.inference_mode():
        for windows in (int(w) for w in args.windows.split(",")):
            features = random_audio_features(model.dims, windows)
            parts = [features[i:i + STEP_OPS_MAX_ROWS] for i in range(0, windows, STEP_OPS_MAX_ROWS)]
            whole = statistics.median(time_calls(lambda: decode_cpp(model, features, options, session=session),
                                                 "cuda", 1, args.repeats))
            split = statistics.median(time_calls(
                lambda: [decode_cpp(model, part, options, session=session) for part in parts], "cuda", 1, args.repeats))
            row = {"model": args.model, "windows": windows, "tokens": args.tokens, "whole_ms": whole,
                   "split_ms": split, "parts": len(parts), "whole_ms_per_step": whole / args.tokens,
                   "split_ms_per_step": split / args.tokens}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
