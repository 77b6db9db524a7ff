"""One decoder_linear call of a large-v3 shape, for Nsight Compute: ncu -k regex:decoder_linear python3 this.py N K [rows] [ln]."""
import sys

import torch

from fastwhisper import ops

n, k = int(sys.argv[1]), int(sys.argv[2])
rows = int(sys.argv[3]) if len(sys.argv) > 3 else 1
ln = len(sys.argv) > 4 and sys.argv[4] == "ln"
w = torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02
x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
lw, lb = (torch.ones(k, device="cuda"), torch.zeros(k, device="cuda")) if ln else (None, None)
for _ in range(3):
    ops.decoder_linear(x, [w], [None], lw, lb)
torch.cuda.synchronize()
