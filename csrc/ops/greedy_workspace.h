// The workspace of decoder_greedy_update: int32 [greedy_workspace_numel(rows)], zeros when first given to the
// op. Every call leaves its counters at zero again (the CUDA kernel's last blocks reset the tickets they
// read; the chunk stats are scratch), so one buffer serves a whole decoding loop and a CUDA graph without a
// memset per token.
//   [0]                         rows finished (low 16 bits) and rows whose new token is EOT (high 16 bits)
//   [1]                         unused (zero)
//   [2, 2 + rows)               per row: chunks finished
//   [2 + rows, ...)             per row and chunk: (max, argmax, exp-sum) of the chunk, 3 x 32-bit
// Python reads the size through fastwhisper._C.greedy_workspace_numel (module.cpp).
#pragma once
#include <cstdint>

namespace fastwhisper {

// Each row's logits are split into this many chunks, one CUDA block each.
constexpr int64_t kGreedyChunks = 32;
constexpr int64_t kGreedyStatsWords = 3;

constexpr int64_t greedy_workspace_numel(int64_t rows) { return 2 + rows * (1 + kGreedyChunks * kGreedyStatsWords); }

}  // namespace fastwhisper
