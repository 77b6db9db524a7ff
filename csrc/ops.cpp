// Every fastwhisper op schema, in one place. Implementations live in cpu/*.cpp and cuda/*.cu;
// fake (meta) implementations for torch.compile live in python/fastwhisper/ops.py.
#include <torch/library.h>

TORCH_LIBRARY(fastwhisper, m) {
  // mel [B, n_mels, T] -> gelu(conv2(gelu(conv1(mel)))) transposed to [B, T_out, d] + positional_embedding[T_out, d]
  m.def("conv_stem(Tensor mel, Tensor conv1_weight, Tensor conv1_bias, Tensor conv2_weight, Tensor conv2_bias, "
        "Tensor positional_embedding) -> Tensor");
  // x [..., d] -> LayerNorm over the last dim, statistics accumulated in fp32, output in x's dtype
  m.def("layer_norm(Tensor x, Tensor weight, Tensor bias, float eps) -> Tensor");
  // x [..., K] @ weight[N, K]^T (+ bias[N]) (then GELU) (+ residual[..., N]) -> [..., N]
  m.def("linear(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, bool gelu) -> Tensor");
  // q [B, Tq, H*Dh], k/v [B, Tk, H*Dh] -> non-causal softmax(q k^T / sqrt(Dh)) v per head -> [B, Tq, H*Dh]
  m.def("attention(Tensor q, Tensor k, Tensor v, int n_head) -> Tensor");
  // The whole Whisper audio encoder (conv stem, n_layer residual blocks, ln_post) in one call.
  // block_weights holds 15 tensors per layer, in the order of fastwhisper.encoder.BLOCK_PARAM_NAMES.
  m.def("encoder_forward(Tensor mel, Tensor conv1_weight, Tensor conv1_bias, Tensor conv2_weight, "
        "Tensor conv2_bias, Tensor positional_embedding, Tensor[] block_weights, Tensor ln_post_weight, "
        "Tensor ln_post_bias, int n_head) -> Tensor");

  // Decoder one-token step (M <= 8 rows, one position each).
  // x [M, K] -> h = LayerNorm(x) with fp32 ln_weight/ln_bias [K] (fp32 statistics, h in x's dtype; both
  // None: h = x) -> h @ cat(weights)^T with weights[i] [N_i, K] (+ biases[i] [N_i]; None: no bias), each
  // output rounded to x's dtype (then GELU) (+ residual [M, N]) -> [M, N = sum N_i] in x's dtype, or
  // float32 when float_output.
  m.def("decoder_linear(Tensor x, Tensor? ln_weight, Tensor? ln_bias, Tensor[] weights, Tensor?[] biases, "
        "Tensor? residual, bool gelu, bool float_output) -> Tensor");
  // qkv [R, 3d] (q | k | v of one new position per row), k_cache/v_cache [R, n_ctx, d], position [1] int64:
  // writes k and v at cache position p = position[0], returns softmax(q k^T / sqrt(Dh)) v per head over
  // cache positions 0..p -> [R, d].
  m.def("decoder_self_attention(Tensor qkv, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor position, "
        "int n_head) -> Tensor");
}
