"""Encoder parity report: FastAudioEncoder against openai-whisper's AudioEncoder and a float64 reference.

For each model size (random weights of the real dims, seed 0; LayerNorm parameters perturbed):
  fp32         max|fast - whisper| / max|whisper|, both fp32 (TF32 off), and fast against float64;
  fp16, bf16   fast (fp32 weights, low-precision mel, as openai-whisper runs on GPU) against float64,
               whisper's own error in that dtype against float64, and their ratio (the tests require <= 2).
The float64 reference is tests/reference.py's encoder_reference (plain torch ops in float64).

    python benchmarks/encoder_parity.py --device cuda --out benchmarks/results/<gpu>-<date>-encoder-parity.json
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
from whisper.model import AudioEncoder

import fastwhisper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import encoder_reference  # noqa: E402

DIMS = {
    "tiny": (80, 1500, 384, 6, 4),
    "base": (80, 1500, 512, 8, 6),
    "small": (80, 1500, 768, 12, 12),
    "medium": (80, 1500, 1024, 16, 24),
    "large-v3": (128, 1500, 1280, 20, 32),
    "turbo": (128, 1500, 1280, 20, 32),
}


def rel_err(out, ref):
    out, ref = out.double().cpu(), ref.double().cpu()
    return float("inf") if not torch.isfinite(out).all() else ((out - ref).abs().max() / ref.abs().max()).item()


def random_encoder(dims, device):
    torch.manual_seed(0)
    enc = AudioEncoder(*dims)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "ln" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return enc.eval().to(device)


def report(size, device, batch):
    enc = random_encoder(DIMS[size], device)
    fast = fastwhisper.FastAudioEncoder.from_audio_encoder(enc)
    mel = (torch.randn(batch, DIMS[size][0], 3000, generator=torch.Generator().manual_seed(1)) * 0.5).to(device)
    row = {"model": size, "device": device, "batch": batch}
    with torch.no_grad():
        ref64 = encoder_reference(enc, mel)
        whisper32 = enc(mel)
        fast32 = fast(mel)
        row["fp32_vs_whisper"] = rel_err(fast32, whisper32)
        row["fp32_vs_float64"] = rel_err(fast32, ref64)
        row["whisper_fp32_vs_float64"] = rel_err(whisper32, ref64)
        if device == "cuda":
            for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
                ours, theirs = rel_err(fast(mel.to(dtype)), ref64), rel_err(enc(mel.to(dtype)), ref64)
                row[f"{name}_vs_float64"], row[f"whisper_{name}_vs_float64"] = ours, theirs
                row[f"{name}_ratio"] = ours / theirs
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=None, help="comma list (default: all on CUDA, tiny,base,small on CPU)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    models = args.models.split(",") if args.models else (list(DIMS) if args.device == "cuda" else ["tiny", "base", "small"])
    rows = []
    for size in models:
        row = report(size, args.device, batch=3 if size in ("tiny", "base") else 1)
        rows.append(row)
        print("  ".join(f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        torch.cuda.empty_cache() if args.device == "cuda" else None
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "fastwhisper": fastwhisper.__version__,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
