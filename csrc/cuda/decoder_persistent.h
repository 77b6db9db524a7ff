// The decoder's one-token step for one row in one persistent kernel (decoder_persistent.cu): every layer,
// then the final LayerNorm and the vocabulary, from the embedding's output to the logits, in one cooperative
// launch of one block per SM, with grid-wide barriers between the phases.
//
// Why: with one row a layer's nine kernels each wait for their input and then load most of their weights,
// so a large-v3 layer took about 45 us for 54 MB (12.5 us at the copy bandwidth). Inside one kernel every
// warp streams its weights through its own ring without regard to phase or layer boundaries: while a
// block waits at a barrier, its rings already hold the next phase's weights.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace fastwhisper::cuda {

// One decoder block's tensors as the kernel reads them: a table in device memory, one entry per layer,
// addresses as int64 in this order (kPersistentFields of them). Weights and biases in the activation dtype
// T, LayerNorm parameters fp32, cross K/V [n_audio_ctx, d] and the self K/V cache [n_text_ctx, d] in T.
enum PersistentField : int {
  kPAttnLnW, kPAttnLnB, kPQW, kPKW, kPVW, kPQB, kPVB, kPOutW, kPOutB,
  kPCrossLnW, kPCrossLnB, kPCrossQW, kPCrossQB, kPCrossK, kPCrossV, kPCrossOutW, kPCrossOutB,
  kPMlpLnW, kPMlpLnB, kPMlp0W, kPMlp0B, kPMlp2W, kPMlp2B, kPSelfK, kPSelfV,
  kPersistentFields
};

// The sizes of one session's step.
struct PersistentShape {
  int64_t n_layer, d, n_head, n_text_ctx, n_audio_ctx, n_vocab;
  at::ScalarType dtype;
};

// Whether the persistent kernel runs this shape on the current device: fp16/bf16, heads of 64, d at most
// 1280, a GPU with the bulk copy engine and cooperative launches, and shared memory for a block's share of
// the cross-attention keys. Host code only; no device work.
bool persistent_step_fits(const PersistentShape& shape);

// Scratch of one session's persistent steps: the phases' outputs, the cross-attention partial results and
// the barrier counters (zero between launches). Allocate once, outside graph capture.
at::Tensor persistent_workspace(const PersistentShape& shape, const at::Device& device);

// The last launch's times [8 n_layer + 2, grid, 4] int64 ns: per barrier and block, arrival and departure, and for
// the linear phase that ends at that barrier when it had its input and its products (index 0: the start; 8 n_layer:
// the barrier before the vocabulary; 8 n_layer + 1: the end), where FASTWHISPER_PERSISTENT_TRACE=1; else undefined.
at::Tensor persistent_trace(const PersistentShape& shape, const at::Tensor& workspace);

// Runs every layer on x [1, d] (the embedding's output; the residual stream, updated in place), then the final
// LayerNorm and the vocabulary; returns the logits [1, n_vocab] float32.
//   layers           [n_layer * kPersistentFields] int64 on the device (the table above)
//   position         [1] int64 on the device: the token's position
//   workspace        from persistent_workspace
//   token_embedding  [n_vocab, d] in the activation dtype, contiguous
//   ln_weight, ln_bias  [d] float32: the final LayerNorm
at::Tensor decoder_step_persistent(const PersistentShape& shape, const at::Tensor& layers, at::Tensor& x,
                                   const at::Tensor& position, at::Tensor& workspace, const at::Tensor& token_embedding,
                                   const at::Tensor& ln_weight, const at::Tensor& ln_bias);

}  // namespace fastwhisper::cuda
