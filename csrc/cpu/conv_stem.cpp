// CPU conv stem: ATen conv1d for the two convolutions, explicit loops for the fused epilogues.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "gelu.h"
#include "kernels.h"

namespace fastwhisper::cpu {

// y[B, C, T] <- gelu(y + bias[C]), in place
static void bias_gelu_channels(at::Tensor& y, const at::Tensor& bias) {
  const int64_t channels = y.size(1), frames = y.size(2);
  float* yp = y.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  at::parallel_for(0, y.size(0) * channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float b = bp[row % channels];
      float* r = yp + row * frames;
      for (int64_t t = 0; t < frames; ++t) r[t] = gelu(r[t] + b);
    }
  });
}

// out[B, T, C] = gelu(y[B, C, T] + bias[C]) + pos[T, C]
static void stem_epilogue(const at::Tensor& y, const at::Tensor& bias, const at::Tensor& pos, at::Tensor& out) {
  const int64_t batch = y.size(0), channels = y.size(1), frames = y.size(2);
  const float* yp = y.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  const float* pp = pos.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, batch * frames, 16, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / frames, t = bt % frames;
      const float* yb = yp + b * channels * frames + t;
      float* o = op + bt * channels;
      const float* p = pp + t * channels;
      for (int64_t c = 0; c < channels; ++c) o[c] = gelu(yb[c * frames] + bp[c]) + p[c];
    }
  });
}

at::Tensor conv_stem(const at::Tensor& mel, const at::Tensor& conv1_weight, const at::Tensor& conv1_bias,
                     const at::Tensor& conv2_weight, const at::Tensor& conv2_bias,
                     const at::Tensor& positional_embedding) {
  const auto d = check_conv_stem_args(c10::DeviceType::CPU, mel, conv1_weight, conv1_bias, conv2_weight, conv2_bias,
                                      positional_embedding);
  auto out = at::empty({d.batch, d.n_out, d.n_state}, mel.options());
  if (d.batch == 0) return out;
  auto h = at::conv1d(mel, conv1_weight, {}, /*stride=*/1, /*padding=*/1).contiguous();  // [B, d, T]
  bias_gelu_channels(h, conv1_bias.contiguous());
  auto y = at::conv1d(h, conv2_weight, {}, /*stride=*/2, /*padding=*/1).contiguous();  // [B, d, T_out]
  stem_epilogue(y, conv2_bias.contiguous(), positional_embedding.contiguous(), out);
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CPU, m) { m.impl("conv_stem", &conv_stem); }

}  // namespace fastwhisper::cpu
