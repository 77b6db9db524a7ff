"""One one-token decoder step (step ops, no CUDA graph) between cudaProfilerStart/Stop, for Nsight Compute.

    ncu --profile-from-start off --clock-control none --csv \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed \
        python3 benchmarks/ncu_decoder_step.py large-v3 > step.csv

Random weights of the model's real dims, fp16 activations, one row at position 3. Every kernel of the
step runs alone under ncu, so its duration is what it takes without overlap with its neighbours.
The step's own range check (two small reductions) is profiled too.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import random_whisper  # noqa: E402

from fastwhisper.cpp_decoding import decoder_session  # noqa: E402

name = sys.argv[1] if len(sys.argv) > 1 else "large-v3"
model = random_whisper(name, device="cuda")
dims = model.dims
session = decoder_session(model.decoder)
session.set_cuda_graphs(False)
features = (torch.randn(1, dims.n_audio_ctx, dims.n_audio_state, device="cuda") * 0.5).half()
with torch.inference_mode():
    session.set_audio(features, 1)
    session.step(torch.tensor([[50258, 50259, 50359]], device="cuda"))
    session.step(torch.tensor([[440]], device="cuda"))  # warm-up of the one-token path
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    session.step(torch.tensor([[1012]], device="cuda"))
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
print("step ops:", session.uses_step_ops(), "offset", session.offset())
