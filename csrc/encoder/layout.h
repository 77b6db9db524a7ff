// The encoder's weight layouts: encoder_forward's block_weights (kEncoderBlock per layer), its optional
// packed_qkv (kEncoderPackedQkv per layer), and the tensors around the blocks (its other arguments).
#pragma once
#include "weight_layout.h"

namespace fastwhisper {

// encoder_forward's arguments before block_weights, and after it (apart from n_head and packed_qkv).
inline constexpr ParamSpec kEncoderBeforeBlocks[] = {
    {"conv1.weight", ParamShape::kOther, ParamRole::kWeight},
    {"conv1.bias", ParamShape::kD, ParamRole::kWeight},
    {"conv2.weight", ParamShape::kOther, ParamRole::kWeight},
    {"conv2.bias", ParamShape::kD, ParamRole::kWeight},
    {"positional_embedding", ParamShape::kOther, ParamRole::kPositional},
};
inline constexpr ParamSpec kEncoderAfterBlocks[] = {
    {"ln_post.weight", ParamShape::kD, ParamRole::kLayerNorm},
    {"ln_post.bias", ParamShape::kD, ParamRole::kLayerNorm},
};

// One residual block: x += attn(attn_ln(x)); x += mlp(mlp_ln(x)). The key projection has no bias.
inline constexpr ParamSpec kEncoderBlock[] = {
    {"attn_ln.weight", ParamShape::kD, ParamRole::kLayerNorm},
    {"attn_ln.bias", ParamShape::kD, ParamRole::kLayerNorm},
    {"attn.query.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"attn.query.bias", ParamShape::kD, ParamRole::kWeight},
    {"attn.key.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"attn.value.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"attn.value.bias", ParamShape::kD, ParamRole::kWeight},
    {"attn.out.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"attn.out.bias", ParamShape::kD, ParamRole::kWeight},
    {"mlp_ln.weight", ParamShape::kD, ParamRole::kLayerNorm},
    {"mlp_ln.bias", ParamShape::kD, ParamRole::kLayerNorm},
    {"mlp.0.weight", ParamShape::kMlpxD, ParamRole::kWeight},
    {"mlp.0.bias", ParamShape::kMlp, ParamRole::kWeight},
    {"mlp.2.weight", ParamShape::kDxMlp, ParamRole::kWeight},
    {"mlp.2.bias", ParamShape::kD, ParamRole::kWeight},
};

// The query, key and value projections of one block packed into one GEMM: weights cat(query, key, value)
// [3d, d], biases cat(query bias, zeros, value bias) [3d].
inline constexpr ParamSpec kEncoderPackedQkv[] = {
    {"attn.qkv.weight", ParamShape::kThreeDxD, ParamRole::kWeight},
    {"attn.qkv.bias", ParamShape::kThreeD, ParamRole::kWeight},
};

}  // namespace fastwhisper
