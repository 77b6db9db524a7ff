"""Experiment (not shipped): int8 weights with float32 activations (weight-only int8) for the CPU text decoder.

    python dev/int8/weight_only.py --threads 2 --out dev/int8/results/weight-only-tiny-en

The one-token step of the CPU decoder reads its weights from memory (tiny.en: 80 MB of vocabulary projection and
28 MB of Linears in float32). Weight-only int8 reads a quarter of those bytes and keeps every activation in
float32, unlike torch's dynamic quantization (dev/int8/int8_decoder.py), which also rounds each activation row to
int8 and lost 5 to 11 points of word error rate.

1. Words. The text decoder's weights (its Linears, its token embedding, which is also the vocabulary projection,
   or both) are rounded to int8 with one symmetric scale per output row or per 32 inputs of a row, and turned back into float32 (fake
   quantization: the products a weight-only kernel computes, up to the order of its sums). fastwhisper
   (decoder="cpp", greedy with temperature fallback, English) transcribes the English clips of
   audio_samples/manifest.json and the second long clip with those weights and with the real ones. The word
   error rate is over all files together, against the reference texts and against the float32 transcripts.
2. Time. A weight-only int8 matrix-vector kernel (AVX2: 8 int8 weights widened to float32 per FMA, four rows at
   a time, a prefetch 8 KB ahead) against the product's float32 kernel (csrc/decoder/cpu_gemv.cpp, built as in
   dev/profile/cpu_step_parts.py) on tiny.en's one-row shapes, the weight from a pool larger than the caches;
   each checked first against a float64 reference of its own weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.cpp_extension import load_inline

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "dev" / "profile"))
sys.path.insert(0, str(ROOT / "dev" / "cpu"))

import fastwhisper  # noqa: E402
from common import time_calls, write_outputs  # noqa: E402
from cpu_step_parts import _build as build_float32_gemv  # noqa: E402
from gemv_prefetch import SHAPES  # noqa: E402  tiny.en's one-row products
from real_models import SAMPLES_DIR, fast_model, normalized_wer, samples  # noqa: E402

SECOND_CLIP = ("espeak_en_austen_norland.flac", "audio_samples/SOURCES.md")

INT8_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

static inline __m256 widen(const int8_t* q) {  // 8 int8 -> 8 float32
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
}

// y[n] = scale[n] * sum_k x[k] q[n, k] for n in [begin, end), four rows at a time
static void rows_i8(const float* x, const int8_t* q, const float* scale, float* y, int64_t begin, int64_t end,
                    int64_t k) {
  for (int64_t n = begin; n < end; n += 4) {
    const int8_t* q0 = q + n * k;
    for (int64_t i = 0; i < 4 * k; i += 64) _mm_prefetch(reinterpret_cast<const char*>(q0 + 8192 + i), _MM_HINT_T0);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < k; i += 8) {
      const __m256 xv = _mm256_loadu_ps(x + i);
      a0 = _mm256_fmadd_ps(widen(q0 + i), xv, a0);
      a1 = _mm256_fmadd_ps(widen(q0 + k + i), xv, a1);
      a2 = _mm256_fmadd_ps(widen(q0 + 2 * k + i), xv, a2);
      a3 = _mm256_fmadd_ps(widen(q0 + 3 * k + i), xv, a3);
    }
    y[n] = hsum(a0) * scale[n];
    y[n + 1] = hsum(a1) * scale[n + 1];
    y[n + 2] = hsum(a2) * scale[n + 2];
    y[n + 3] = hsum(a3) * scale[n + 3];
  }
}

// x [1, K] float32, q [N, K] int8 (N a multiple of 4, K of 8), scale [N] float32 -> [1, N] float32
torch::Tensor gemv_i8(torch::Tensor x, torch::Tensor q, torch::Tensor scale) {
  TORCH_CHECK(q.size(0) % 4 == 0 && q.size(1) % 8 == 0 && q.is_contiguous() && x.is_contiguous());
  const int64_t n = q.size(0), k = q.size(1);
  auto out = torch::empty({1, n}, x.options());
  const float* xp = x.data_ptr<float>();
  const int8_t* qp = q.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  float* yp = out.data_ptr<float>();
  at::parallel_for(0, n / 4, 16, [&](int64_t f, int64_t l) { rows_i8(xp, qp, sp, yp, 4 * f, 4 * l, k); });
  return out;
}
"""



def quantize_rows(weight: torch.Tensor):
    """int8 weight and float32 scale per output row (symmetric, max |w| -> 127)."""
    scale = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12)
    return torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8), scale.float()


def fake_quantize(weight: torch.Tensor, group: int) -> torch.Tensor:
    """weight rounded to int8 with one scale per `group` consecutive inputs of a row (0: the whole row)."""
    n, k = weight.shape
    blocks = weight.reshape(n, -1, group if group else k)
    scale = (blocks.abs().amax(dim=2, keepdim=True) / 127).clamp_min(1e-12)
    return (torch.round(blocks / scale).clamp(-127, 127) * scale).reshape(n, k)


VARIANTS = {  # name: (which decoder weights, inputs per scale (0: a row))
    "int8 per row: Linears and embedding": ("all", 0),
    "int8 per row: Linears only": ("linears", 0),
    "int8 per row: embedding (the vocabulary projection) only": ("embedding", 0),
    "int8 per 32 inputs: Linears and embedding": ("all", 32),
}


def fake_quantized_decoder(model, which: str, group: int):
    """A copy of model whose text decoder's chosen weight matrices are int8-rounded (float32 storage)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in model.decoder.named_parameters():
            embedding = name == "token_embedding.weight"
            if param.dim() != 2 or name == "positional_embedding" or (which == "linears" and embedding) or (
                    which == "embedding" and not embedding):
                continue
            param.copy_(fake_quantize(param.float(), group))
    return model


def second_clip_text() -> str:
    sources = (ROOT / SECOND_CLIP[1]).read_text()
    return sources.split(SECOND_CLIP[0], 1)[1].split("\n> ", 1)[1].split("\n", 1)[0].strip()


def words(model, clips) -> list:
    return [fastwhisper.transcribe(model, str(path), decoder="cpp", fp16=False, language="en")["text"]
            for path, _ in clips]


def word_part(threads: int) -> dict:
    clips = [(SAMPLES_DIR / s["file"], s["text"]) for s in samples() if s.get("language", "en") == "en"]
    clips.append((SAMPLES_DIR / SECOND_CLIP[0], second_clip_text()))
    model = fast_model("tiny.en", "cpu")
    float32 = words(model, clips)
    reference = " ".join(text for _, text in clips)
    result = {"files": [p.name for p, _ in clips], "float32_vs_reference": normalized_wer(reference, " ".join(float32)),
              "variants": {}}
    for name, (which, group) in VARIANTS.items():
        int8 = words(fake_quantized_decoder(model, which, group), clips)
        result["variants"][name] = {"vs_reference": normalized_wer(reference, " ".join(int8)),
                                    "vs_float32": normalized_wer(" ".join(float32), " ".join(int8)),
                                    "identical_files": sum(a == b for a, b in zip(float32, int8))}
    return result


def time_part(repeats: int, rounds: int) -> dict:
    int8_ext = load_inline("weight_only_int8", cpp_sources=INT8_SOURCE, functions=["gemv_i8"],
                           extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"], extra_ldflags=["-fopenmp"])
    float32_ext = build_float32_gemv(ROOT)

    def median_us(fn):
        return statistics.median(time_calls(fn, "cpu", warmup=5, repeats=repeats)) * 1e3

    times = {(name, kind): [] for name in SHAPES for kind in ("float32", "int8")}
    for _ in range(rounds):
        for name, ((n, k), _) in SHAPES.items():
            n -= n % 4
            x = torch.randn(1, k)
            pool = [torch.randn(n, k) for _ in range(max(2, 200_000_000 // (n * k * 4)))]
            quantized = [quantize_rows(w) for w in pool]
            q, scale = quantized[0]
            reference = x.double() @ (q.double() * scale.double()[:, None]).T
            got = int8_ext.gemv_i8(x, q, scale)
            assert torch.allclose(got.double(), reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item()), name
            assert torch.equal(float32_ext.gemv(x, pool[0]), torch.nn.functional.linear(x, pool[0])), name
            counter = iter(range(10**9))
            times[(name, "float32")].append(median_us(lambda: float32_ext.gemv(x, pool[next(counter) % len(pool)])))
            times[(name, "int8")].append(median_us(lambda: int8_ext.gemv_i8(x, *quantized[next(counter) % len(pool)])))
            del pool, quantized
    return {name: {kind: statistics.median(times[(name, kind)]) for kind in ("float32", "int8")} for name in SHAPES}


def report(r: dict) -> str:
    w = r["words"]
    lines = [f"# Weight-only int8 for the CPU text decoder: tiny.en, {r['threads']} threads", "",
             f"torch {r['torch']}. Files: {', '.join(w['files'])}.", "",
             "| decoder weights (activations float32) | WER vs reference | WER vs float32 | files with float32's text |",
             "|---|---|---|---|",
             f"| float32 | {w['float32_vs_reference']:.4f} | 0 | {len(w['files'])} |"]
    lines += [f"| {name} | {v['vs_reference']:.4f} | {v['vs_float32']:.4f} | {v['identical_files']} |"
              for name, v in w["variants"].items()]
    lines += ["",
             "| product | [N, K] | calls a step | float32 us (cpu_gemv.cpp) | int8 us | float32 / int8 |",
             "|---|---|---|---|---|---|"]
    step = {"float32": 0.0, "int8": 0.0}
    for name, ((n, k), calls) in SHAPES.items():
        t = r["times_us"][name]
        step = {kind: step[kind] + calls * t[kind] for kind in step}
        lines.append(f"| {name} | [{n}, {k}] | {calls} | {t['float32']:.0f} | {t['int8']:.0f} | "
                     f"{t['float32'] / t['int8']:.2f} |")
    lines += ["", f"Their sum over one step: float32 {step['float32'] / 1e3:.2f} ms, int8 {step['int8'] / 1e3:.2f} ms."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "torch": torch.__version__, "times_us": time_part(args.repeats, args.rounds),
              "words": word_part(args.threads)}
    text = report(result)
    print(text)
    write_outputs(args.out, json.loads(json.dumps(result)), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
