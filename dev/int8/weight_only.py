"""Experiment (not shipped): int8 or 16-bit weights with float32 activations for the CPU text decoder.

    python dev/int8/weight_only.py --threads 2 --rounds 2 --out dev/int8/weight-only-tiny-en

The one-token step of the CPU decoder reads its weights from memory (tiny.en: 80 MB of vocabulary projection and
28 MB of Linears in float32). Weight-only int8 reads a quarter of those bytes and keeps every activation in
float32, unlike torch's dynamic quantization (dev/int8/int8_decoder.py), which also rounds each activation row to
int8 and lost 5 to 11 points of word error rate.

1. Words. The text decoder's weights (its Linears, its token embedding, which is also the vocabulary projection,
   or both) are rounded as VARIANTS says (int8 with one symmetric scale per output row or per 32 inputs of a
   row, or float16 / bfloat16) and turned back into float32: the products a weight-only kernel computes, up to
   the order of its sums. fastwhisper (decoder="cpp", greedy with temperature fallback, English) transcribes
   the English clips of audio_samples/manifest.json and the second long clip with those weights and with the
   real ones. The word error rate is over all files together, against the reference texts and against the
   float32 transcripts.
2. Time. One-row kernels (AVX2, four rows at a time, a prefetch 8 KB ahead): int8 per row and per 32 inputs
   (8 int8 weights widened to float32 per FMA) and float16 (F16C widening), against the product's float32
   kernel (csrc/decoder/cpu_gemv.cpp, built as in dev/profile/cpu_step_parts.py) on tiny.en's one-row shapes,
   the weight from a pool larger than the caches; each checked first against float64 of the weights it stores.
   --words-only skips this part.
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

// The same with one scale per 32 inputs: scale [N, K / 32]; each group's sum is scaled as it is added.
static void rows_i8_g32(const float* x, const int8_t* q, const float* scale, float* y, int64_t begin, int64_t end,
                        int64_t k) {
  const int64_t groups = k / 32;
  for (int64_t n = begin; n < end; n += 4) {
    const int8_t* q0 = q + n * k;
    for (int64_t i = 0; i < 4 * k; i += 64) _mm_prefetch(reinterpret_cast<const char*>(q0 + 8192 + i), _MM_HINT_T0);
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t g = 0; g < groups; ++g) {
      for (int r = 0; r < 4; ++r) {
        const int8_t* qr = q0 + r * k + 32 * g;
        const float* xg = x + 32 * g;
        __m256 t = _mm256_mul_ps(widen(qr), _mm256_loadu_ps(xg));
        t = _mm256_fmadd_ps(widen(qr + 8), _mm256_loadu_ps(xg + 8), t);
        t = _mm256_fmadd_ps(widen(qr + 16), _mm256_loadu_ps(xg + 16), t);
        t = _mm256_fmadd_ps(widen(qr + 24), _mm256_loadu_ps(xg + 24), t);
        a[r] = _mm256_fmadd_ps(t, _mm256_set1_ps(scale[(n + r) * groups + g]), a[r]);
      }
    }
    for (int r = 0; r < 4; ++r) y[n + r] = hsum(a[r]);
  }
}

// y[n] = sum_k x[k] h[n, k] with h float16 (F16C widening), four rows at a time
static void rows_f16(const float* x, const at::Half* h, float* y, int64_t begin, int64_t end, int64_t k) {
  for (int64_t n = begin; n < end; n += 4) {
    const at::Half* h0 = h + n * k;
    for (int64_t i = 0; i < 4 * k; i += 32) _mm_prefetch(reinterpret_cast<const char*>(h0 + 4096 + i), _MM_HINT_T0);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < k; i += 8) {
      const __m256 xv = _mm256_loadu_ps(x + i);
      a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h0 + i))), xv, a0);
      a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h0 + k + i))), xv, a1);
      a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h0 + 2 * k + i))), xv, a2);
      a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h0 + 3 * k + i))), xv, a3);
    }
    y[n] = hsum(a0);
    y[n + 1] = hsum(a1);
    y[n + 2] = hsum(a2);
    y[n + 3] = hsum(a3);
  }
}

// x [1, K] float32, h [N, K] float16 (N a multiple of 4, K of 8) -> [1, N] float32
torch::Tensor gemv_f16(torch::Tensor x, torch::Tensor h) {
  TORCH_CHECK(h.size(0) % 4 == 0 && h.size(1) % 8 == 0 && h.is_contiguous() && x.is_contiguous() &&
              h.scalar_type() == at::kHalf);
  const int64_t n = h.size(0), k = h.size(1);
  auto out = torch::empty({1, n}, x.options());
  const float* xp = x.data_ptr<float>();
  const at::Half* hp = h.data_ptr<at::Half>();
  float* yp = out.data_ptr<float>();
  at::parallel_for(0, n / 4, 16, [&](int64_t f, int64_t l) { rows_f16(xp, hp, yp, 4 * f, 4 * l, k); });
  return out;
}

// x [1, K] float32, q [N, K] int8 (N a multiple of 4, K of 8), scale [N] (one per row) or [N, K / 32] (one per 32
// inputs, K a multiple of 32) float32 -> [1, N] float32
torch::Tensor gemv_i8(torch::Tensor x, torch::Tensor q, torch::Tensor scale) {
  const bool groups = scale.dim() == 2;
  TORCH_CHECK(q.size(0) % 4 == 0 && q.size(1) % (groups ? 32 : 8) == 0 && q.is_contiguous() && x.is_contiguous() &&
              scale.is_contiguous() && scale.numel() == (groups ? q.numel() / 32 : q.size(0)));
  const int64_t n = q.size(0), k = q.size(1);
  auto out = torch::empty({1, n}, x.options());
  const float* xp = x.data_ptr<float>();
  const int8_t* qp = q.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  float* yp = out.data_ptr<float>();
  at::parallel_for(0, n / 4, 16, [&](int64_t f, int64_t l) {
    if (groups) {
      rows_i8_g32(xp, qp, sp, yp, 4 * f, 4 * l, k);
    } else {
      rows_i8(xp, qp, sp, yp, 4 * f, 4 * l, k);
    }
  });
  return out;
}
"""



def quantize(weight: torch.Tensor, group: int = 0):
    """int8 weight [N, K] and float32 scales [N, K / group] (symmetric, max |w| of a group -> 127; group 0: a row)."""
    n, k = weight.shape
    blocks = weight.reshape(n, -1, group if group else k)
    scale = (blocks.abs().amax(dim=2, keepdim=True) / 127).clamp_min(1e-12)
    q = torch.round(blocks / scale).clamp(-127, 127)
    return q.to(torch.int8).reshape(n, k), scale.squeeze(2).float().contiguous()


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """The weights an int8 kernel multiplies by: q times its group's scale."""
    n, k = q.shape
    return (q.to(dtype).reshape(n, scale.shape[1], -1) * scale.to(dtype)[..., None]).reshape(n, k)


def fake_quantize(weight: torch.Tensor, group: int) -> torch.Tensor:
    """weight rounded to int8 with one scale per `group` consecutive inputs of a row (0: the whole row)."""
    return dequantize(*quantize(weight, group))


def rounded(weight: torch.Tensor, spec) -> torch.Tensor:
    """weight as a kernel with storage `spec` sees it: ("int8", group) or ("float16", 0) / ("bfloat16", 0)."""
    kind, group = spec
    if kind == "int8":
        return fake_quantize(weight, group)
    return weight.to(getattr(torch, kind)).float()


# name: {"linears": storage of the blocks' Linear weights, "embedding": of the token embedding (which is also
# the vocabulary projection)}; None keeps float32. A storage: ("int8", inputs per scale (0: a row)) or
# ("float16" | "bfloat16", 0).
VARIANTS = {
    "int8 per row: Linears and embedding": {"linears": ("int8", 0), "embedding": ("int8", 0)},
    "int8 per row: Linears only": {"linears": ("int8", 0)},
    "int8 per row: embedding (the vocabulary projection) only": {"embedding": ("int8", 0)},
    "int8 per 32 inputs: Linears and embedding": {"linears": ("int8", 32), "embedding": ("int8", 32)},
    "int8 per 32 inputs: Linears only": {"linears": ("int8", 32)},
    "int8 per 32 inputs: embedding only": {"embedding": ("int8", 32)},
    "float16: embedding only": {"embedding": ("float16", 0)},
    "bfloat16: embedding only": {"embedding": ("bfloat16", 0)},
    "float16: Linears and embedding": {"linears": ("float16", 0), "embedding": ("float16", 0)},
    "int8 per 32 inputs: Linears; float16: embedding": {"linears": ("int8", 32), "embedding": ("float16", 0)},
}


def fake_quantized_decoder(model, storage: dict):
    """A copy of model whose text decoder's weight matrices are rounded as `storage` says (float32 storage)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in model.decoder.named_parameters():
            if param.dim() != 2 or name == "positional_embedding":
                continue
            spec = storage.get("embedding" if name == "token_embedding.weight" else "linears")
            if spec is not None:
                param.copy_(rounded(param.float(), spec))
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
    for name, storage in VARIANTS.items():
        int8 = words(fake_quantized_decoder(model, storage), clips)
        result["variants"][name] = {"vs_reference": normalized_wer(reference, " ".join(int8)),
                                    "vs_float32": normalized_wer(" ".join(float32), " ".join(int8)),
                                    "identical_files": sum(a == b for a, b in zip(float32, int8))}
    return result


KERNELS = ("float32", "int8 per row", "int8 per 32", "float16")


def time_part(repeats: int, rounds: int) -> dict:
    ext = load_inline("weight_only_int8", cpp_sources=INT8_SOURCE, functions=["gemv_i8", "gemv_f16"],
                      extra_cflags=["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp"], extra_ldflags=["-fopenmp"])
    float32_ext = build_float32_gemv(ROOT)

    def median_us(fn):
        return statistics.median(time_calls(fn, "cpu", warmup=5, repeats=repeats)) * 1e3

    times = {(name, kind): [] for name in SHAPES for kind in KERNELS}
    for _ in range(rounds):
        for name, ((n, k), _) in SHAPES.items():
            n -= n % 4
            x = torch.randn(1, k)
            pool = [torch.randn(n, k) for _ in range(max(2, 200_000_000 // (n * k * 4)))]
            stored = {"int8 per row": [(q, scale[:, 0]) for q, scale in map(quantize, pool)],
                      "int8 per 32": [quantize(w, 32) for w in pool],
                      "float16": [(w.half(),) for w in pool]}
            kernels = {"int8 per row": ext.gemv_i8, "int8 per 32": ext.gemv_i8, "float16": ext.gemv_f16}
            # validation before timing: each kernel against float64 of the weights it stores
            dense = {"int8 per row": dequantize(*quantize(pool[0]), torch.float64),
                     "int8 per 32": dequantize(*quantize(pool[0], 32), torch.float64),
                     "float16": stored["float16"][0][0].double()}
            for kind, fn in kernels.items():
                expected = x.double() @ dense[kind].T
                got = fn(x, *stored[kind][0])
                assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item()), \
                    (name, kind)
            assert torch.equal(float32_ext.gemv(x, pool[0]), torch.nn.functional.linear(x, pool[0])), name
            counter = iter(range(10**9))
            times[(name, "float32")].append(median_us(lambda: float32_ext.gemv(x, pool[next(counter) % len(pool)])))
            for kind, fn in kernels.items():
                times[(name, kind)].append(median_us(
                    lambda: fn(x, *stored[kind][next(counter) % len(pool)])))  # noqa: B023 (timed at once)
            del pool, stored
    return {name: {kind: statistics.median(times[(name, kind)]) for kind in KERNELS} for name in SHAPES}


def report(r: dict) -> str:
    w = r["words"]
    lines = [f"# Weight-only int8 for the CPU text decoder: tiny.en, {r['threads']} threads", "",
             f"torch {r['torch']}. Files: {', '.join(w['files'])}.", "",
             "| decoder weights (activations float32) | WER vs reference | WER vs float32 | files with float32's text |",
             "|---|---|---|---|",
             f"| float32 | {w['float32_vs_reference']:.4f} | 0 | {len(w['files'])} |"]
    lines += [f"| {name} | {v['vs_reference']:.4f} | {v['vs_float32']:.4f} | {v['identical_files']} |"
              for name, v in w["variants"].items()]
    if not r["times_us"]:
        return "\n".join(lines)
    lines += ["", "Microseconds per one-row product (float32: the product's kernel, cpu_gemv.cpp):", "",
              "| product | [N, K] | calls a step | " + " | ".join(KERNELS) + " |",
              "|---|---|---|" + "---|" * len(KERNELS)]
    step = dict.fromkeys(KERNELS, 0.0)
    for name, ((n, k), calls) in SHAPES.items():
        t = r["times_us"][name]
        step = {kind: step[kind] + calls * t[kind] for kind in KERNELS}
        lines.append(f"| {name} | [{n}, {k}] | {calls} | " + " | ".join(f"{t[kind]:.0f}" for kind in KERNELS) + " |")
    lines += ["", "Their sum over one step: " + ", ".join(f"{kind} {step[kind] / 1e3:.2f} ms" for kind in KERNELS)
              + "."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path)
    p.add_argument("--words-only", action="store_true", help="skip the kernels' timing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    times = {} if args.words_only else time_part(args.repeats, args.rounds)
    result = {"threads": args.threads, "torch": torch.__version__, "times_us": times,
              "words": word_part(args.threads)}
    text = report(result)
    print(text)
    write_outputs(args.out, json.loads(json.dumps(result)), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
