// Shared helpers of the dev/cuda kernel lab (llm.c's dev/cuda style): error checks, random data, a CPU
// reference comparison and a timing loop. Nothing here is part of the fastwhisper product.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

inline void cuda_check(cudaError_t error, const char* file, int line) {
  if (error != cudaSuccess) {
    std::fprintf(stderr, "[CUDA ERROR] at %s:%d: %s\n", file, line, cudaGetErrorString(error));
    std::exit(EXIT_FAILURE);
  }
}
#define cudaCheck(call) cuda_check((call), __FILE__, __LINE__)

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Uniform values in [-scale, scale) from a fixed-seed generator (the same data on every run).
inline std::vector<float> random_floats(size_t n, float scale, unsigned long long seed) {
  std::vector<float> v(n);
  unsigned long long state = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (auto& x : v) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    x = scale * (static_cast<float>((state >> 40) & 0xffffff) / static_cast<float>(1 << 24) * 2.0f - 1.0f);
  }
  return v;
}

// Rounds values to fp16 in place (so the CPU reference reads exactly what the GPU reads) and returns the halves.
inline std::vector<__half> to_half(std::vector<float>& v) {
  std::vector<__half> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    h[i] = __float2half(v[i]);
    v[i] = __half2float(h[i]);
  }
  return h;
}

template <typename T>
T* to_device(const std::vector<T>& host) {
  T* device = nullptr;
  cudaCheck(cudaMalloc(&device, host.size() * sizeof(T)));
  cudaCheck(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return device;
}

// Compares the device output (fp16) with the CPU reference; exits on a mismatch beyond tolerance.
inline void validate_result(const __half* device_out, const std::vector<double>& reference, const char* name,
                            double tolerance) {
  std::vector<__half> out(reference.size());
  cudaCheck(cudaMemcpy(out.data(), device_out, out.size() * sizeof(__half), cudaMemcpyDeviceToHost));
  int bad = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double got = __half2float(out[i]);
    const double diff = std::fabs(got - reference[i]);
    if (!(diff <= tolerance * (1.0 + std::fabs(reference[i])))) {
      if (bad < 5) std::printf("  %s: mismatch at %zu: cpu %.6f gpu %.6f\n", name, i, reference[i], got);
      ++bad;
    }
  }
  if (bad) {
    std::printf("%s: %d of %zu outputs wrong\n", name, bad, out.size());
    std::exit(EXIT_FAILURE);
  }
  std::printf("%s: all %zu outputs match the CPU reference\n", name, out.size());
}

// Mean milliseconds of `repeats` launches of `launch()` (after one warm-up launch).
template <typename Launch>
float benchmark_kernel(int repeats, Launch launch) {
  cudaEvent_t start, stop;
  cudaCheck(cudaEventCreate(&start));
  cudaCheck(cudaEventCreate(&stop));
  launch();
  cudaCheck(cudaGetLastError());
  cudaCheck(cudaEventRecord(start));
  for (int i = 0; i < repeats; ++i) launch();
  cudaCheck(cudaEventRecord(stop));
  cudaCheck(cudaEventSynchronize(stop));
  cudaCheck(cudaGetLastError());
  float ms = 0.f;
  cudaCheck(cudaEventElapsedTime(&ms, start, stop));
  cudaCheck(cudaEventDestroy(start));
  cudaCheck(cudaEventDestroy(stop));
  return ms / repeats;
}
