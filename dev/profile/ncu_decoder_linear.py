"""decoder_linear calls of one shape, for Nsight Compute:
ncu -k regex:decoder_linear --launch-skip 2 --launch-count 1 python3 this.py N K [rows] [ln] [logits].

N weight rows of K features, `rows` input rows (default 1); "ln": the input's LayerNorm fused; "logits": fp32
output, as the vocabulary projection writes its logits (e.g. tiny's: 51866 384 1 ln logits). Three calls."""
import sys

import torch

from fastwhisper import ops

n, k = int(sys.argv[1]), int(sys.argv[2])
rows = int(sys.argv[3]) if len(sys.argv) > 3 else 1
ln = "ln" in sys.argv[4:]
logits = "logits" in sys.argv[4:]
w = torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02
x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
lw, lb = (torch.ones(k, device="cuda"), torch.zeros(k, device="cuda")) if ln else (None, None)
for _ in range(3):
    out = ops.decoder_linear(x, [w], [None], lw, lb, float_output=logits)
torch.cuda.synchronize()
assert out.dtype == (torch.float32 if logits else torch.float16) and torch.isfinite(out).all()
