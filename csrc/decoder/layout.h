// The decoder's weight layout: DecoderSession's weight list is kDecoderBeforeBlocks, kDecoderBlock per layer,
// then kDecoderAfterBlocks (keys of whisper.model.TextDecoder's state_dict).
#pragma once
#include "weight_layout.h"

namespace fastwhisper {

inline constexpr ParamSpec kDecoderBeforeBlocks[] = {
    // the embedding table, also the vocabulary projection's weight (used in the compute dtype there)
    {"token_embedding.weight", ParamShape::kOther, ParamRole::kWeight},
    {"positional_embedding", ParamShape::kOther, ParamRole::kPositional},
};
inline constexpr ParamSpec kDecoderAfterBlocks[] = {
    {"ln.weight", ParamShape::kD, ParamRole::kLayerNorm},
    {"ln.bias", ParamShape::kD, ParamRole::kLayerNorm},
};

// One residual block: x += attn(attn_ln(x)); x += cross_attn(cross_attn_ln(x), audio); x += mlp(mlp_ln(x)).
// The key projections have no bias.
inline constexpr ParamSpec kDecoderBlock[] = {
    {"attn_ln.weight", ParamShape::kD, ParamRole::kLayerNorm},
    {"attn_ln.bias", ParamShape::kD, ParamRole::kLayerNorm},
    {"attn.query.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"attn.query.bias", ParamShape::kD, ParamRole::kWeight},
    {"attn.key.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"attn.value.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"attn.value.bias", ParamShape::kD, ParamRole::kWeight},
    {"attn.out.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"attn.out.bias", ParamShape::kD, ParamRole::kWeight},
    {"cross_attn_ln.weight", ParamShape::kD, ParamRole::kLayerNorm},
    {"cross_attn_ln.bias", ParamShape::kD, ParamRole::kLayerNorm},
    {"cross_attn.query.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"cross_attn.query.bias", ParamShape::kD, ParamRole::kWeight},
    {"cross_attn.key.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"cross_attn.value.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"cross_attn.value.bias", ParamShape::kD, ParamRole::kWeight},
    {"cross_attn.out.weight", ParamShape::kDxD, ParamRole::kWeight},
    {"cross_attn.out.bias", ParamShape::kD, ParamRole::kWeight},
    {"mlp_ln.weight", ParamShape::kD, ParamRole::kLayerNorm},
    {"mlp_ln.bias", ParamShape::kD, ParamRole::kLayerNorm},
    {"mlp.0.weight", ParamShape::kMlpxD, ParamRole::kWeight},
    {"mlp.0.bias", ParamShape::kMlp, ParamRole::kWeight},
    {"mlp.2.weight", ParamShape::kDxMlp, ParamRole::kWeight},
    {"mlp.2.bias", ParamShape::kD, ParamRole::kWeight},
};

}  // namespace fastwhisper
