// DecoderSession: Whisper's TextDecoder forward with a preallocated self-attention KV cache and
// cross-attention K/V computed once per audio window. Exposed to Python as
// torch.classes.fastwhisper.DecoderSession (registered in decoder/register.cpp).
//
// The arithmetic follows whisper/model.py op by op (same ATen ops, same dtypes), so logits match
// whisper.model.TextDecoder with its kv_cache hooks:
//   x = (token_embedding[tokens] + positional_embedding[offset : offset + t]).to(activation dtype)
//   per block: x += attn(attn_ln(x)) (causal, cached K/V); x += cross_attn(cross_attn_ln(x), audio);
//              x += mlp.2(gelu(mlp.0(mlp_ln(x))))
//   logits = (ln(x) @ token_embedding.T, in the activation dtype).float()
// LayerNorms compute in fp32 and return the activation dtype (whisper's LayerNorm); Linear weights
// are used in the activation dtype, as whisper's Linear casts them. The cast copies are made once per
// activation dtype (none when the dtypes match) and remade by set_audio when a weight changed in place.
//
// On CUDA a one-token step (every step after the first) runs as a CUDA graph: the token and its
// position are copied into static device buffers, the new K/V are written at that position, and
// self-attention reads the first n_kv cache positions (n_kv: the position rounded up to kKvBucket)
// with a mask hiding those past the position. One graph per (row count, bucket), captured on first use:
// the caches and static buffers are kept for the most rows seen, and a window of fewer rows uses their
// first rows, so a server whose windows per round vary captures each row count once, not every round.
#pragma once
#include <ATen/ATen.h>
#include <torch/custom_class.h>

#include <atomic>
#include <memory>
#include <tuple>
#include <vector>

#include "decoder/layout.h"
#include "decoder/step_graphs.h"
#include "ops/decoder_step_io.h"

namespace fastwhisper::decoder {

// The weight list (decoder/layout.h): kDecoderBeforeBlocks, kDecoderBlock per layer, kDecoderAfterBlocks.
constexpr int64_t kTensorsBeforeBlocks = layout_size(kDecoderBeforeBlocks);
constexpr int64_t kTensorsPerBlock = layout_size(kDecoderBlock);
constexpr int64_t kTensorsAfterBlocks = layout_size(kDecoderAfterBlocks);
constexpr int64_t kTokenEmbedding = slot_of(kDecoderBeforeBlocks, "token_embedding.weight");
constexpr int64_t kPositionalEmbedding = slot_of(kDecoderBeforeBlocks, "positional_embedding");
// Self-attention key lengths of the one-token CUDA graphs are multiples of this.
constexpr int64_t kKvBucket = 64;
// At most this many new tokens are fed as one-token graph steps (prefills_by_steps); more go as one forward.
constexpr int64_t kPrefillStepsMax = 16;

class DecoderSession : public torch::CustomClassHolder {
 public:
  // weights: the list above, held by reference (never copied); n_head: attention heads;
  // n_text_ctx: positions of the KV cache (must equal positional_embedding.size(0)).
  DecoderSession(std::vector<at::Tensor> weights, int64_t n_head, int64_t n_text_ctx);

  // audio_features [B, T_a, d] -> cross-attention K/V of every layer ([B, T_a, d] each), computed once.
  // The session then decodes N = B * group rows (row r belongs to audio r / group, as
  // repeat_interleave orders them) and sets the activation dtype to audio_features' dtype.
  // Allocates (or reuses) the self-attention cache [N, n_text_ctx, d] per layer; resets the offset.
  void set_audio(const at::Tensor& audio_features, int64_t group);

  // tokens [N, t] int64 -> logits [N, t, n_vocab] float32 for positions offset .. offset+t-1;
  // appends their K/V to the cache and advances the offset by t. Checks its input.
  at::Tensor step(const at::Tensor& tokens);
  // Same as step, returning only the last position's logits [N, 1, n_vocab].
  at::Tensor step_last(const at::Tensor& tokens);
  // Unchecked step for the C++ decoding loop (tokens come from the loop itself). For t = 1 on CUDA
  // the result is the CUDA graph's output buffer, overwritten by the next one-token step.
  at::Tensor forward(const at::Tensor& tokens);

  // whisper's detect_language on this audio: one step of <|startoftranscript|> (sot) at position 0,
  // logits restricted to language_tokens [n_lang] int64. Returns (language token [n_audio] int64,
  // probabilities [n_audio, n_lang] float32 on the session's device). Leaves the session reset.
  std::tuple<at::Tensor, at::Tensor> detect_language(int64_t sot, const at::Tensor& language_tokens);

  // CUDA graphs for one-token steps on CUDA (on by default; no effect on CPU).
  void set_cuda_graphs(bool enabled);
  bool cuda_graphs() const { return use_graphs_; }
  // How many one-token graphs are captured now.
  int64_t cuda_graph_count() const { return graphs_ ? graphs_->size() : 0; }

  // How one-token steps compute: the step ops (decoder_linear with the LayerNorm and epilogues fused,
  // decoder_self_attention) or whisper's ATen ops one by one.
  enum class StepKernels : int64_t { kAuto = 0, kStepOps = 1, kAten = 2 };
  // kAuto: step ops for float16/bfloat16 on CUDA with at most 16 rows, ATen otherwise (float32 keeps
  // whisper's exact op sequence). kStepOps: wherever their shapes allow (the CPU runs their reference).
  void set_step_kernels(int64_t mode);
  int64_t step_kernels() const { return static_cast<int64_t>(step_kernels_); }
  // Whether the next one-token step runs through the step ops.
  bool uses_step_ops() const;
  // Whether t new tokens at once (the decoding loop's first step) go quicker as t one-token steps through
  // the step ops' CUDA graph than as one forward of ATen ops launched one by one from the host (about 30
  // per layer, so host-bound for a few tokens). Same logits up to rounding (the step ops' kernels); only where
  // the step ops run anyway.
  bool prefills_by_steps(int64_t t) const;

  // source_indices [N] int64: cache row i <- cache row source_indices[i], in place (beam search).
  void reorder(const at::Tensor& source_indices);
  // Unchecked reorder for the C++ loop; skips the identity permutation like whisper does.
  void reorder_unchecked(const at::Tensor& source_indices);

  // The next one-token step's inputs on CUDA, for a kernel that writes them itself (decoder_step_io.h): sets
  // targets' step_token, step_position and position, or leaves them null (on the CPU, or before set_audio).
  void offer_step_inputs(StepFeedback& targets) const;
  // The next forward() of one token finds its token and position already written where offer_step_inputs said.
  void step_inputs_written() { step_inputs_written_ = true; }

  // Forget the cached tokens (offset 0); the audio's cross-attention K/V stay valid.
  void reset() {
    offset_ = 0;
    step_inputs_written_ = false;
  }

  // Ask a decode() running on another thread to stop before its next step (it raises a RuntimeError);
  // the request stands until clear_interrupt(), so one made between steps is never lost.
  void interrupt() { interrupt_requested_.store(true); }
  void clear_interrupt() { interrupt_requested_.store(false); }
  bool interrupt_requested() const { return interrupt_requested_.load(); }

  int64_t offset() const { return offset_; }
  int64_t n_rows() const { return n_rows_; }
  int64_t group() const { return group_; }
  int64_t n_text_ctx() const { return n_text_ctx_; }
  int64_t n_vocab() const { return token_embedding().size(0); }
  bool has_audio() const { return has_audio_; }
  c10::Device device() const { return token_embedding().device(); }
  // The held weight tensors (the caller's own tensors: same storage, same data_ptr).
  std::vector<at::Tensor> weights() const { return weights_; }

 private:
  const at::Tensor& token_embedding() const { return weights_[kTokenEmbedding]; }
  const at::Tensor& positional_embedding() const { return weights_[kPositionalEmbedding]; }
  // Tensors as the computation uses them (compute_: activation dtype, or fp32 for LayerNorm parameters):
  // slot of kDecoderBlock in a layer, or slot of kDecoderAfterBlocks.
  const at::Tensor& compute_block(int64_t layer, int64_t slot) const {
    return compute_[kTensorsBeforeBlocks + layer * kTensorsPerBlock + slot];
  }
  const at::Tensor& compute_after_blocks(int64_t slot) const {
    return compute_[compute_.size() - kTensorsAfterBlocks + slot];
  }
  // The layout entry of weights_[i].
  const ParamSpec& spec_of(int64_t i) const;
  void prepare_compute_weights();  // (re)make compute_ for dtype_ when stale
  int64_t weights_version() const;  // sum of the weights' in-place version counters
  void invalidate_graphs();
  // The one-token graph's key: this window's row count and the key-length bucket (-1: the step ops' graph).
  int64_t graph_key(int64_t bucket) const { return n_rows_ * (n_text_ctx_ + 2) + bucket + 1; }
  // whisper's LayerNorm with a block's (layer >= 0) or the final (layer < 0) parameters, weight_slot and the next
  at::Tensor layer_norm(const at::Tensor& x, int64_t layer, int64_t weight_slot) const;
  at::Tensor linear(const at::Tensor& x, int64_t layer, int64_t weight_slot, int64_t bias_slot) const;
  // x [N, t, d] through every residual block and ln, then the logits [N, t, n_vocab] float32;
  // attend(h, layer) is the self-attention of one layer.
  template <typename SelfAttention>
  at::Tensor blocks_and_logits(at::Tensor x, SelfAttention attend);
  at::Tensor self_attention(const at::Tensor& h, int64_t layer, int64_t t);  // h [N, t, d] -> [N, t, d]
  // One-token self-attention on the static buffers: h [N, 1, d], visible [n_kv] bool -> [N, 1, d]
  at::Tensor self_attention_static(const at::Tensor& h, int64_t layer, const at::Tensor& visible);
  at::Tensor cross_attention(const at::Tensor& h, int64_t layer, int64_t t) const;
  at::Tensor forward_eager(const at::Tensor& tokens);  // any t, at offset_
  at::Tensor forward_static(int64_t n_kv);  // step_token_ at step_position_, the graph's body
  at::Tensor forward_step_ops();            // the same through decoder_linear / decoder_self_attention
  void check_ready(const char* method) const;

  std::vector<at::Tensor> weights_;
  int64_t n_head_, n_text_ctx_, n_layer_, n_state_;
  bool has_audio_ = false;
  std::atomic<bool> interrupt_requested_{false};  // set by interrupt() from any thread
  at::ScalarType dtype_ = at::kFloat;  // activation dtype (the audio features')
  int64_t n_audio_ = 0, group_ = 1, n_rows_ = 0, offset_ = 0;
  // Per layer, the cross-attention K/V: [B, T_a, d] on CUDA (the step kernels' and graphs' layout); head-major
  // [B, H, T_a, Dh] on the CPU, where ATen's attention over a one-token query reads a [B, T_a, d] tensor's heads
  // with a stride through memory (slower than contiguous heads), and that read bounds a CPU decode step.
  std::vector<at::Tensor> cross_k_, cross_v_;
  std::vector<at::Tensor> cross_k_store_, cross_v_store_;  // CUDA: per layer [most audios, T_a, d]; cross_k_ views
  at::Tensor kv_cache_;                        // [n_layer, 2 (K, V), most rows, n_text_ctx, d]
  std::vector<at::Tensor> self_k_, self_v_;    // per layer [N, n_text_ctx, d]: the first N rows of kv_cache_
  std::vector<at::Tensor> compute_;            // weights_ in the dtypes the computation uses
  at::ScalarType compute_dtype_ = at::ScalarType::Undefined;
  int64_t compute_version_ = -1;
  // one-token steps on CUDA
  bool use_graphs_ = true;
  StepKernels step_kernels_ = StepKernels::kAuto;
  std::unique_ptr<StepGraphs> graphs_;  // null on CPU or in a CPU-only build
  at::Tensor step_token_store_;  // [most rows, 1] int64
  at::Tensor step_token_;     // [N, 1] int64: its first N rows
  at::Tensor step_position_;  // [1] int64: the token's position (the offset)
  bool step_inputs_written_ = false;  // by the kernel that chose the tokens (step_inputs_written)
};

}  // namespace fastwhisper::decoder
