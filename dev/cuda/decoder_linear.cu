// Kernel lab: the decoder step's linear layer for ONE input row (greedy decoding), out = x W^T + b, with fp16
// weights W [N, K] read once from DRAM. The question is how a warp reduces its lanes' partial sums: the time
// of a call is the time its weights take to arrive, so the reduction must stay off the critical path.
//
// Variants (the product ships variant 2, in csrc/ops/cuda/decoder_linear.cu, with its weights staged
// through shared memory by the bulk copy engine, which this lab leaves out):
//   1  row at a time: a warp multiplies one weight row, reduces it across its lanes (5 shuffles), lane 0
//      stores; per row 5 dependent shuffles and one store.
//   2  eight rows together: a warp keeps eight rows' partial sums and reduces them together with
//      reduce_eight_rows (9 shuffles for eight rows, the pairs added in the same order as variant 1, so
//      its results are bit for bit variant 1's); eight lanes store.
//
// Build and run (dev/README.md):
//   nvcc -O3 -arch=sm_90a -o decoder_linear dev/cuda/decoder_linear.cu && ./decoder_linear 2 51866 1280
// Arguments: variant (default 2), N (weight rows), K (features, a multiple of 8).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common.h"

constexpr int kWarpsPerBlock = 8;
constexpr int kRowsTogether = 8;
constexpr int kVec = 8;  // halves in a 16-byte load

struct alignas(16) Half8 {
  __half v[kVec];
};

// CPU reference: out[n] = sum_k x[k] W[n, k] + b[n], in double.
std::vector<double> linear_cpu(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                               int n_rows, int k) {
  std::vector<double> out(n_rows);
  for (int n = 0; n < n_rows; ++n) {
    double acc = b[n];
    for (int i = 0; i < k; ++i) acc += static_cast<double>(x[i]) * w[static_cast<size_t>(n) * k + i];
    out[n] = acc;
  }
  return out;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// This lane's share of one weight row times x: 16-byte vectors lane, lane + 32, ...
__device__ __forceinline__ float lane_dot(const __half* __restrict__ wrow, const __half* __restrict__ x, int k,
                                          int lane) {
  float acc = 0.f;
  for (int i = lane * kVec; i < k; i += 32 * kVec) {
    const Half8 wv = *reinterpret_cast<const Half8*>(wrow + i);
    const Half8 xv = *reinterpret_cast<const Half8*>(x + i);
#pragma unroll
    for (int e = 0; e < kVec; ++e) acc += __half2float(wv.v[e]) * __half2float(xv.v[e]);
  }
  return acc;
}

// ---- variant 1: one weight row at a time ---------------------------------------------------------------

__global__ void linear_row_at_a_time(const __half* __restrict__ x, const __half* __restrict__ w,
                                     const __half* __restrict__ b, __half* __restrict__ out, int n_rows, int k) {
  const int lane = threadIdx.x % 32;
  const int warp = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int warps = gridDim.x * kWarpsPerBlock;
  for (int n = warp; n < n_rows; n += warps) {
    const float total = warp_sum(lane_dot(w + static_cast<size_t>(n) * k, x, k, lane));
    if (lane == 0) out[n] = __float2half(total + __half2float(b[n]));
  }
}

// ---- variant 2: eight rows reduced together -----------------------------------------------------------

// Partners 16, 8 and 4 lanes apart exchange half of the rows they still hold, then 2 and 1 apart the last one;
// lane l ends with the total of row (l >> 2) & 7.
__device__ __forceinline__ float reduce_eight_rows(float (&acc)[kRowsTogether], int lane) {
#pragma unroll
  for (int half = kRowsTogether / 2, o = 16; half >= 1; half /= 2, o /= 2) {
    const bool upper = lane & o;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const float keep = upper ? acc[i + half] : acc[i];
      const float send = upper ? acc[i] : acc[i + half];
      acc[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
  }
  acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], 2);
  acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], 1);
  return acc[0];
}

__global__ void linear_rows_together(const __half* __restrict__ x, const __half* __restrict__ w,
                                     const __half* __restrict__ b, __half* __restrict__ out, int n_rows, int k) {
  const int lane = threadIdx.x % 32;
  const int warp = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int warps = gridDim.x * kWarpsPerBlock;
  for (int n0 = warp * kRowsTogether; n0 < n_rows; n0 += warps * kRowsTogether) {
    float acc[kRowsTogether];
#pragma unroll
    for (int r = 0; r < kRowsTogether; ++r) {
      acc[r] = n0 + r < n_rows ? lane_dot(w + static_cast<size_t>(n0 + r) * k, x, k, lane) : 0.f;
    }
    const float total = reduce_eight_rows(acc, lane);
    const int n = n0 + ((lane >> 2) & 7);
    if ((lane & 3) == 0 && n < n_rows) out[n] = __float2half(total + __half2float(b[n]));
  }
}

// ---- driver -----------------------------------------------------------------------------------------------

void run_variant(int variant, const __half* x, const __half* w, const __half* b, __half* out, int n_rows, int k,
                 int blocks) {
  const dim3 grid(blocks), block(kWarpsPerBlock * 32);
  switch (variant) {
    case 1:
      linear_row_at_a_time<<<grid, block>>>(x, w, b, out, n_rows, k);
      break;
    case 2:
      linear_rows_together<<<grid, block>>>(x, w, b, out, n_rows, k);
      break;
    default:
      std::fprintf(stderr, "unknown variant %d (1 or 2)\n", variant);
      std::exit(EXIT_FAILURE);
  }
  cudaCheck(cudaGetLastError());
}

int main(int argc, char** argv) {
  const int variant = argc > 1 ? std::atoi(argv[1]) : 2;
  const int n_rows = argc > 2 ? std::atoi(argv[2]) : 51866;  // large-v3's vocabulary projection
  const int k = argc > 3 ? std::atoi(argv[3]) : 1280;
  if (n_rows < 1 || k < kVec || k % kVec != 0) {
    std::fprintf(stderr, "need N >= 1 and K a positive multiple of %d\n", kVec);
    return EXIT_FAILURE;
  }
  cudaDeviceProp prop;
  cudaCheck(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, N %d, K %d, variant %d\n", prop.name, n_rows, k, variant);

  std::vector<float> x = random_floats(k, 1.0f, 1), w = random_floats(static_cast<size_t>(n_rows) * k, 0.05f, 2),
                     b = random_floats(n_rows, 0.1f, 3);
  const std::vector<__half> xh = to_half(x), wh = to_half(w), bh = to_half(b);
  const std::vector<double> reference = linear_cpu(x, w, b, n_rows, k);
  __half* d_x = to_device(xh);
  __half* d_w = to_device(wh);
  __half* d_b = to_device(bh);
  __half *d_out = nullptr, *d_out_rows = nullptr;
  cudaCheck(cudaMalloc(&d_out, n_rows * sizeof(__half)));
  cudaCheck(cudaMalloc(&d_out_rows, n_rows * sizeof(__half)));
  const int blocks = prop.multiProcessorCount * 2;

  // validation first: every variant against the CPU reference (fp16 output: tolerance of its rounding)
  for (int v = 1; v <= 2; ++v) {
    cudaCheck(cudaMemset(d_out, 0, n_rows * sizeof(__half)));
    run_variant(v, d_x, d_w, d_b, d_out, n_rows, k, blocks);
    cudaCheck(cudaDeviceSynchronize());
    char name[32];
    std::snprintf(name, sizeof(name), "variant %d", v);
    validate_result(d_out, reference, name, 2e-3);
  }
  // variant 2 must equal variant 1 bit for bit (same pairs added in the same order)
  run_variant(1, d_x, d_w, d_b, d_out_rows, n_rows, k, blocks);
  run_variant(2, d_x, d_w, d_b, d_out, n_rows, k, blocks);
  std::vector<__half> one(n_rows), two(n_rows);
  cudaCheck(cudaMemcpy(one.data(), d_out_rows, n_rows * sizeof(__half), cudaMemcpyDeviceToHost));
  cudaCheck(cudaMemcpy(two.data(), d_out, n_rows * sizeof(__half), cudaMemcpyDeviceToHost));
  if (std::memcmp(one.data(), two.data(), n_rows * sizeof(__half)) != 0) {
    std::printf("variant 2 differs from variant 1 in some bits\n");
    return EXIT_FAILURE;
  }
  std::printf("variants 1 and 2 agree bit for bit\n");

  // timing: weights larger than L2 are read from DRAM on every launch
  const double bytes = static_cast<double>(n_rows) * k * sizeof(__half);
  for (int v = 1; v <= 2; ++v) {
    const float ms = benchmark_kernel(50, [&] { run_variant(v, d_x, d_w, d_b, d_out, n_rows, k, blocks); });
    std::printf("variant %d: %8.2f us, %7.1f GB/s of weights%s\n", v, ms * 1e3, bytes / (ms * 1e-3) / 1e9,
                v == variant ? "  <- selected" : "");
  }
  cudaCheck(cudaFree(d_x));
  cudaCheck(cudaFree(d_w));
  cudaCheck(cudaFree(d_b));
  cudaCheck(cudaFree(d_out));
  cudaCheck(cudaFree(d_out_rows));
  return 0;
}
