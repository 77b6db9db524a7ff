// CUDA decoder_embedding (CPU reference: cpu/decoder_step.cpp): the first kernel of a one-token decoder
// step, in place of ATen's four (embedding gather, positional row, add, cast). One block per row reads
// its token and the step's position on the device, so a CUDA graph replays it for every position.
#include <torch/library.h>

#include <cmath>

#include "ops/checks.h"
#include "ops/cuda/device_utils.cuh"
#include "ops/cuda/launch.cuh"

namespace fastwhisper::cuda {
namespace {

// TW: the dtype of both tables (ATen adds them in it, rounding the sum once), TO: the output dtype.
template <typename TW, typename TO>
__global__ void decoder_embedding_kernel(const TW* __restrict__ token_embedding,       // [n_vocab, d]
                                         const TW* __restrict__ positional_embedding,  // [n_ctx, d]
                                         const int64_t* __restrict__ tokens,           // [R, 1]
                                         const int64_t* __restrict__ position,         // [1]
                                         TO* __restrict__ out,                         // [R, d]
                                         int64_t n_vocab, int64_t n_ctx, int64_t d) {
  wait_for_producers();  // the first kernel of a step: nothing to overlap, so wait at once (PDL contract)
  allow_dependents();
  const int64_t r = blockIdx.x;
  const int64_t token = tokens[r], p = *position;
  const bool valid = token >= 0 && token < n_vocab && p >= 0 && p < n_ctx;  // no host sync: NaN rows otherwise
  const TW* te = token_embedding + token * d;
  const TW* pe = positional_embedding + p * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float sum = valid ? static_cast<float>(static_cast<TW>(static_cast<float>(te[i]) + static_cast<float>(pe[i])))
                            : NAN;
    out[r * d + i] = static_cast<TO>(sum);
  }
}

}  // namespace

at::Tensor decoder_embedding(const at::Tensor& token_embedding, const at::Tensor& positional_embedding,
                             const at::Tensor& tokens, const at::Tensor& position, at::ScalarType dtype) {
  check_decoder_embedding_args(c10::DeviceType::CUDA, token_embedding, positional_embedding, tokens, position,
                               dtype);
  const c10::cuda::CUDAGuard guard(token_embedding.device());
  const int64_t rows = tokens.size(0), d = token_embedding.size(1);
  if (token_embedding.scalar_type() != positional_embedding.scalar_type()) {
    // mixed tables (not what whisper's modules hold): ATen's ops, which promote before adding
    return (at::embedding(token_embedding, tokens.view({-1})) + positional_embedding.index_select(0, position.view({1})))
        .to(dtype);
  }
  auto out = at::empty({rows, d}, token_embedding.options().dtype(dtype));
  if (rows == 0) return out;
  const auto te = token_embedding.contiguous(), pe = positional_embedding.contiguous();
  const auto tok = tokens.contiguous(), pos = position.contiguous();
  const int threads = static_cast<int>(std::min<int64_t>(256, ceil_div(d, 32) * 32));
  FASTWHISPER_DISPATCH_FLOATS(te.scalar_type(), "fastwhisper_decoder_embedding", [&] {
    using TW = scalar_t;
    FASTWHISPER_DISPATCH_FLOATS(dtype, "fastwhisper_decoder_embedding_out", [&] {
      launch_pdl(decoder_embedding_kernel<TW, scalar_t>, dim3(static_cast<unsigned int>(rows)), dim3(threads), 0,
                 te.data_ptr<TW>(), pe.data_ptr<TW>(), tok.data_ptr<int64_t>(), pos.data_ptr<int64_t>(),
                 out.data_ptr<scalar_t>(), te.size(0), pe.size(0), d);
    });
  });
  return out;
}

TORCH_LIBRARY_IMPL(fastwhisper, CUDA, m) { m.impl("decoder_embedding", &decoder_embedding); }

}  // namespace fastwhisper::cuda
