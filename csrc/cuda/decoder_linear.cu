// CUDA decoder_linear: the linear layers of the decoder's one-token step (CPU reference:
// decoder_linear in cpu/decoder_step.cpp). At most 8 input rows, so a call is one pass over its
// weights, and its speed is the rate at which those weights arrive from DRAM.
//
// Each block (one per SM) owns a contiguous range of output columns, that is a contiguous range of
// weight rows, and streams it through a ring of shared-memory stages with the bulk copy engine
// (bulk_copy.cuh): one thread starts a stage's copy and the block waits on the stage's barrier. The
// first stages are requested before the kernel waits for the kernel that produces its input (PDL, see
// device_utils.cuh), and the kernel lets its own successor be scheduled at once; a block takes about
// half of an SM's shared memory, so the next linear layer's blocks sit beside this one's and fill
// their rings while this one computes. The DRAM stream does not stop at kernel boundaries.
//
// In a stage, `split` warps share each weight row (K / split features each) and each warp multiplies
// its slice with every input row (kept in shared memory, with the optional LayerNorm of the input
// computed by each block); the split partial sums meet in shared memory and one thread per (column,
// row) applies bias, GELU and the residual add before the single store. Rounding follows whisper's
// ops: the LayerNorm output, the linear output (bias added in fp32), the GELU output and the residual
// sum are each rounded to the activation dtype.
#include <torch/library.h>

#include <algorithm>

#include "checks.h"
#include "cuda/bulk_copy.cuh"
#include "cuda/device_utils.cuh"
#include "gelu.h"
#include "launch.cuh"

namespace fastwhisper::cuda {
namespace {

constexpr int kWarps = 8;                     // >= kDecoderMaxRows: one warp normalizes each input row
constexpr int kThreads = kWarps * 32;
constexpr int kMaxSegments = 3;               // q, k and v weights in one call
constexpr int kMaxStages = 8;
constexpr int64_t kStageBytes = 20 * 1024;    // weight bytes of one pipeline stage at most
constexpr int64_t kBlockSmemBudget = 108 * 1024;  // two blocks (this kernel and the next) per SM

template <typename T>
struct Segments {
  const T* weight[kMaxSegments];  // weight[i]: [end[i] - end[i-1], K] row-major
  const T* bias[kMaxSegments];    // [end[i] - end[i-1]] or nullptr
  int64_t end[kMaxSegments];      // cumulative output-column ends
  int count;

  __device__ int64_t begin(int i) const { return i == 0 ? 0 : end[i - 1]; }
  // the segment holding output column n
  __device__ int find(int64_t n) const {
    int i = 0;
    while (i + 1 < count && n >= end[i]) ++i;
    return i;
  }
};

// How a call is cut: grid blocks of rows_per_block weight rows, stages of chunk_rows rows.
struct LinearPlan {
  int split;               // warps per weight row
  int chunk_rows;          // weight rows per stage: kWarps / split
  int stages;              // ring depth
  int64_t rows_per_block;  // weight rows (output columns) per block
  unsigned int blocks;
  size_t x_bytes;          // shared bytes of the input rows (rounded up to 128)
  size_t smem;             // dynamic shared memory per block
};

// Input rows -> shared memory h [rows, K] (16-byte copies by every thread), then, when ln_w is given,
// whisper's LayerNorm of each row in place: fp32 mean, then fp32 variance around it (two passes over
// shared memory, every thread taking a share of every row), output rounded to T. Ends with a barrier.
template <typename T, int kMaxRows>
__device__ void load_input_rows(const T* __restrict__ x, const float* __restrict__ ln_w,
                                const float* __restrict__ ln_b, T* h, int rows, int64_t K) {
  constexpr int V = kPack16<T>;
  __shared__ float red[kWarps][kMaxRows];
  __shared__ float stat[kMaxRows];
  const int64_t n_vec = K / V;  // K % V == 0 (checked on the host)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  auto* hv = reinterpret_cast<Pack16<T>*>(h);
  const auto* src = reinterpret_cast<const Pack16<T>*>(x);
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
          const Pack16<T> p = hv[m * n_vec + i];
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
      for (int w = 0; w < kWarps; ++w) total += red[w][threadIdx.x];
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
    Pack16<T> p = hv[idx];
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


// Weight rows [lo, hi) of the concatenated segments -> dst (rows of K), tracked by bar: one bulk copy
// per segment the range touches. Called by one thread.
template <typename T>
__device__ void request_rows(const Segments<T>& seg, int64_t lo, int64_t hi, int64_t K, T* dst, uint64_t* bar) {
  mbarrier_arrive_expect_tx(bar, static_cast<uint32_t>((hi - lo) * K * sizeof(T)));
  for (int i = 0; i < seg.count; ++i) {
    const int64_t s0 = seg.begin(i);
    const int64_t a = max(lo, s0), b = min(hi, seg.end[i]);
    if (a < b) bulk_copy_to_shared(dst + (a - lo) * K, seg.weight[i] + (a - s0) * K,
                                   static_cast<uint32_t>((b - a) * K * sizeof(T)), bar);
  }
}

// The same rows copied by the whole block with 16-byte loads (GPUs without the bulk copy engine).
template <typename T>
__device__ void copy_rows(const Segments<T>& seg, int64_t lo, int64_t hi, int64_t K, T* dst) {
  constexpr int V = kPack16<T>;
  const int64_t n_vec = K / V;
  for (int64_t idx = threadIdx.x; idx < (hi - lo) * n_vec; idx += blockDim.x) {
    const int64_t n = lo + idx / n_vec;
    const int i = seg.find(n);
    const T* row = seg.weight[i] + (n - seg.begin(i)) * K;
    reinterpret_cast<Pack16<T>*>(dst)[idx] = reinterpret_cast<const Pack16<T>*>(row)[idx % n_vec];
  }
  __syncthreads();
}

template <typename T, int kMaxRows>
__global__ void __launch_bounds__(kThreads, 1)
    decoder_linear_kernel(const T* __restrict__ x,           // [rows, K]
                          const float* __restrict__ ln_w,    // [K] or nullptr (no LayerNorm)
                          const float* __restrict__ ln_b,    // [K]
                          const Segments<T> seg,             // weights [N_i, K], biases [N_i]
                          const T* __restrict__ residual,    // [rows, N] or nullptr
                          T* __restrict__ out,               // [rows, N] (out_float == nullptr)
                          float* __restrict__ out_float,     // [rows, N] or nullptr
                          int rows, int64_t K, int64_t N, const LinearPlan plan, bool apply_gelu) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* h = reinterpret_cast<T*>(smem_raw);                  // [rows, K]: the (normalized) input rows
  T* ring = reinterpret_cast<T*>(smem_raw + plan.x_bytes);  // [stages, chunk_rows, K]
  __shared__ __align__(8) uint64_t full[kMaxStages];
  __shared__ float partial[2][kWarps][kMaxRows];  // two buffers: chunk j's are read while j + 1's are written
  constexpr int V = kPack16<T>;
  const int64_t chunk_elems = plan.chunk_rows * K;
  const int64_t row_begin = static_cast<int64_t>(blockIdx.x) * plan.rows_per_block;
  const int64_t row_end = min(N, row_begin + plan.rows_per_block);
  const int n_chunks = row_begin < row_end ? static_cast<int>((row_end - row_begin + plan.chunk_rows - 1) / plan.chunk_rows) : 0;
  auto chunk_lo = [&](int j) { return row_begin + static_cast<int64_t>(j) * plan.chunk_rows; };
  auto chunk_hi = [&](int j) { return min(row_end, chunk_lo(j) + plan.chunk_rows); };
  auto stage_of = [&](int j) { return ring + (j % plan.stages) * chunk_elems; };

  // 1. the first stages' weights, requested before the input exists
  if (kHasBulkCopy && threadIdx.x == 0) {
    for (int s = 0; s < plan.stages; ++s) mbarrier_init(&full[s], 1);
    for (int j = 0; j < min(plan.stages, n_chunks); ++j) request_rows(seg, chunk_lo(j), chunk_hi(j), K, stage_of(j), &full[j % plan.stages]);
  }
  allow_dependents();
  wait_for_producers();

  // 2. input rows into shared memory (its closing barrier also publishes the barriers' initialization)
  load_input_rows<T, kMaxRows>(x, ln_w, ln_b, h, rows, K);

  // 3. per stage: warp (r, part) multiplies slice `part` of row r with every input row
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int r = warp / plan.split, part = warp % plan.split;
  const int64_t k_len = K / plan.split, k_begin = part * k_len, k_end = k_begin + k_len;
  for (int j = 0; j < n_chunks; ++j) {
    const int64_t lo = chunk_lo(j), hi = chunk_hi(j);
    if (kHasBulkCopy) {
      mbarrier_wait(&full[j % plan.stages], (j / plan.stages) & 1);
    } else {
      copy_rows(seg, lo, hi, K, stage_of(j));
    }
    float acc[kMaxRows];
#pragma unroll
    for (int m = 0; m < kMaxRows; ++m) acc[m] = 0.f;
    if (lo + r < hi) {
      const T* wrow = stage_of(j) + r * K;
#pragma unroll 4
      for (int64_t k = k_begin + lane * V; k < k_end; k += 32 * V) {
        const Pack16<T> wv = *reinterpret_cast<const Pack16<T>*>(wrow + k);
        float wf[V];
#pragma unroll
        for (int e = 0; e < V; ++e) wf[e] = static_cast<float>(wv.v[e]);
#pragma unroll
        for (int m = 0; m < kMaxRows; ++m) {
          if (m < rows) {
            const Pack16<T> hv = *reinterpret_cast<const Pack16<T>*>(h + m * K + k);
#pragma unroll
            for (int e = 0; e < V; ++e) acc[m] += wf[e] * static_cast<float>(hv.v[e]);
          }
        }
      }
    }
    float (*part_sums)[kMaxRows] = partial[j & 1];
#pragma unroll
    for (int m = 0; m < kMaxRows; ++m) {
      const float total = warp_sum(acc[m]);
      if (lane == 0) part_sums[warp][m] = total;
    }
    __syncthreads();  // the stage is consumed and the partial sums are visible
    if (kHasBulkCopy && threadIdx.x == 0 && j + plan.stages < n_chunks) {
      fence_shared_for_bulk_copy();
      request_rows(seg, chunk_lo(j + plan.stages), chunk_hi(j + plan.stages), K, stage_of(j), &full[j % plan.stages]);
    }
    // epilogue: thread (column c of the stage, input row m)
    if (threadIdx.x < plan.chunk_rows * rows) {
      const int c = threadIdx.x / rows, m = threadIdx.x % rows;
      const int64_t n = lo + c;
      if (n < hi) {
        float total = 0.f;
        for (int p = 0; p < plan.split; ++p) total += part_sums[c * plan.split + p][m];
        const int i = seg.find(n);
        const T* bias = seg.bias[i];
        const float b = bias == nullptr ? 0.f : static_cast<float>(bias[n - seg.begin(i)]);
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
}

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

// The cut of one call: the fewest warps per weight row whose stage fits kStageBytes (and whose
// slices are whole 16-byte vectors); as many stages as fit beside the input rows in the budget.
LinearPlan plan_linear(int64_t rows, int64_t K, int64_t N, int64_t elem) {
  const int64_t vec = 16 / elem;
  LinearPlan p{};
  p.split = kWarps;
  for (int s = 1; s <= kWarps; s *= 2) {
    if (K % (s * vec) == 0 && (kWarps / s) * K * elem <= kStageBytes) {
      p.split = s;
      break;
    }
  }
  while (K % (p.split * vec) != 0) p.split /= 2;  // K % vec == 0: ends at 1 at the latest
  p.chunk_rows = kWarps / p.split;
  const int64_t stage_bytes = p.chunk_rows * K * elem;
  p.x_bytes = round_up(static_cast<size_t>(rows * K * elem), 128);
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  p.rows_per_block = ceil_div(N, std::min(sms, N));
  p.blocks = static_cast<unsigned int>(ceil_div(N, p.rows_per_block));
  const int64_t chunks_per_block = ceil_div(p.rows_per_block, p.chunk_rows);
  const int64_t fit = (kBlockSmemBudget - static_cast<int64_t>(p.x_bytes)) / stage_bytes;
  p.stages = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({fit, kMaxStages, chunks_per_block})));
  p.smem = p.x_bytes + static_cast<size_t>(p.stages * stage_bytes);
  return p;
}

template <typename T, int kMaxRows>
void launch_linear(const at::Tensor& x, const float* ln_w, const float* ln_b, const Segments<T>& seg,
                   const T* residual, T* out, float* out_float, int64_t n, bool apply_gelu) {
  const int64_t rows = x.size(0), k = x.size(1);
  const LinearPlan plan = plan_linear(rows, k, n, sizeof(T));
  auto kernel = decoder_linear_kernel<T, kMaxRows>;
  // dynamic shared memory this kernel may take: the per-block maximum less its static shared memory
  static const size_t dynamic_max = [&] {  // once per instantiation (an eager run precedes any graph capture)
    cudaFuncAttributes attributes{};
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
    const size_t bytes = at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin - attributes.sharedSizeBytes;
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                        cudaSharedmemCarveoutMaxShared));
    return bytes;
  }();
  TORCH_CHECK(plan.smem <= dynamic_max, "fastwhisper.decoder_linear (CUDA): ", rows, " rows of ", k, " features need ",
              plan.smem, " bytes of shared memory; this GPU allows ", dynamic_max);
  launch_pdl(kernel, dim3(plan.blocks), dim3(kThreads), plan.smem, x.data_ptr<T>(), ln_w, ln_b, seg, residual, out,
             out_float, static_cast<int>(rows), k, n, plan, apply_gelu);
}

template <typename T>
void launch_linear_rows(const at::Tensor& x, const float* ln_w, const float* ln_b, const Segments<T>& seg,
                        const T* residual, T* out, float* out_float, int64_t n, bool apply_gelu) {
  const int64_t rows = x.size(0);
  if (rows <= 1) return launch_linear<T, 1>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  if (rows <= 2) return launch_linear<T, 2>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  if (rows <= 4) return launch_linear<T, 4>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
  return launch_linear<T, kDecoderMaxRows>(x, ln_w, ln_b, seg, residual, out, out_float, n, apply_gelu);
}

}  // namespace

at::Tensor decoder_linear(const at::Tensor& x, const std::optional<at::Tensor>& ln_weight,
                          const std::optional<at::Tensor>& ln_bias, at::TensorList weights,
                          const c10::List<std::optional<at::Tensor>>& biases, const std::optional<at::Tensor>& residual,
                          bool gelu_act, bool float_output) {
  const DecoderLinearParts parts =
      check_decoder_linear_args(c10::DeviceType::CUDA, x, ln_weight, ln_bias, weights, biases, residual);
  const auto& w = parts.weights;
  const auto& b = parts.biases;
  const int64_t n = parts.out_features;
  const int64_t k = x.size(1);
  TORCH_CHECK(k % (16 / x.element_size()) == 0, "fastwhisper.decoder_linear (CUDA): the feature count ", k,
              " must be a multiple of ", 16 / x.element_size(), " (16-byte rows)");
  bool aligned = is_aligned(x.data_ptr(), 16);
  for (const auto& t : w) aligned = aligned && is_aligned(t.data_ptr(), 16);
  TORCH_CHECK(aligned, "fastwhisper.decoder_linear (CUDA): x and weights must start at 16-byte aligned addresses");
  TORCH_CHECK(!ln_weight.has_value() || (is_aligned(ln_weight->data_ptr(), 16) && is_aligned(ln_bias->data_ptr(), 16)),
              "fastwhisper.decoder_linear (CUDA): ln_weight and ln_bias must start at 16-byte aligned addresses");
  const c10::cuda::CUDAGuard guard(x.device());
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
    launch_linear_rows<scalar_t>(x, ln_w, ln_b, seg, res, o, of, n, gelu_act);
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("decoder_linear", &decoder_linear); }

}  // namespace fastwhisper::cuda
