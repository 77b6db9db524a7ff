// Packs of N elements moved with one (or, for 32-byte packs, two) vector load/store, and the checks a
// launcher makes before taking the vectorized path.
#pragma once
#include <cstdint>
#include <type_traits>

namespace fastwhisper::cuda {

// N elements of T, aligned to their full size so a load of a Pack is a single vector instruction
// (16 bytes: ld.global.v4.b32). Only ever read/write a Pack through a pointer aligned to sizeof(Pack).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements of T in 16 bytes: the width of the vectorized kernels (8 for fp16/bf16, 4 for fp32).
template <typename T>
constexpr int kPack16 = static_cast<int>(16 / sizeof(T));

// p can be read/written as Packs of `bytes` bytes.
inline bool is_aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// launch(std::integral_constant<int, kVec>) with kVec = kPack16<T> when `packs` (the launcher's checks of
// sizes and alignment passed), else with kVec = 1: one place for a kernel's vectorized and scalar paths.
template <typename T, typename Launch>
void with_pack_width(bool packs, Launch&& launch) {
  if (packs) {
    launch(std::integral_constant<int, kPack16<T>>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

}  // namespace fastwhisper::cuda
