// CUDA kernels of the decoder's one-token step (CPU reference: cpu/decoder_step.cpp).
//
// decoder_linear: a matrix-vector product for at most 8 rows. A GEMM library tiles for large M; at
// M <= 8 the step is a pass over the weights, so each warp streams whole weight rows with 16-byte
// loads and keeps every input row in shared memory. The optional LayerNorm of the input runs in the
// same kernel (each block normalizes the few input rows itself), and bias, GELU and the residual add
// are applied to the accumulator before the single store. Rounding follows whisper's ops: the
// LayerNorm output, the linear output (bias added in fp32), the GELU output and the residual sum are
// each rounded to the activation dtype.
//
// decoder_self_attention: one block per (row, head) writes the new K/V at the position read from
// device memory (so a CUDA graph can replay it for every position) and attends over positions 0..p.
#include <torch/library.h>

#include <cmath>

#include "checks.h"
#include "gelu.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kMaxSegments = 3;
constexpr int kLinearWarps = 8;  // >= kDecoderMaxRows: one warp normalizes each input row

template <typename T>
struct Segments {
  const T* weight[kMaxSegments];  // weight[i]: [end[i] - end[i-1], K] row-major
  const T* bias[kMaxSegments];    // [end[i] - end[i-1]] or nullptr
  int64_t end[kMaxSegments];      // cumulative output-column ends
  int count;
};

// 16 bytes of T, loaded and stored as one vector.
template <typename T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (or max) over the block; red: shared scratch of 32 floats. Every thread gets the result.
template <bool kMax>
__device__ float block_reduce(float v, float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // red may still be read by an earlier call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = red[0];
  for (int i = 1; i < n_warps; ++i) r = kMax ? fmaxf(r, red[i]) : r + red[i];
  return r;
}

template <typename T, int kMaxRows, int kCols>
__global__ void __launch_bounds__(kLinearWarps * 32)
    decoder_linear_kernel(const T* __restrict__ x,           // [rows, K]
                          const float* __restrict__ ln_w,    // [K] or nullptr (no LayerNorm)
                          const float* __restrict__ ln_b,    // [K]
                          const Segments<T> seg,             // weights [N_i, K], biases [N_i]
                          const T* __restrict__ residual,    // [rows, N] or nullptr
                          T* __restrict__ out,               // [rows, N] (out_float == nullptr)
                          float* __restrict__ out_float,     // [rows, N] or nullptr
                          int rows, int64_t K, int64_t N, bool apply_gelu) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* h = reinterpret_cast<T*>(smem_raw);  // [rows, K]: the (normalized) input rows
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  // 1. input rows into shared memory; warp m takes row m (rows <= warps), through whisper's
  //    LayerNorm when given: fp32 mean and variance (two passes), output rounded to T
  if (warp < rows) {
    const T* row = x + warp * K;
    T* dst = h + warp * K;
    if (ln_w != nullptr) {
      float s = 0.f;
      for (int64_t k = lane; k < K; k += 32) s += static_cast<float>(row[k]);
      const float mean = warp_sum(s) / static_cast<float>(K);
      float ss = 0.f;
      for (int64_t k = lane; k < K; k += 32) {
        const float dv = static_cast<float>(row[k]) - mean;
        ss += dv * dv;
      }
      const float rstd = rsqrtf(warp_sum(ss) / static_cast<float>(K) + 1e-5f);
      for (int64_t k = lane; k < K; k += 32) {
        dst[k] = static_cast<T>((static_cast<float>(row[k]) - mean) * rstd * ln_w[k] + ln_b[k]);
      }
    } else {
      for (int64_t k = lane; k < K; k += 32) dst[k] = row[k];
    }
  }
  __syncthreads();

  // 2. each warp: kCols output columns; its lanes stream the weight rows in 16-byte vectors,
  //    kUnroll vectors per column in flight, and multiply them with every input row
  const int64_t col0 = (static_cast<int64_t>(blockIdx.x) * kLinearWarps + warp) * kCols;
  const T* wrow[kCols];
  float bias[kCols];
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    const int64_t n = col0 + c;
    wrow[c] = nullptr;
    bias[c] = 0.f;
    if (n < N) {
      int i = 0;
      while (i + 1 < seg.count && n >= seg.end[i]) ++i;
      const int64_t local = n - (i == 0 ? 0 : seg.end[i - 1]);
      wrow[c] = seg.weight[i] + local * K;
      if (seg.bias[i] != nullptr) bias[c] = static_cast<float>(seg.bias[i][local]);
    }
  }
  constexpr int V = Pack<T>::kSize;
  constexpr int kUnroll = 4;
  float acc[kCols][kMaxRows];
#pragma unroll
  for (int c = 0; c < kCols; ++c)
#pragma unroll
    for (int m = 0; m < kMaxRows; ++m) acc[c][m] = 0.f;

  for (int64_t k0 = static_cast<int64_t>(lane) * V; k0 < K; k0 += 32 * V * kUnroll) {
    Pack<T> w[kUnroll][kCols];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k = k0 + static_cast<int64_t>(u) * 32 * V;
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        if (k < K && wrow[c] != nullptr) w[u][c] = *reinterpret_cast<const Pack<T>*>(wrow[c] + k);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k = k0 + static_cast<int64_t>(u) * 32 * V;
      if (k >= K) break;
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

  // 3. reduce over the warp; lane m applies the epilogue to row m and stores it
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    const int64_t n = col0 + c;
#pragma unroll
    for (int m = 0; m < kMaxRows; ++m) {
      const float total = warp_sum(acc[c][m]);
      if (lane == m && m < rows && n < N) {
        T y = static_cast<T>(total + bias[c]);  // the Linear's output
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
}

template <typename T>
__global__ void decoder_self_attention_kernel(const T* __restrict__ qkv,            // [R, 3d]
                                              T* __restrict__ k_cache,              // [R, n_ctx, d]
                                              T* __restrict__ v_cache,              // [R, n_ctx, d]
                                              const int64_t* __restrict__ position, // [1]
                                              T* __restrict__ out,                  // [R, d]
                                              int64_t n_ctx, int64_t d, int head_dim, float scale) {
  extern __shared__ float sm[];  // q [head_dim], scores [n_ctx], partial sums [blockDim.x]
  __shared__ float red[32];
  float* q = sm;
  float* scores = sm + head_dim;
  float* partial = scores + n_ctx;
  const int64_t r = blockIdx.x;
  const int head = blockIdx.y;
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
    q[i] = static_cast<float>(src[i]);
    kc[p * d + i] = src[d + i];
    vc[p * d + i] = src[2 * d + i];
  }
  __syncthreads();

  float local_max = -INFINITY;
  for (int64_t t = threadIdx.x; t <= p; t += blockDim.x) {
    const T* key = kc + t * d;
    float s = 0.f;
    for (int i = 0; i < head_dim; ++i) s += q[i] * static_cast<float>(key[i]);
    s *= scale;
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

  const int i = threadIdx.x % head_dim, group = threadIdx.x / head_dim, n_groups = blockDim.x / head_dim;
  float acc = 0.f;
  for (int64_t t = group; t <= p; t += n_groups) acc += scores[t] * static_cast<float>(vc[t * d + i]);
  partial[threadIdx.x] = acc;
  __syncthreads();
  if (group == 0) {
    float total = 0.f;
    for (int g = 0; g < n_groups; ++g) total += partial[g * head_dim + i];
    o[i] = static_cast<T>(total / sum);
  }
}

template <typename T, int kMaxRows, int kCols>
void launch_linear(const at::Tensor& x, const float* ln_w, const float* ln_b, const Segments<T>& seg,
                   const T* residual, T* out, float* out_float, int64_t n, bool apply_gelu) {
  const int64_t k = x.size(1);
  const size_t smem = static_cast<size_t>(x.size(0) * k) * sizeof(T);
  auto kernel = decoder_linear_kernel<T, kMaxRows, kCols>;
  static size_t smem_allowed = 48 * 1024;  // raised once per kernel (the eager warm-up runs before any graph capture)
  if (smem > smem_allowed) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    smem_allowed = smem;
  }
  const auto blocks = static_cast<unsigned int>(ceil_div(n, static_cast<int64_t>(kLinearWarps) * kCols));
  kernel<<<blocks, kLinearWarps * 32, smem, at::cuda::getCurrentCUDAStream()>>>(
      x.data_ptr<T>(), ln_w, ln_b, seg, residual, out, out_float, static_cast<int>(x.size(0)), k, n, apply_gelu);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, int kCols>
void launch_linear_rows(const at::Tensor& x, const float* ln_w, const float* ln_b, const Segments<T>& seg,
                        const T* residual, T* out, float* out_float, int64_t n, bool apply_gelu) {
  const int64_t rows = x.size(0);
  if (rows <= 1) return launch_linear<T, 1, kCols>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  if (rows <= 2) return launch_linear<T, 2, kCols>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  if (rows <= 4) return launch_linear<T, 4, kCols>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  return launch_linear<T, kDecoderMaxRows, kCols>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
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
    const float* ln_w = ln_weight.has_value() ? ln_weight->data_ptr<float>() : nullptr;
    const float* ln_b = ln_bias.has_value() ? ln_bias->data_ptr<float>() : nullptr;
    const scalar_t* res = residual.has_value() ? residual->data_ptr<scalar_t>() : nullptr;
    scalar_t* o = float_output ? nullptr : out.data_ptr<scalar_t>();
    float* of = float_output ? out.data_ptr<float>() : nullptr;
    if (n >= 16384) {  // the vocabulary projection: more columns per warp, fewer LayerNorm recomputations
      launch_linear_rows<scalar_t, 4>(x, ln_w, ln_b, seg, res, o, of, n, gelu_act);
    } else {  // one column per warp: the most warps streaming weights
      launch_linear_rows<scalar_t, 1>(x, ln_w, ln_b, seg, res, o, of, n, gelu_act);
    }
  });
  return out;
}

at::Tensor decoder_self_attention(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache,
                                  const at::Tensor& position, int64_t n_head) {
  check_decoder_self_attention_args(c10::DeviceType::CUDA, qkv, k_cache, v_cache, position, n_head);
  const int64_t rows = k_cache.size(0), n_ctx = k_cache.size(1), d = k_cache.size(2), head_dim = d / n_head;
  constexpr int kThreads = 256;
  TORCH_CHECK(head_dim <= kThreads && kThreads % head_dim == 0, "fastwhisper.decoder_self_attention (CUDA): head "
              "size ", head_dim, " must divide ", kThreads);
  const c10::cuda::CUDAGuard guard(qkv.device());
  at::Tensor out = at::empty({rows, d}, qkv.options());
  const size_t smem = static_cast<size_t>(head_dim + n_ctx + kThreads) * sizeof(float);
  TORCH_CHECK(smem <= 48 * 1024, "fastwhisper.decoder_self_attention (CUDA): n_ctx ", n_ctx, " is too long");
  const dim3 grid(static_cast<unsigned int>(rows), static_cast<unsigned int>(n_head));
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  FASTWHISPER_DISPATCH_FLOATS(qkv.scalar_type(), "fastwhisper_decoder_self_attention", [&] {
    decoder_self_attention_kernel<scalar_t><<<grid, kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(
        qkv.data_ptr<scalar_t>(), k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(),
        position.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), n_ctx, d, static_cast<int>(head_dim), scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) {
  m.impl("decoder_linear", &decoder_linear);
  m.impl("decoder_self_attention", &decoder_self_attention);
}

}  // namespace fastwhisper::cuda
