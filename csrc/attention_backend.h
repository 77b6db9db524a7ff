// FASTWHISPER_ENCODER_ATTENTION: which fused attention kernel the CUDA encoder runs for fp16/bf16.
#pragma once

namespace fastwhisper {

enum class AttentionBackend {
  kAuto,   // cuDNN attention where ATen says it applies to the shape, else flash attention
  kFlash,  // flash attention (FlashAttention-2 kernels in ATen)
  kCudnn,  // cuDNN attention; flash attention for shapes cuDNN raises on
};

// The environment variable's value, read once (unset or empty: auto). Throws c10::Error naming the
// accepted values when it is anything else (and again on every later call).
AttentionBackend encoder_attention_backend();

const char* attention_backend_name(AttentionBackend backend);

}  // namespace fastwhisper
