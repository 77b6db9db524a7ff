// Exact (erf) GELU, as torch.nn.GELU() computes it; usable from host and device code.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define FASTWHISPER_HOST_DEVICE __host__ __device__
#else
#define FASTWHISPER_HOST_DEVICE
#endif

namespace fastwhisper {
FASTWHISPER_HOST_DEVICE inline float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f)); }
}  // namespace fastwhisper
