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
  // packed_qkv: None (or empty), or 2 tensors per layer, the query|key|value weights [3d, d] and biases [3d] (key's
  // part zero) in one tensor each: the attention's input projection is then one GEMM instead of three,
  // and block_weights' query/key/value tensors are checked but not read.
  m.def("encoder_forward(Tensor mel, Tensor conv1_weight, Tensor conv1_bias, Tensor conv2_weight, "
        "Tensor conv2_bias, Tensor positional_embedding, Tensor[] block_weights, Tensor ln_post_weight, "
        "Tensor ln_post_bias, int n_head, Tensor[]? packed_qkv=None) -> Tensor");

  // Decoder one-token step (M <= 16 rows, one position each).
  // x [M, K] -> h = LayerNorm(x) with fp32 ln_weight/ln_bias [K] (fp32 statistics, h in x's dtype; both
  // None: h = x) -> h @ cat(weights)^T with weights[i] [N_i, K] (+ biases[i] [N_i]; None: no bias), each
  // output rounded to x's dtype (then GELU) (+ residual [M, N]) -> [M, N = sum N_i] in x's dtype, or
  // float32 when float_output. (CUDA, 4+ fp16/bf16 rows: cuBLASLt adds a single weight's residual before
  // the output's one rounding.)
  m.def("decoder_linear(Tensor x, Tensor? ln_weight, Tensor? ln_bias, Tensor[] weights, Tensor?[] biases, "
        "Tensor? residual, bool gelu, bool float_output) -> Tensor");
  // token_embedding [V, d], positional_embedding [n_ctx, d], tokens [R, 1] int64, position [1] int64 ->
  // [R, d] in dtype: token_embedding[tokens[r]] + positional_embedding[position[0]], added in the two
  // tables' promoted dtype and then cast (whisper's token_embedding(x) + positional_embedding[offset],
  // .to(dtype)). CUDA reads the token and the position on the device (no host sync, so a CUDA graph
  // replays it for every position); an out-of-range one gives a row of NaN there, an error on the CPU.
  m.def("decoder_embedding(Tensor token_embedding, Tensor positional_embedding, Tensor tokens, Tensor position, "
        "ScalarType dtype) -> Tensor");
  // qkv [R, 3d] (q | k | v of one new position per row), k_cache/v_cache [R, n_ctx, d], position [1] int64:
  // writes k and v at cache position p = position[0], returns softmax(q k^T / sqrt(Dh)) v per head over
  // cache positions 0..p -> [R, d].
  m.def("decoder_self_attention(Tensor qkv, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor position, "
        "int n_head) -> Tensor");
  // q [R, d] (one position per row), k/v [B, T, d] (cross-attention K/V of B audio windows), R = B * group:
  // row r attends to window r / group (rows of one window are adjacent) -> softmax(q k^T / sqrt(Dh)) v per
  // head -> [R, d].
  m.def("decoder_cross_attention(Tensor q, Tensor k, Tensor v, int n_head) -> Tensor");
  // x [R, d], ln_weight/ln_bias [d] fp32, q_weight [d, d], q_bias [d] or None, k/v [B, T, d] as above:
  // q = LayerNorm(x) q_weight^T + q_bias (decoder_linear's rounding), then decoder_cross_attention(q, k, v)
  // -> [R, d]. CUDA computes both in one kernel (each block of a head's cluster a share of its query).
  m.def("decoder_cross_query_attention(Tensor x, Tensor ln_weight, Tensor ln_bias, Tensor q_weight, Tensor? q_bias, "
        "Tensor k, Tensor v, int n_head) -> Tensor");
  // Greedy decoding's token choice (whisper's GreedyDecoder.update at temperature 0): logits [N, V] float32
  // (filtered), tokens [N, capacity] int64 holding each sequence in columns [0, length), sum_logprobs [N]
  // float32. suppress [V] bool (optional): tokens taken as -inf first, as whisper's SuppressTokens and
  // SuppressBlank fill them (the logits themselves are left as they are). next = argmax (first on ties);
  // rows whose last token is eot get eot and keep their sum, the others add log_softmax(logits)[next];
  // writes next into column `length`. Returns whether every row's new token is eot (0-dim bool, on the
  // logits' device). workspace: int32 [greedy_workspace_numel(N)] zeros (greedy_workspace.h), used by the
  // CUDA kernel, which resets its counters, so one serves every call.
  m.def("decoder_greedy_update(Tensor logits, Tensor(a!) tokens, Tensor(b!) sum_logprobs, Tensor(c!) workspace, "
        "int length, int eot, Tensor? suppress=None) -> Tensor");
  // whisper's ApplyTimestampRules on logits [N, V] float32 in place, tokens [N, L] int64 the sequences so far
  // (sampled tokens from column sample_begin): <|notimestamps|> suppressed (no_timestamps >= 0), timestamps
  // in pairs and non-decreasing, the first sampled token a timestamp at most max_initial_timestamp_index
  // (-1: no limit), and text suppressed where the timestamps' total probability beats every text token.
  m.def("decoder_timestamp_rules(Tensor(a!) logits, Tensor tokens, int sample_begin, int timestamp_begin, int eot, "
        "int no_timestamps, int max_initial_timestamp_index) -> ()");
}
