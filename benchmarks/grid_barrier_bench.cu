// What one dependency between two phases of a decoder step costs, three ways, on a full grid
// (one block of 512 threads per SM, like decoder_linear):
//   graph      K kernels back to back in a CUDA graph (a kernel boundary)
//   graph+pdl  the same with programmatic dependent launch (the next grid is scheduled early and waits
//              in griddepcontrol.wait, as the decoder's kernels do)
//   grid-sync  one cooperative kernel with K phases separated by grid.sync() (a persistent kernel)
// Each phase does a dependent step of work: block b reads the value block (b + 1) % B wrote in the phase
// before and writes its own, so every phase needs the one before it to be complete and visible. The CPU
// reference below computes the values the device must end with; they are checked before any timing.
// Floor: the work itself is a few hundred bytes per phase, so every microsecond is the dependency's cost.
//
//   nvcc -O3 -arch=sm_90a -o /tmp/grid_barrier_bench benchmarks/grid_barrier_bench.cu && /tmp/grid_barrier_bench
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace cg = cooperative_groups;

#define CHECK(call)                                                                              \
  do {                                                                                           \
    cudaError_t err_ = (call);                                                                   \
    if (err_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

constexpr int kThreads = 512;
constexpr int kPhases = 256;  // about a large-v3 step's kernel count (293)

// One phase: buf_out[b] = buf_in[(b + 1) % B] + 1 (thread 0 of each block).
__device__ __forceinline__ void phase(const int* __restrict__ buf_in,  // [B]
                                      int* __restrict__ buf_out) {     // [B]
  if (threadIdx.x == 0) {
    const int b = blockIdx.x, n = gridDim.x;
    buf_out[b] = __ldcg(buf_in + (b + 1) % n) + 1;
  }
}

__global__ void __launch_bounds__(kThreads) phase_kernel(const int* buf_in, int* buf_out, bool pdl) {
  if (pdl) {
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    asm volatile("griddepcontrol.wait;" ::: "memory");
  }
  phase(buf_in, buf_out);
}

__global__ void __launch_bounds__(kThreads) persistent_kernel(int* buf_a,  // [B]
                                                              int* buf_b,  // [B]
                                                              int phases) {
  cg::grid_group grid = cg::this_grid();
  for (int p = 0; p < phases; ++p) {
    phase(p % 2 == 0 ? buf_a : buf_b, p % 2 == 0 ? buf_b : buf_a);
    grid.sync();
  }
}

// CPU reference: the buffer after `phases` phases from zeros.
std::vector<int> reference(int blocks, int phases) {
  std::vector<int> a(blocks, 0), b(blocks, 0);
  for (int p = 0; p < phases; ++p) {
    const auto& in = p % 2 == 0 ? a : b;
    auto& out = p % 2 == 0 ? b : a;
    for (int i = 0; i < blocks; ++i) out[i] = in[(i + 1) % blocks] + 1;
  }
  return phases % 2 == 0 ? a : b;
}

// Median of `repeats` timed runs of fn on `stream` (after 3 warm-up runs), in microseconds per phase.
template <typename Fn>
float us_per_phase(cudaStream_t stream, Fn fn, int repeats = 21) {
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) fn();
  std::vector<float> ms;
  for (int i = 0; i < repeats; ++i) {
    CHECK(cudaEventRecord(start, stream));
    fn();
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaEventSynchronize(stop));
    float t = 0.f;
    CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  return ms[ms.size() / 2] * 1000.f / kPhases;
}

void check(const int* d_buf, int blocks, const char* name) {
  std::vector<int> host(blocks);
  CHECK(cudaMemcpy(host.data(), d_buf, blocks * sizeof(int), cudaMemcpyDeviceToHost));
  if (host != reference(blocks, kPhases)) {
    std::fprintf(stderr, "%s: wrong values (the dependency was not respected)\n", name);
    std::exit(1);
  }
}

int main() {
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const int blocks = prop.multiProcessorCount;
  int *buf_a, *buf_b;
  CHECK(cudaMalloc(&buf_a, blocks * sizeof(int)));
  CHECK(cudaMalloc(&buf_b, blocks * sizeof(int)));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  // K kernels in one graph, with or without the PDL launch attribute
  auto make_graph = [&](bool pdl) {
    cudaGraph_t graph;
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int p = 0; p < kPhases; ++p) {
      cudaLaunchConfig_t config{};
      config.gridDim = dim3(blocks);
      config.blockDim = dim3(kThreads);
      config.stream = stream;
      cudaLaunchAttribute attribute{};
      attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attribute.val.programmaticStreamSerializationAllowed = 1;
      config.attrs = &attribute;
      config.numAttrs = pdl ? 1 : 0;
      const int* in = p % 2 == 0 ? buf_a : buf_b;
      int* out = p % 2 == 0 ? buf_b : buf_a;
      CHECK(cudaLaunchKernelEx(&config, phase_kernel, in, out, pdl));
    }
    CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec;
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CHECK(cudaGraphDestroy(graph));
    return exec;
  };
  const int* result = kPhases % 2 == 0 ? buf_a : buf_b;
  auto reset = [&] {
    CHECK(cudaMemsetAsync(buf_a, 0, blocks * sizeof(int), stream));
    CHECK(cudaMemsetAsync(buf_b, 0, blocks * sizeof(int), stream));
  };

  std::printf("%s, %d SMs, %d threads per block, %d phases\n\n", prop.name, blocks, kThreads, kPhases);
  std::printf("| dependency | us per phase |\n|---|---|\n");
  for (bool pdl : {false, true}) {
    cudaGraphExec_t exec = make_graph(pdl);
    reset();
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaStreamSynchronize(stream));
    check(result, blocks, pdl ? "graph+pdl" : "graph");  // validation before timing
    const float us = us_per_phase(stream, [&] { CHECK(cudaGraphLaunch(exec, stream)); });
    std::printf("| %s | %.2f |\n", pdl ? "kernel boundary in a graph, PDL" : "kernel boundary in a graph", us);
    CHECK(cudaGraphExecDestroy(exec));
  }
  int phases = kPhases;
  void* args[] = {&buf_a, &buf_b, &phases};
  auto persistent = [&] {
    CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(persistent_kernel), dim3(blocks), dim3(kThreads), args,
                                      0, stream));
  };
  reset();
  persistent();
  CHECK(cudaStreamSynchronize(stream));
  check(result, blocks, "grid-sync");
  std::printf("| grid.sync() in one cooperative kernel | %.2f |\n", us_per_phase(stream, persistent));
  CHECK(cudaStreamSynchronize(stream));
  return 0;
}
