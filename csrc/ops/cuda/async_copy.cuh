// Ampere's asynchronous copies (cp.async: 16 bytes global -> shared per thread, without a register on
// the way): many small strided pieces in flight at once, where the bulk copy engine (bulk_copy.cuh)
// would take one copy per piece. A thread commits its copies as one group and later waits for them;
// a block barrier after the wait makes every thread's copies visible to the block.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace fastwhisper::cuda {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
constexpr bool kHasAsyncCopy = true;
#else
constexpr bool kHasAsyncCopy = false;
#endif

// dst (shared) <- src (global), 16 bytes, both 16-byte aligned; cached in L2 only.
__device__ __forceinline__ void async_copy16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(dst))),
               "l"(src)
               : "memory");
#endif
}

// dst (shared) <- src (global), 16 bytes: an asynchronous copy where the GPU has them, else a plain
// load and store (done when the call returns).
__device__ __forceinline__ void stage16(void* dst, const void* src) {
  if (kHasAsyncCopy) {
    async_copy16(dst, src);
  } else {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  }
}

// Closes this thread's copies issued so far into one group.
__device__ __forceinline__ void async_copy_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most the kPending most recent groups this thread committed are still in flight.
template <int kPending>
__device__ __forceinline__ void async_copy_wait_group() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
#endif
}

// Waits until every group this thread committed has landed.
__device__ __forceinline__ void async_copy_wait_all() { async_copy_wait_group<0>(); }

}  // namespace fastwhisper::cuda
