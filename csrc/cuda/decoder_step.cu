// CUDA kernels of the decoder's one-token step (CPU reference: cpu/decoder_step.cpp).
//
// decoder_linear: a matrix-vector product for at most 8 rows. A GEMM library tiles for large M; at
// M <= 8 the step is a pass over the weights, so each warp streams weight rows with 16-byte loads
// and keeps every input row in shared memory. A kernel issues its first weight loads before it waits
// for the kernel that produces its input (PDL, see device_utils.cuh), so the weights stream while the
// previous kernel finishes. Long rows are split over up to 8 warps (their partial sums meet in shared
// memory) so that every row's loads are in flight at once. The optional LayerNorm of the input runs
// in the same kernel (each block normalizes the few input rows itself), and bias, GELU and the
// residual add are applied to the accumulator before the single store. Rounding follows whisper's
// ops: the LayerNorm output, the linear output (bias added in fp32), the GELU output and the residual
// sum are each rounded to the activation dtype.
//
// decoder_self_attention: one block per (row, head) writes the new K/V at the position read from
// device memory (so a CUDA graph can replay it for every position) and attends over positions 0..p:
// one key per thread (16-byte loads), then the value sum with one 16-byte slice of the head per thread.
#include <torch/library.h>

#include <cmath>

#include "checks.h"
#include "cuda/device_utils.cuh"
#include "gelu.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kMaxSegments = 3;
constexpr int kLinearWarps = 8;  // >= kDecoderMaxRows: one warp normalizes each input row
constexpr int kMaxSplit = 8;     // warps sharing one weight row at most (kLinearWarps)
constexpr int kLinearBlocksPerSm = 4;  // resident blocks per SM the register budget is capped for (one wave)

template <typename T>
struct Segments {
  const T* weight[kMaxSegments];  // weight[i]: [end[i] - end[i-1], K] row-major
  const T* bias[kMaxSegments];    // [end[i] - end[i-1]] or nullptr
  int64_t end[kMaxSegments];      // cumulative output-column ends
  int count;
};

// Input rows -> shared memory h [rows, K] (16-byte copies by every thread), then, when ln_w is given,
// whisper's LayerNorm of each row in place: fp32 mean, then fp32 variance around it (two passes over
// shared memory, every thread taking a share of every row), output rounded to T. Ends with a barrier.
template <typename T, int kMaxRows>
__device__ void load_input_rows(const T* __restrict__ x, const float* __restrict__ ln_w,
                                const float* __restrict__ ln_b, T* h, int rows, int64_t K) {
  constexpr int V = Pack<T>::kSize;
  __shared__ float red[kLinearWarps][kMaxRows];
  __shared__ float stat[kMaxRows];
  const int64_t n_vec = K / V;  // K % V == 0 (checked on the host)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  auto* hv = reinterpret_cast<Pack<T>*>(h);
  const auto* src = reinterpret_cast<const Pack<T>*>(x);
  for (int64_t i = threadIdx.x; i < rows * n_vec; i += blockDim.x) hv[i] = src[i];
  __syncthreads();
  if (ln_w == nullptr) return;
  // per row: the block's sum of f(value), f = value (mean) or (value - mean)^2 (variance)
  auto row_sums = [&](bool centered, float* result) {
    float s[kMaxRows];
#pragma unroll
    for (int m = 0; m < kMaxRows; ++m) {
      s[m] = 0.f;
      if (m < rows) {
        const float mean = centered ? stat[m] : 0.f;
        for (int64_t i = threadIdx.x; i < n_vec; i += blockDim.x) {
          const Pack<T> p = hv[m * n_vec + i];
#pragma unroll
          for (int j = 0; j < V; ++j) {
            const float v = static_cast<float>(p.v[j]) - mean;
            s[m] += centered ? v * v : v;
          }
        }
      }
      s[m] = warp_sum(s[m]);
      if (lane == 0) red[warp][m] = s[m];
    }
    __syncthreads();
    if (threadIdx.x < rows) {
      float total = 0.f;
      for (int w = 0; w < kLinearWarps; ++w) total += red[w][threadIdx.x];
      result[threadIdx.x] = total;
    }
    __syncthreads();
  };
  __shared__ float mean_of[kMaxRows], var_of[kMaxRows];
  row_sums(false, mean_of);
  if (threadIdx.x < rows) stat[threadIdx.x] = mean_of[threadIdx.x] / static_cast<float>(K);
  __syncthreads();
  row_sums(true, var_of);
  if (threadIdx.x < rows) var_of[threadIdx.x] = rsqrtf(var_of[threadIdx.x] / static_cast<float>(K) + 1e-5f);
  __syncthreads();
  const auto* wv = reinterpret_cast<const float4*>(ln_w);  // [K / 4]: V is a multiple of 4
  const auto* bv = reinterpret_cast<const float4*>(ln_b);
  for (int64_t idx = threadIdx.x; idx < rows * n_vec; idx += blockDim.x) {
    const int m = static_cast<int>(idx / n_vec);
    const int64_t i = idx % n_vec;
    const float mean = stat[m], rstd = var_of[m];
    Pack<T> p = hv[idx];
#pragma unroll
    for (int j4 = 0; j4 < V / 4; ++j4) {
      const float4 g = wv[i * (V / 4) + j4], b = bv[i * (V / 4) + j4];
      const float gs[4] = {g.x, g.y, g.z, g.w}, bs[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        p.v[j4 * 4 + j] = static_cast<T>((static_cast<float>(p.v[j4 * 4 + j]) - mean) * rstd * gs[j] + bs[j]);
      }
    }
    hv[idx] = p;
  }
  __syncthreads();
}

// Block of kLinearWarps warps; `split` warps share each group of kCols output columns, each taking
// a contiguous K / split slice of the weight rows; a block tile is (kLinearWarps / split) * kCols
// columns. The grid is at most one resident wave (kLinearBlocksPerSm blocks per SM) and each block
// loops over tiles, so the input rows are normalized once per block and no block waits for a second
// wave. kVecs: 16-byte vectors per lane and column loaded per round (the first round of the first
// tile is issued before the wait for the producer of x).
template <typename T, int kMaxRows, int kCols, int kVecs>
__global__ void __launch_bounds__(kLinearWarps * 32, kLinearBlocksPerSm)
    decoder_linear_kernel(const T* __restrict__ x,           // [rows, K]
                          const float* __restrict__ ln_w,    // [K] or nullptr (no LayerNorm)
                          const float* __restrict__ ln_b,    // [K]
                          const Segments<T> seg,             // weights [N_i, K], biases [N_i]
                          const T* __restrict__ residual,    // [rows, N] or nullptr
                          T* __restrict__ out,               // [rows, N] (out_float == nullptr)
                          float* __restrict__ out_float,     // [rows, N] or nullptr
                          int rows, int64_t K, int64_t N, int split, bool apply_gelu) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* h = reinterpret_cast<T*>(smem_raw);  // [rows, K]: the (normalized) input rows
  __shared__ float partial[kLinearWarps][kCols][kMaxRows];
  constexpr int V = Pack<T>::kSize;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int part = warp % split;
  const int64_t tile_cols = static_cast<int64_t>(kLinearWarps / split) * kCols;
  const int64_t n_tiles = (N + tile_cols - 1) / tile_cols;
  const int64_t k_len = K / split;  // K % (split * V) == 0 (host)
  const int64_t k_begin = part * k_len, k_end = k_begin + k_len;

  const T* wrow[kCols];
  Pack<T> w[kVecs][kCols];
  // weight rows of this warp's columns in a tile
  auto find_rows = [&](int64_t tile) {
    const int64_t col0 = tile * tile_cols + (warp / split) * kCols;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const int64_t n = col0 + c;
      wrow[c] = nullptr;
      if (n < N) {
        int i = 0;
        while (i + 1 < seg.count && n >= seg.end[i]) ++i;
        wrow[c] = seg.weight[i] + (n - (i == 0 ? 0 : seg.end[i - 1])) * K;
      }
    }
    return col0;
  };
  auto load_round = [&](int64_t base) {
#pragma unroll
    for (int u = 0; u < kVecs; ++u) {
      const int64_t k = base + (static_cast<int64_t>(u) * 32 + lane) * V;
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        if (k < k_end && wrow[c] != nullptr) w[u][c] = *reinterpret_cast<const Pack<T>*>(wrow[c] + k);
      }
    }
  };

  // 1. the first tile's first round of weights, before the input exists
  int64_t tile = blockIdx.x;
  int64_t col0 = find_rows(tile);
  load_round(k_begin);
  wait_for_producers();
  allow_dependents();

  // 2. input rows into shared memory
  load_input_rows<T, kMaxRows>(x, ln_w, ln_b, h, rows, K);

  // 3. per tile: multiply the weight vectors with every input row (loading the next rounds), reduce
  //    over the warp and then over the `split` warps of a column group; lane m of the group's first
  //    warp applies the epilogue to row m and stores it. Every warp of the block runs every tile.
  for (; tile < n_tiles; tile += gridDim.x) {
    float acc[kCols][kMaxRows];
#pragma unroll
    for (int c = 0; c < kCols; ++c)
#pragma unroll
      for (int m = 0; m < kMaxRows; ++m) acc[c][m] = 0.f;
    for (int64_t base = k_begin; base < k_end; base += 32 * V * kVecs) {
      if (base != k_begin) load_round(base);
#pragma unroll
      for (int u = 0; u < kVecs; ++u) {
        const int64_t k = base + (static_cast<int64_t>(u) * 32 + lane) * V;
        if (k >= k_end) break;
#pragma unroll
        for (int m = 0; m < kMaxRows; ++m) {
          if (m < rows) {
            const Pack<T> hv = *reinterpret_cast<const Pack<T>*>(h + m * K + k);
#pragma unroll
            for (int c = 0; c < kCols; ++c) {
#pragma unroll
              for (int j = 0; j < V; ++j) acc[c][m] += static_cast<float>(w[u][c].v[j]) * static_cast<float>(hv.v[j]);
            }
          }
        }
      }
    }
    // the next tile's first round streams while this tile is reduced and stored
    const int64_t this_col0 = col0;
    if (tile + gridDim.x < n_tiles) {
      col0 = find_rows(tile + gridDim.x);
      load_round(k_begin);
    }
#pragma unroll
    for (int c = 0; c < kCols; ++c)
#pragma unroll
      for (int m = 0; m < kMaxRows; ++m) {
        const float total = warp_sum(acc[c][m]);
        if (lane == 0) partial[warp][c][m] = total;
      }
    __syncthreads();
    if (part == 0) {
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int64_t n = this_col0 + c;
        const int m = lane;
        if (m < rows && n < N) {
          float total = 0.f;
          for (int s = 0; s < split; ++s) total += partial[warp + s][c][m];
          int i = 0;
          while (i + 1 < seg.count && n >= seg.end[i]) ++i;
          const T* bias = seg.bias[i];
          const float b = bias == nullptr ? 0.f : static_cast<float>(bias[n - (i == 0 ? 0 : seg.end[i - 1])]);
          T y = static_cast<T>(total + b);  // the Linear's output
          if (apply_gelu) y = static_cast<T>(gelu(static_cast<float>(y)));
          if (residual != nullptr) y = static_cast<T>(static_cast<float>(residual[m * N + n]) + static_cast<float>(y));
          if (out_float != nullptr) {
            out_float[m * N + n] = static_cast<float>(y);
          } else {
            out[m * N + n] = y;
          }
        }
      }
    }
    __syncthreads();  // partial[] is reused by the next tile
  }
}

template <typename T>
__global__ void decoder_self_attention_kernel(const T* __restrict__ qkv,            // [R, 3d]
                                              T* __restrict__ k_cache,              // [R, n_ctx, d]
                                              T* __restrict__ v_cache,              // [R, n_ctx, d]
                                              const int64_t* __restrict__ position, // [1]
                                              T* __restrict__ out,                  // [R, d]
                                              int64_t n_ctx, int64_t d, int head_dim, float scale) {
  extern __shared__ float sm[];  // q [head_dim], scores [n_ctx], partial sums [blockDim.x / vecs][head_dim]
  __shared__ float red[32];
  constexpr int V = Pack<T>::kSize;
  const int vecs = head_dim / V;  // 16-byte slices of one head (head_dim % V == 0, host)
  float* q = sm;
  float* scores = sm + head_dim;
  float* partial = scores + n_ctx;
  const int64_t r = blockIdx.x;
  const int head = blockIdx.y;
  wait_for_producers();
  allow_dependents();
  const int64_t p = *position;
  T* o = out + r * d + static_cast<int64_t>(head) * head_dim;
  if (p < 0 || p >= n_ctx) {  // no sync possible inside a graph: make the error visible in the output
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) o[i] = static_cast<T>(NAN);
    return;
  }
  const T* src = qkv + r * 3 * d + static_cast<int64_t>(head) * head_dim;
  T* kc = k_cache + r * n_ctx * d + static_cast<int64_t>(head) * head_dim;
  T* vc = v_cache + r * n_ctx * d + static_cast<int64_t>(head) * head_dim;
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
    q[i] = static_cast<float>(src[i]) * scale;
    kc[p * d + i] = src[d + i];
    vc[p * d + i] = src[2 * d + i];
  }
  __syncthreads();  // the new K/V and q are visible to the whole block

  // scores: one key per thread, read as 16-byte slices
  float local_max = -INFINITY;
  for (int64_t t = threadIdx.x; t <= p; t += blockDim.x) {
    const auto* key = reinterpret_cast<const Pack<T>*>(kc + t * d);
    float s = 0.f;
    for (int i = 0; i < vecs; ++i) {
      const Pack<T> kv = key[i];
#pragma unroll
      for (int j = 0; j < V; ++j) s += q[i * V + j] * static_cast<float>(kv.v[j]);
    }
    scores[t] = s;
    local_max = fmaxf(local_max, s);
  }
  const float max_score = block_reduce<true>(local_max, red);
  float local_sum = 0.f;
  for (int64_t t = threadIdx.x; t <= p; t += blockDim.x) {
    const float e = __expf(scores[t] - max_score);
    scores[t] = e;
    local_sum += e;
  }
  const float sum = block_reduce<false>(local_sum, red);  // its barriers also publish scores[]

  // weighted values: thread = (slice i of the head, key group g)
  const int i = threadIdx.x % vecs, g = threadIdx.x / vecs, n_groups = blockDim.x / vecs;
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.f;
  for (int64_t t = g; t <= p; t += n_groups) {
    const Pack<T> vv = reinterpret_cast<const Pack<T>*>(vc + t * d)[i];
    const float e = scores[t];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] += e * static_cast<float>(vv.v[j]);
  }
#pragma unroll
  for (int j = 0; j < V; ++j) partial[g * head_dim + i * V + j] = acc[j];
  __syncthreads();
  for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
    float total = 0.f;
    for (int gg = 0; gg < n_groups; ++gg) total += partial[gg * head_dim + c];
    o[c] = static_cast<T>(total / sum);
  }
}

// Warps sharing one weight row (at most max_split): enough that each warp's slice fits one round of
// kVecs vectors per lane, where K allows an even split into 16-byte vectors.
int linear_split(int64_t k, int64_t vec, int vecs_per_round, int max_split) {
  int split = 1;
  while (split < max_split && k / split > 32 * vec * vecs_per_round && k % (2 * split * vec) == 0) split *= 2;
  return split;
}

template <typename T, int kMaxRows, int kCols, int kVecs>
void launch_linear(const at::Tensor& x, const float* ln_w, const float* ln_b, const Segments<T>& seg,
                   const T* residual, T* out, float* out_float, int64_t n, bool apply_gelu) {
  const int64_t k = x.size(1);
  const size_t smem = static_cast<size_t>(x.size(0) * k) * sizeof(T);
  auto kernel = decoder_linear_kernel<T, kMaxRows, kCols, kVecs>;
  // The kernel's static shared memory counts against the same 48 KiB default: raise the limit from
  // 40 KiB of dynamic memory on (a launch over the limit fails with 'invalid argument').
  static size_t smem_allowed = 40 * 1024;  // raised once per kernel (the eager warm-up runs before any graph capture)
  if (smem > smem_allowed) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    smem_allowed = smem;
  }
  // several columns per warp (the vocabulary projection): whole rows per warp, so that each block
  // normalizes its input once for kLinearWarps * kCols columns
  const int split = linear_split(k, Pack<T>::kSize, kVecs, kCols == 1 ? kMaxSplit : 1);
  const int64_t cols_per_block = static_cast<int64_t>(kLinearWarps / split) * kCols;
  static int per_sm = 0;  // resident blocks per SM at the shared memory size last asked about
  static size_t per_sm_smem = 0;
  if (per_sm == 0 || per_sm_smem != smem) {
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kLinearWarps * 32, smem));
    per_sm = std::max(per_sm, 1);
    per_sm_smem = smem;
  }
  const int64_t wave = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * per_sm;
  const auto blocks = static_cast<unsigned int>(std::min(ceil_div(n, cols_per_block), wave));
  launch_pdl(kernel, dim3(blocks), dim3(kLinearWarps * 32), smem, x.data_ptr<T>(), ln_w, ln_b, seg, residual, out,
             out_float, static_cast<int>(x.size(0)), k, n, split, apply_gelu);
}

template <typename T, int kCols, int kVecs>
void launch_linear_rows(const at::Tensor& x, const float* ln_w, const float* ln_b, const Segments<T>& seg,
                        const T* residual, T* out, float* out_float, int64_t n, bool apply_gelu) {
  const int64_t rows = x.size(0);
  if (rows <= 1) return launch_linear<T, 1, kCols, kVecs>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  if (rows <= 2) return launch_linear<T, 2, kCols, kVecs>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  if (rows <= 4) return launch_linear<T, 4, kCols, kVecs>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  return launch_linear<T, kDecoderMaxRows, kCols, kVecs>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
}

}  // namespace

at::Tensor decoder_linear(const at::Tensor& x, const std::optional<at::Tensor>& ln_weight,
                          const std::optional<at::Tensor>& ln_bias, at::TensorList weights,
                          const c10::List<std::optional<at::Tensor>>& biases, const std::optional<at::Tensor>& residual,
                          bool gelu_act, bool float_output) {
  const std::vector<at::Tensor> w = weights.vec();
  std::vector<std::optional<at::Tensor>> b(biases.begin(), biases.end());
  check_decoder_linear_args(c10::DeviceType::CUDA, x, ln_weight, ln_bias, w, b, residual);
  const int64_t k = x.size(1);
  TORCH_CHECK(k % (16 / x.element_size()) == 0, "fastwhisper.decoder_linear (CUDA): the feature count ", k,
              " must be a multiple of ", 16 / x.element_size(), " (16-byte rows)");
  for (size_t i = 0; i < w.size(); ++i) {
    TORCH_CHECK(reinterpret_cast<uintptr_t>(w[i].data_ptr()) % 16 == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0,
                "fastwhisper.decoder_linear (CUDA): x and weights must start at 16-byte aligned addresses");
  }
  const c10::cuda::CUDAGuard guard(x.device());
  int64_t n = 0;
  for (const auto& t : w) n += t.size(0);
  at::Tensor out = at::empty({x.size(0), n}, x.options().dtype(float_output ? at::kFloat : x.scalar_type()));
  FASTWHISPER_DISPATCH_FLOATS(x.scalar_type(), "fastwhisper_decoder_linear", [&] {
    Segments<scalar_t> seg{};
    seg.count = static_cast<int>(w.size());
    int64_t end = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      seg.weight[i] = w[i].data_ptr<scalar_t>();
      seg.bias[i] = b[i].has_value() ? b[i]->data_ptr<scalar_t>() : nullptr;
      end += w[i].size(0);
      seg.end[i] = end;
    }
    TORCH_CHECK(!ln_weight.has_value() || (reinterpret_cast<uintptr_t>(ln_weight->data_ptr()) % 16 == 0 &&
                                           reinterpret_cast<uintptr_t>(ln_bias->data_ptr()) % 16 == 0),
                "fastwhisper.decoder_linear (CUDA): ln_weight and ln_bias must start at 16-byte aligned addresses");
    const float* ln_w = ln_weight.has_value() ? ln_weight->data_ptr<float>() : nullptr;
    const float* ln_b = ln_bias.has_value() ? ln_bias->data_ptr<float>() : nullptr;
    const scalar_t* res = residual.has_value() ? residual->data_ptr<scalar_t>() : nullptr;
    scalar_t* o = float_output ? nullptr : out.data_ptr<scalar_t>();
    float* of = float_output ? out.data_ptr<float>() : nullptr;
    if (n >= 16384) {  // the vocabulary projection: more columns per warp, fewer LayerNorm recomputations
      launch_linear_rows<scalar_t, 4, 2>(x, ln_w, ln_b, seg, res, o, of, n, gelu_act);
    } else {  // one column per warp (or per `split` warps): the most warps streaming weights
      launch_linear_rows<scalar_t, 1, 8>(x, ln_w, ln_b, seg, res, o, of, n, gelu_act);
    }
  });
  return out;
}

at::Tensor decoder_self_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                                  const at::Tensor& position, int64_t n_head) {
  check_decoder_self_attention_args(c10::DeviceType::CUDA, qkv, k_cache, v_cache, position, n_head);
  const int64_t rows = k_cache.size(0), n_ctx = k_cache.size(1), d = k_cache.size(2), head_dim = d / n_head;
  constexpr int kThreads = 256;
  const int64_t vec = 16 / qkv.element_size();
  TORCH_CHECK(head_dim % vec == 0 && kThreads % (head_dim / vec) == 0, "fastwhisper.decoder_self_attention (CUDA): "
              "head size ", head_dim, " must be a multiple of ", vec, " whose ", vec, "-element slices divide ", kThreads);
  TORCH_CHECK(reinterpret_cast<uintptr_t>(k_cache.data_ptr()) % 16 == 0 &&
                  reinterpret_cast<uintptr_t>(v_cache.data_ptr()) % 16 == 0,
              "fastwhisper.decoder_self_attention (CUDA): k_cache and v_cache must start at 16-byte aligned addresses");
  const c10::cuda::CUDAGuard guard(qkv.device());
  at::Tensor out = at::empty({rows, d}, qkv.options());
  const size_t smem = static_cast<size_t>(head_dim + n_ctx + kThreads * vec) * sizeof(float);
  TORCH_CHECK(smem <= 48 * 1024, "fastwhisper.decoder_self_attention (CUDA): n_ctx ", n_ctx, " is too long");
  const dim3 grid(static_cast<unsigned int>(rows), static_cast<unsigned int>(n_head));
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  FASTWHISPER_DISPATCH_FLOATS(qkv.scalar_type(), "fastwhisper_decoder_self_attention", [&] {
    launch_pdl(decoder_self_attention_kernel<scalar_t>, grid, dim3(kThreads), smem, qkv.data_ptr<scalar_t>(),
               k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(), position.data_ptr<int64_t>(),
               out.data_ptr<scalar_t>(), n_ctx, d, static_cast<int>(head_dim), scale);
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) {
  m.impl("decoder_linear", &decoder_linear);
  m.impl("decoder_self_attention", &decoder_self_attention);
}

}  // namespace fastwhisper::cuda
