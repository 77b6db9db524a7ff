"""python -m fastwhisper.selftest: FastAudioEncoder against openai-whisper's AudioEncoder.

Builds a Whisper tiny-sized encoder with random weights, runs it through openai-whisper and through
fastwhisper's ops on every available device, and prints the relative error and the time per call
(median of several calls after a warm-up). Exits non-zero if the outputs disagree.
"""

import statistics
import sys
import time

import torch
from whisper.model import AudioEncoder

import fastwhisper

DIMS = (80, 1500, 384, 6, 4)  # tiny: n_mels, n_ctx, n_state, n_head, n_layer
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2}


def _median_ms(fn, device, repeats=5):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> int:
    torch.manual_seed(0)
    reference = AudioEncoder(*DIMS).eval()
    fast = fastwhisper.FastAudioEncoder.from_audio_encoder(reference)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and fastwhisper.WITH_CUDA else [])
    ok = True
    print(f"fastwhisper {fastwhisper.__version__}, torch {torch.__version__}, CUDA kernels: {fastwhisper.WITH_CUDA}")
    for device in devices:
        reference.to(device)
        dtypes = [torch.float32] + ([torch.float16] if device == "cuda" else [])
        for dtype in dtypes:
            mel = (torch.randn(1, DIMS[0], 2 * DIMS[1]) * 0.5).to(device, dtype)
            with torch.inference_mode():
                expected, out = reference(mel), fast(mel)
                err = ((out.float() - expected.float()).abs().max() / expected.float().abs().max()).item()
                t_ref = _median_ms(lambda: reference(mel), device)
                t_fast = _median_ms(lambda: fast(mel), device)
            good = err <= TOLERANCE[dtype]
            ok &= good
            print(f"{device:4s} {str(dtype):13s} rel. error {err:.2e} ({'ok' if good else 'MISMATCH'})  "
                  f"openai-whisper {t_ref:8.2f} ms  fastwhisper {t_fast:8.2f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
