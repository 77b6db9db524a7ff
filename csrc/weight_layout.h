// A weight layout: the tensors of a list that an op or a class takes, by name and in order. Each layout is
// defined once, in C++ (encoder/layout.h, decoder/layout.h); Python reads the same tables through
// fastwhisper._C.weight_layouts() (module.cpp), so neither language numbers the tensors by hand: code that
// needs one tensor looks its index up by name (slot_of, evaluated at compile time).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace fastwhisper {

// What a tensor is for, which decides the dtype it is used in.
enum class ParamRole {
  kWeight,      // a Linear or Conv weight or bias (or the token embedding, the logits' weight): the compute dtype
  kLayerNorm,   // a LayerNorm weight or bias: float32 statistics, so float32 (or the compute dtype) is kept
  kPositional,  // a positional embedding: read in its own dtype
};

// A block tensor's shape in units of the model width d (n_state) and the MLP width 4d; kOther: checked by the
// layout's user (tables whose size is the vocabulary or the context).
enum class ParamShape { kD, kDxD, kMlp, kMlpxD, kDxMlp, kThreeD, kThreeDxD, kOther };

struct ParamSpec {
  const char* name;  // key in openai-whisper's state_dict (relative to ``blocks.<i>.`` for a block's tensors)
  ParamShape shape;
  ParamRole role;
};

// The index of `name` in `layout`. Used in constant expressions, so a name that is not there fails to compile.
template <size_t N>
constexpr int64_t slot_of(const ParamSpec (&layout)[N], std::string_view name) {
  for (size_t i = 0; i < N; ++i) {
    if (std::string_view(layout[i].name) == name) return static_cast<int64_t>(i);
  }
  throw "fastwhisper: no tensor of this name in the layout";
}

template <size_t N>
constexpr int64_t layout_size(const ParamSpec (&)[N]) {
  return static_cast<int64_t>(N);
}

inline std::vector<int64_t> param_shape(ParamShape shape, int64_t d) {
  switch (shape) {
    case ParamShape::kD: return {d};
    case ParamShape::kDxD: return {d, d};
    case ParamShape::kMlp: return {4 * d};
    case ParamShape::kMlpxD: return {4 * d, d};
    case ParamShape::kDxMlp: return {d, 4 * d};
    case ParamShape::kThreeD: return {3 * d};
    case ParamShape::kThreeDxD: return {3 * d, d};
    case ParamShape::kOther: break;
  }
  return {};
}

}  // namespace fastwhisper
