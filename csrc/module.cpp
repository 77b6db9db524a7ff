// The Python module fastwhisper._C, and the one TORCH_LIBRARY: every fastwhisper op schema, in one place.
// Importing the module loads this library, whose static initializers run the registrations: the schemas below,
// the CPU and CUDA implementations (ops/cpu, ops/cuda, encoder/, TORCH_LIBRARY_IMPL in each file) and the
// decoder's classes (decoder/register.cpp). Every op checks that its tensors share one device before a device's
// kernel is chosen (ops/device_check.cpp). The fake (meta) implementations for torch.compile live in
// python/fastwhisper/ops/__init__.py. Plain CPython (no pybind11): nothing here can clash with the pybind11
// internals of torch or of other extensions.
#include <Python.h>
#include <torch/library.h>

#include "decoder/layout.h"
#include "encoder/layout.h"
#include "ops/device_check.h"
#include "ops/greedy_workspace.h"

using fastwhisper::def_op;

TORCH_LIBRARY(fastwhisper, m) {
  // mel [B, n_mels, T] -> gelu(conv2(gelu(conv1(mel)))) transposed to [B, T_out, d] + positional_embedding[T_out, d]
  def_op(m, "conv_stem(Tensor mel, Tensor conv1_weight, Tensor conv1_bias, Tensor conv2_weight, Tensor conv2_bias, "
        "Tensor positional_embedding) -> Tensor");
  // x [..., d] -> LayerNorm over the last dim, statistics accumulated in fp32, output in x's dtype
  def_op(m, "layer_norm(Tensor x, Tensor weight, Tensor bias, float eps) -> Tensor");
  // x [..., K] @ weight[N, K]^T (+ bias[N]) (then GELU) (+ residual[..., N]) -> [..., N]
  def_op(m, "linear(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, bool gelu) -> Tensor");
  // q [B, Tq, H*Dh], k/v [B, Tk, H*Dh] -> non-causal softmax(q k^T / sqrt(Dh)) v per head -> [B, Tq, H*Dh]
  def_op(m, "attention(Tensor q, Tensor k, Tensor v, int n_head) -> Tensor");
  // The whole Whisper audio encoder (conv stem, n_layer residual blocks, ln_post) in one call.
  // block_weights holds kEncoderBlock's tensors for each layer (encoder/layout.h).
  // packed_qkv: None (or empty), or kEncoderPackedQkv's tensors for each layer, the query|key|value weights
  // [3d, d] and biases [3d] (key's part zero) in one tensor each: the attention's input projection is then one
  // GEMM instead of three, and block_weights' query/key/value tensors are checked but not read.
  def_op(m, "encoder_forward(Tensor mel, Tensor conv1_weight, Tensor conv1_bias, Tensor conv2_weight, "
        "Tensor conv2_bias, Tensor positional_embedding, Tensor[] block_weights, Tensor ln_post_weight, "
        "Tensor ln_post_bias, int n_head, Tensor[]? packed_qkv=None) -> Tensor");

  // Decoder one-token step (M <= 16 rows, one position each).
  // x [M, K] -> h = LayerNorm(x) with fp32 ln_weight/ln_bias [K] (fp32 statistics, h in x's dtype; both
  // None: h = x) -> h @ cat(weights)^T with weights[i] [N_i, K] (+ biases[i] [N_i]; None: no bias), each
  // output rounded to x's dtype (then GELU) (+ residual [M, N]) -> [M, N = sum N_i] in x's dtype, or
  // float32 when float_output. (CUDA, 4+ fp16/bf16 rows: cuBLASLt adds a single weight's residual before
  // the output's one rounding.)
  def_op(m, "decoder_linear(Tensor x, Tensor? ln_weight, Tensor? ln_bias, Tensor[] weights, Tensor?[] biases, "
        "Tensor? residual, bool gelu, bool float_output) -> Tensor");
  // token_embedding [V, d], positional_embedding [n_ctx, d], tokens [R, 1] int64, position [1] int64 ->
  // [R, d] in dtype: token_embedding[tokens[r]] + positional_embedding[position[0]], added in the two
  // tables' promoted dtype and then cast (whisper's token_embedding(x) + positional_embedding[offset],
  // .to(dtype)). CUDA reads the token and the position on the device (no host sync, so a CUDA graph
  // replays it for every position); an out-of-range one gives a row of NaN there, an error on the CPU.
  def_op(m, "decoder_embedding(Tensor token_embedding, Tensor positional_embedding, Tensor tokens, Tensor position, "
        "ScalarType dtype) -> Tensor");
  // qkv [R, 3d] (q | k | v of one new position per row), k_cache/v_cache [R, n_ctx, d], position [1] int64:
  // writes k and v at cache position p = position[0], returns softmax(q k^T / sqrt(Dh)) v per head over
  // cache positions 0..p -> [R, d].
  def_op(m, "decoder_self_attention(Tensor qkv, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor position, "
        "int n_head) -> Tensor");
  // q [R, d] (one position per row), k/v [B, T, d] (cross-attention K/V of B audio windows), R = B * group:
  // row r attends to window r / group (rows of one window are adjacent) -> softmax(q k^T / sqrt(Dh)) v per
  // head -> [R, d].
  def_op(m, "decoder_cross_attention(Tensor q, Tensor k, Tensor v, int n_head) -> Tensor");
  // x [R, d], ln_weight/ln_bias [d] fp32, q_weight [d, d], q_bias [d] or None, k/v [B, T, d] as above:
  // q = LayerNorm(x) q_weight^T + q_bias (decoder_linear's rounding), then decoder_cross_attention(q, k, v)
  // -> [R, d]. CUDA computes both in one kernel (each block of a head's cluster a share of its query).
  def_op(m, "decoder_cross_query_attention(Tensor x, Tensor ln_weight, Tensor ln_bias, Tensor q_weight, Tensor? q_bias, "
        "Tensor k, Tensor v, int n_head) -> Tensor");
  // Greedy decoding's token choice (whisper's GreedyDecoder.update at temperature 0): logits [N, V] float32
  // (filtered), tokens [N, capacity] int64 holding each sequence in columns [0, length), sum_logprobs [N]
  // float32. suppress [V] bool (optional): tokens taken as -inf first, as whisper's SuppressTokens and
  // SuppressBlank fill them (the logits themselves are left as they are). next = argmax (first on ties);
  // rows whose last token is eot get eot and keep their sum, the others add log_softmax(logits)[next];
  // writes next into column `length`. Returns whether every row's new token is eot (0-dim bool, on the
  // logits' device). workspace: int32 [greedy_workspace_numel(N)] zeros (greedy_workspace.h), used by the
  // CUDA kernel, which resets its counters, so one serves every call.
  def_op(m, "decoder_greedy_update(Tensor logits, Tensor(a!) tokens, Tensor(b!) sum_logprobs, Tensor(c!) workspace, "
        "int length, int eot, Tensor? suppress=None) -> Tensor");
  // whisper's ApplyTimestampRules on logits [N, V] float32 in place, tokens [N, L] int64 the sequences so far
  // (sampled tokens from column sample_begin): <|notimestamps|> suppressed (no_timestamps >= 0), timestamps
  // in pairs and non-decreasing, the first sampled token a timestamp at most max_initial_timestamp_index
  // (-1: no limit), and text suppressed where the timestamps' total probability beats every text token.
  def_op(m, "decoder_timestamp_rules(Tensor(a!) logits, Tensor tokens, int sample_begin, int timestamp_begin, int eot, "
        "int no_timestamps, int max_initial_timestamp_index) -> ()");
}

namespace {

using fastwhisper::ParamRole;
using fastwhisper::ParamSpec;

const char* role_name(ParamRole role) {
  switch (role) {
    case ParamRole::kLayerNorm:
      return "layer_norm";
    case ParamRole::kPositional:
      return "positional";
    case ParamRole::kWeight:
      break;
  }
  return "weight";
}

// ((name, role), ...) of one layout; nullptr with a Python error set on failure.
template <size_t N>
PyObject* layout_tuple(const ParamSpec (&layout)[N]) {
  PyObject* entries = PyTuple_New(static_cast<Py_ssize_t>(N));
  if (entries == nullptr) return nullptr;
  for (size_t i = 0; i < N; ++i) {
    PyObject* entry = Py_BuildValue("(ss)", layout[i].name, role_name(layout[i].role));
    if (entry == nullptr) {
      Py_DECREF(entries);
      return nullptr;
    }
    PyTuple_SET_ITEM(entries, static_cast<Py_ssize_t>(i), entry);  // steals the reference
  }
  return entries;
}

template <size_t N>
bool add_layout(PyObject* dict, const char* key, const ParamSpec (&layout)[N]) {
  PyObject* entries = layout_tuple(layout);
  if (entries == nullptr) return false;
  const int rc = PyDict_SetItemString(dict, key, entries);
  Py_DECREF(entries);
  return rc == 0;
}

// _C.weight_layouts() -> {layout: ((name, role), ...)}: the tensor lists of encoder_forward and DecoderSession
// (encoder/layout.h, decoder/layout.h), each name a state_dict key (relative to ``blocks.<i>.`` inside a block),
// each role "weight" (used in the compute dtype), "layer_norm" or "positional".
PyObject* weight_layouts(PyObject*, PyObject*) {
  PyObject* dict = PyDict_New();
  if (dict == nullptr) return nullptr;
  const bool ok = add_layout(dict, "encoder.before_blocks", fastwhisper::kEncoderBeforeBlocks) &&
                  add_layout(dict, "encoder.block", fastwhisper::kEncoderBlock) &&
                  add_layout(dict, "encoder.after_blocks", fastwhisper::kEncoderAfterBlocks) &&
                  add_layout(dict, "encoder.block.packed_qkv", fastwhisper::kEncoderPackedQkv) &&
                  add_layout(dict, "decoder.before_blocks", fastwhisper::kDecoderBeforeBlocks) &&
                  add_layout(dict, "decoder.block", fastwhisper::kDecoderBlock) &&
                  add_layout(dict, "decoder.after_blocks", fastwhisper::kDecoderAfterBlocks);
  if (!ok) {
    Py_DECREF(dict);
    return nullptr;
  }
  return dict;
}

// _C.greedy_workspace_numel(rows) -> the int32 elements decoder_greedy_update's workspace needs for `rows` rows.
PyObject* greedy_workspace_numel(PyObject*, PyObject* arg) {
  const long long rows = PyLong_AsLongLong(arg);
  if (rows == -1 && PyErr_Occurred()) return nullptr;
  if (rows < 1) {
    PyErr_SetString(PyExc_ValueError, "greedy_workspace_numel: rows must be positive");
    return nullptr;
  }
  return PyLong_FromLongLong(fastwhisper::greedy_workspace_numel(rows));
}

PyMethodDef methods[] = {
    {"weight_layouts", weight_layouts, METH_NOARGS,
     "The weight layouts of encoder_forward and DecoderSession: {layout: ((name, role), ...)}."},
    {"greedy_workspace_numel", greedy_workspace_numel, METH_O,
     "The int32 elements of decoder_greedy_update's workspace for a number of rows."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "fastwhisper C++/CUDA ops (registered under torch.ops.fastwhisper)", -1, methods};
}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
#ifdef FASTWHISPER_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (PyModule_AddObject(m, "with_cuda", PyBool_FromLong(with_cuda)) != 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
