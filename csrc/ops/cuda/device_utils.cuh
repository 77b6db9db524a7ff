// Device helpers of the CUDA kernels: 16-byte vectors, warp/block reductions, and programmatic
// dependent launch (PDL), which lets a kernel start (and stream its weights) while the kernel before
// it in the stream is still finishing.
//
// PDL contract of every kernel launched with launch_pdl: before wait_for_producers() it reads only
// data no kernel of the step writes (weights, biases, and what was written before the step began: the
// step's position, earlier positions of the KV cache); it writes nothing before that call. Then the
// chain stays correct however early it starts: the wait returns once the preceding grid has finished
// and its writes are visible, and that grid itself waited for its own predecessor.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "ops/cuda/vec.cuh"

namespace fastwhisper::cuda {

// a[i] for a run-time i, without indexing an array of a kernel parameter at run time: that would copy the whole
// parameter to each thread's local memory.
template <typename A, int N>
__device__ __forceinline__ A pick(const A (&a)[N], int i) {
  A r = a[0];
#pragma unroll
  for (int s = 1; s < N; ++s) r = i == s ? a[s] : r;
  return r;
}

// 16 bytes of T, loaded and stored as one vector (vec.cuh's Pack of kPack16<T> elements).
template <typename T>
using Pack16 = Pack<T, kPack16<T>>;

// The 16 bytes of T at p (16-byte aligned), loaded as one vector and converted to floats.
template <typename T>
__device__ __forceinline__ void load_pack16_as_floats(const T* p, float (&f)[kPack16<T>]) {
  const Pack16<T> v = *reinterpret_cast<const Pack16<T>*>(p);
#pragma unroll
  for (int e = 0; e < kPack16<T>; ++e) f[e] = static_cast<float>(v.v[e]);
}

// The decoder attention kernels' loads in flight per thread: a loop that multiplies each 16-byte slice as
// it arrives keeps only one or two loads in flight, so the loops below issue a group of loads, then use them.
constexpr int kKeyLoads = 8;    // 16-byte slices of one key loaded together: a head of 64 fp16/bf16 values
constexpr int kValueLoads = 4;  // keys whose value slices one thread loads together

// use(i, slice) for the 16-byte slices i = 0 .. n_vec - 1 of row, in order, kLoads loads at a time.
template <typename T, int kLoads, typename Use>
__device__ __forceinline__ void for_each_slice(const Pack16<T>* row, int n_vec, Use use) {
  for (int i0 = 0; i0 < n_vec; i0 += kLoads) {
    Pack16<T> s[kLoads];
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      if (i0 + u < n_vec) s[u] = row[i0 + u];
    }
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      if (i0 + u < n_vec) use(i0 + u, s[u]);
    }
  }
}

// use(t, slice) for keys t = first, first + step, ... below end, in order: slice `slice` of key t's row
// (rows `stride` elements apart from base), kLoads keys' loads at a time.
template <typename T, int kLoads, typename I, typename Use>
__device__ __forceinline__ void for_each_key_slice(const T* base, int64_t stride, int slice, I first, I end, I step,
                                                   Use use) {
  for (I t0 = first; t0 < end; t0 += kLoads * step) {
    Pack16<T> s[kLoads];
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const I t = t0 + u * step;
      if (t < end) s[u] = reinterpret_cast<const Pack16<T>*>(base + static_cast<int64_t>(t) * stride)[slice];
    }
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const I t = t0 + u * step;
      if (t >= end) break;
      use(t, s[u]);
    }
  }
}

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

// Waits until the grid before this one in the stream has finished and its writes are visible
// (a no-op without PDL or before sm_90).
__device__ __forceinline__ void wait_for_producers() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next grid in the stream be scheduled (it still waits for this one in wait_for_producers),
// so it is safe anywhere, also before this kernel's own wait_for_producers().
__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether kernels on the current device launch with PDL: sm_90 or newer.
inline bool pdl_enabled() { return at::cuda::getCurrentDeviceProperties()->major >= 9; }

// kernel<<<grid, block, smem, current stream>>>(args...) in thread-block clusters of cluster_x blocks
// along x (1: no clusters; grid.x a multiple of it), with the PDL attribute where enabled.
template <typename... KernelArgs, typename... Args>
void launch_pdl_clusters(unsigned int cluster_x, void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                         Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = at::cuda::getCurrentCUDAStream();
  cudaLaunchAttribute attributes[2];
  unsigned int n = 0;
  if (pdl_enabled()) {
    attributes[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (cluster_x > 1) {
    attributes[n].id = cudaLaunchAttributeClusterDimension;
    attributes[n].val.clusterDim.x = cluster_x;
    attributes[n].val.clusterDim.y = 1;
    attributes[n].val.clusterDim.z = 1;
    ++n;
  }
  config.attrs = attributes;
  config.numAttrs = n;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

// kernel<<<grid, block, smem, current stream>>>(args...), with the PDL attribute where enabled.
template <typename... KernelArgs, typename... Args>
void launch_pdl(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, Args&&... args) {
  launch_pdl_clusters(1, kernel, grid, block, smem, std::forward<Args>(args)...);
}

}  // namespace fastwhisper::cuda
