// cuBLASLt linear with bias epilogue and beta = 1 residual, on ATen's cuBLASLt handle, workspace and
// current stream. The algorithm of each problem is chosen once and cached: for problems of many rows (the
// encoder's GEMMs from four windows up) the fastest of cuBLASLt's heuristic candidates timed on the spot,
// otherwise (and under CUDA graph capture) the heuristic's first choice.
#include "ops/cuda/cublaslt_gemm.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "ops/cuda/vec.cuh"

namespace fastwhisper::cuda {
namespace {

// Owners of the cuBLASLt descriptors of one call (destroyed on every path out, errors included).
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  ~MatmulDesc() {
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
  template <typename V>
  void set(cublasLtMatmulDescAttributes_t attr, const V& value) {
    TORCH_CUDABLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
  }
};

struct Layout {
  cublasLtMatrixLayout_t layout = nullptr;
  // A column-major rows x cols matrix with leading dimension ld (elements).
  Layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
    TORCH_CUDABLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows),
                                                    static_cast<uint64_t>(cols), ld));
  }
  ~Layout() {
    if (layout) cublasLtMatrixLayoutDestroy(layout);
  }
  Layout(const Layout&) = delete;
  Layout& operator=(const Layout&) = delete;
};

struct Preference {
  cublasLtMatmulPreference_t pref = nullptr;
  Preference() { TORCH_CUDABLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref)); }
  ~Preference() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
  }
  template <typename V>
  void set(cublasLtMatmulPreferenceAttributes_t attr, const V& value) {
    TORCH_CUDABLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
  }
};

// Largest power of two (up to 256) dividing the address: what cuBLASLt's MIN_ALIGNMENT preferences take.
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 1;
  while (alignment < 256 && address % (2 * alignment) == 0) alignment *= 2;
  return alignment;
}

// torch.backends.cuda.matmul.allow_{fp16,bf16}_reduced_precision_reduction as a split-K reduction mask.
// In-place split-K (atomics on the output) is never allowed: results stay bit-reproducible run to run.
uint32_t reduction_mask(at::ScalarType dtype) {
  uint32_t mask = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
                  CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
  if (dtype == at::kFloat) return mask;
  const auto option = dtype == at::kHalf ? at::globalContext().allowFP16ReductionCuBLAS()
                                         : at::globalContext().allowBF16ReductionCuBLAS();
  if (option == at::CuBLASReductionOption::DisallowReducedPrecisionAllowSplitK) {
    mask &= ~static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE);
  } else if (option == at::CuBLASReductionOption::DisallowReducedPrecisionDisallowSplitK) {
    mask = CUBLASLT_REDUCTION_SCHEME_NONE;
  }
  return mask;
}

// Everything cuBLASLt's heuristic sees, so one cached algorithm serves every call with the same key.
using AlgoKey = std::array<int64_t, 19>;

std::mutex algo_mutex;
std::map<AlgoKey, std::optional<cublasLtMatmulAlgo_t>>& algo_cache() {
  static std::map<AlgoKey, std::optional<cublasLtMatmulAlgo_t>> cache;  // nullopt: no algorithm exists
  return cache;
}

// Problems of at least kTimedMinRows rows (four encoder windows and up) time cuBLASLt's first kCandidates
// candidates at their first eager call and keep the fastest; smaller ones keep the heuristic's first choice,
// which was as fast or faster inside the encoder's graph for one window although a timed choice won alone.
constexpr int64_t kTimedMinRows = 6000;
constexpr int kCandidates = 8;  // heuristic results timed
constexpr int kTimedRuns = 5;   // per candidate, after one untimed run; the median counts

bool timed_choice_wanted(int64_t m) { return m >= kTimedMinRows; }

bool stream_is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

// One problem's cuBLASLt call with a given algorithm: what the tuner times and the caller runs.
using MatmulCall = std::function<cublasStatus_t(const cublasLtMatmulAlgo_t&)>;

// Median milliseconds of kTimedRuns calls of `algo` on `stream`, or a negative number when cuBLASLt
// rejects it. The calls write the caller's output, which the final call overwrites.
float median_ms(const MatmulCall& call, const cublasLtMatmulAlgo_t& algo, cudaStream_t stream) {
  if (call(algo) != CUBLAS_STATUS_SUCCESS) return -1.0f;  // the untimed run
  std::array<cudaEvent_t, kTimedRuns + 1> events{};
  for (auto& e : events) C10_CUDA_CHECK(cudaEventCreate(&e));
  C10_CUDA_CHECK(cudaEventRecord(events[0], stream));
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  for (int i = 0; i < kTimedRuns && status == CUBLAS_STATUS_SUCCESS; ++i) {
    status = call(algo);
    C10_CUDA_CHECK(cudaEventRecord(events[i + 1], stream));
  }
  C10_CUDA_CHECK(cudaEventSynchronize(events[kTimedRuns]));
  std::vector<float> ms(kTimedRuns);
  for (int i = 0; i < kTimedRuns; ++i) C10_CUDA_CHECK(cudaEventElapsedTime(&ms[i], events[i], events[i + 1]));
  for (auto& e : events) C10_CUDA_CHECK(cudaEventDestroy(e));
  if (status != CUBLAS_STATUS_SUCCESS) return -1.0f;
  std::nth_element(ms.begin(), ms.begin() + kTimedRuns / 2, ms.end());
  return ms[kTimedRuns / 2];
}

// The fastest of the heuristic's candidates (in its order on ties); nullopt when none runs.
std::optional<cublasLtMatmulAlgo_t> fastest_candidate(const cublasLtMatmulHeuristicResult_t* results, int found,
                                                      const MatmulCall& call, cudaStream_t stream) {
  std::optional<cublasLtMatmulAlgo_t> best;
  float best_ms = 0.0f;
  for (int i = 0; i < found; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    const float ms = median_ms(call, results[i].algo, stream);
    if (ms >= 0.0f && (!best || ms < best_ms)) {
      best = results[i].algo;
      best_ms = ms;
    }
  }
  return best;
}

}  // namespace

bool cublaslt_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias,
                     const at::Tensor* residual, const at::Tensor& out) {
  const auto dtype = x.scalar_type();
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) return false;
  const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  if (m < 1 || k < 8 || n < 8 || k % 8 != 0 || n % 8 != 0) return false;
  // unit inner strides, row strides a multiple of 8 elements, 16-byte aligned pointers
  auto rows_ok = [](const at::Tensor& t) {
    return t.dim() == 2 && t.stride(1) == 1 && t.stride(0) % 8 == 0 && t.stride(0) >= t.size(1) &&
           is_aligned(t.data_ptr(), 16);
  };
  if (!rows_ok(x) || !rows_ok(weight) || !rows_ok(out) || (residual && !rows_ok(*residual))) return false;
  if (bias && (!bias->is_contiguous() || !is_aligned(bias->data_ptr(), 16))) return false;

  const cudaDataType_t type = dtype == at::kHalf ? CUDA_R_16F : dtype == at::kBFloat16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute = dtype == at::kFloat && at::globalContext().allowTF32CuBLAS()
                                          ? CUBLAS_COMPUTE_32F_FAST_TF32
                                          : CUBLAS_COMPUTE_32F;
  // Row-major out[M, N] = x[M, K] @ weight[N, K]^T is column-major out^T[N, M] = op(A) B with
  // A = weight as a column-major K x N matrix (op = transpose) and B = x as a column-major K x M matrix.
  const void* c_ptr = residual ? residual->data_ptr() : out.data_ptr();
  const int64_t ldc = residual ? residual->stride(0) : out.stride(0);
  const uint32_t reduction = reduction_mask(dtype);

  // ATen's handle and workspace for the current stream (the cuBLAS handle first: with
  // TORCH_CUBLASLT_UNIFIED_WORKSPACE=1 the cuBLASLt workspace is the cuBLAS one, set up by that call).
  (void)at::cuda::getCurrentCUDABlasHandle();
  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  void* workspace = at::cuda::getCUDABlasLtWorkspace();
  const uint64_t workspace_size = at::cuda::getCUDABlasLtWorkspaceSize();

  MatmulDesc op;
  TORCH_CUDABLAS_CHECK(cublasLtMatmulDescCreate(&op.desc, compute, CUDA_R_32F));
  op.set(CUBLASLT_MATMUL_DESC_TRANSA, static_cast<int32_t>(CUBLAS_OP_T));
  op.set(CUBLASLT_MATMUL_DESC_TRANSB, static_cast<int32_t>(CUBLAS_OP_N));
  if (bias) {
    op.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_BIAS));
    op.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias->data_ptr());  // bias elements have out's dtype
  }
  const Layout a(type, k, n, weight.stride(0)), b(type, k, m, x.stride(0)), c(type, n, m, ldc),
      d(type, n, m, out.stride(0));

  const uint32_t align_a = alignment_of(weight.data_ptr()), align_b = alignment_of(x.data_ptr()),
                 align_c = alignment_of(c_ptr), align_d = alignment_of(out.data_ptr());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const float alpha = 1.0f, beta = residual ? 1.0f : 0.0f;
  const MatmulCall call = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle, op.desc, &alpha, weight.data_ptr(), a.layout, x.data_ptr(), b.layout, &beta, c_ptr,
                          c.layout, out.data_ptr(), d.layout, &algo, workspace, workspace_size, stream);
  };
  // Under capture nothing can be timed: a problem first met there keeps the heuristic's choice (cached like
  // any other, so captured and eager calls of one problem run one algorithm and agree bit for bit).
  const bool timed_wanted = timed_choice_wanted(m);
  const bool timed = timed_wanted && !stream_is_capturing(stream);
  const AlgoKey key = {c10::cuda::current_device(),
                       static_cast<int64_t>(dtype),
                       static_cast<int64_t>(compute),
                       m,
                       n,
                       k,
                       weight.stride(0),
                       x.stride(0),
                       ldc,
                       out.stride(0),
                       (bias ? 1 : 0) + (residual ? 2 : 0),
                       align_a,
                       align_b,
                       align_c,
                       align_d,
                       bias ? alignment_of(bias->data_ptr()) : 0,
                       reduction,
                       static_cast<int64_t>(workspace_size),
                       timed_wanted ? 1 : 0};
  std::optional<cublasLtMatmulAlgo_t> algo;
  {
    const std::lock_guard<std::mutex> lock(algo_mutex);
    auto& cache = algo_cache();
    auto it = cache.find(key);
    if (it != cache.end()) {
      algo = it->second;
    } else {
      Preference pref;
      pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, workspace_size);
      pref.set(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, reduction);
      pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a);
      pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b);
      pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c);
      pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d);
      std::array<cublasLtMatmulHeuristicResult_t, kCandidates> results{};
      int found = 0;
      const cublasStatus_t status =
          cublasLtMatmulAlgoGetHeuristic(handle, op.desc, a.layout, b.layout, c.layout, d.layout, pref.pref,
                                         timed ? kCandidates : 1, results.data(), &found);
      if (status == CUBLAS_STATUS_SUCCESS && found > 0) {
        if (timed) {
          algo = fastest_candidate(results.data(), found, call, stream);
        } else if (results[0].state == CUBLAS_STATUS_SUCCESS) {
          algo = results[0].algo;
        }
      }
      cache.emplace(key, algo);
    }
  }
  if (!algo) return false;

  const cublasStatus_t status = call(*algo);
  // rejected before launch (nothing written): the caller's path takes it
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) return false;
  TORCH_CUDABLAS_CHECK(status);
  return true;
}

}  // namespace fastwhisper::cuda
