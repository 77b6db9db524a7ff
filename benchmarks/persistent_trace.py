"""Where the persistent decoder kernel's time goes (csrc/cuda/decoder_persistent.cu): with
FASTWHISPER_PERSISTENT_TRACE=1 every launch records, per block, when it arrived at each grid-wide barrier and
when it left (the GPU's global nanosecond timer). For each model (random weights of the real dims, fp16, one
row) this decodes a prompt, then ``--steps`` one-token steps, reads the trace after each, and reports per phase
of a layer (median over layers and steps):
  - work: from leaving the barrier before the phase to arriving at the next, slowest block and median block;
  - barrier: from the last block's arrival to the median block's departure (what the barrier itself costs);
  - for the linear phases, the median block's input (from leaving the barrier until its input is in shared
    memory), multiply (until every product is summed) and finish (the epilogue's stores, until the next barrier);
and the kernel's whole span.

    FASTWHISPER_PERSISTENT_TRACE=1 python benchmarks/persistent_trace.py --models tiny,large-v3 --out t.json
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import check_model_names, device_name, git_commit, random_audio_features, random_whisper, write_report  # noqa: E402

PHASES = ["1 LN + qkv", "2 self-attention", "3 out + residual", "4 LN + cross q", "5 cross-attention",
          "6 merge + cross out", "7 LN + mlp0 + GELU", "8 mlp2 + residual", "9 final LN + vocabulary (once)"]


def trace_model(name: str, steps: int):
    import fastwhisper.cpp_decoding as cd

    model = random_whisper(name, device="cuda").half()
    session = cd.decoder_session(model.decoder)
    session.set_audio(random_audio_features(model.dims, 1), 1)
    if not session.uses_persistent_layers():
        raise SystemExit(f"{name}: the persistent kernel does not run (FASTWHISPER_PERSISTENT, shape)")
    session.step(torch.tensor([[50258, 50259, 50359]], device="cuda"))
    work_max = {k: [] for k in range(9)}
    work_med = {k: [] for k in range(9)}
    barrier = {k: [] for k in range(9)}
    parts = {k: {"input": [], "multiply": [], "finish": []} for k in range(9)}
    spans = []
    for _ in range(steps):
        session.step(torch.tensor([[440]], device="cuda"))
        torch.cuda.synchronize()
        t = session.persistent_trace()  # [8 n_layer + 2, grid, 4]
        if t.numel() == 0:
            raise SystemExit("no trace: set FASTWHISPER_PERSISTENT_TRACE=1")
        t = t.double()
        arrive, depart, has_input, has_products = t[:, :, 0], t[:, :, 1], t[:, :, 2], t[:, :, 3]
        spans.append((arrive[-1].max() - depart[0].min()).item() / 1e3)
        n_barriers = t.shape[0] - 1  # indices 1 .. 8 n_layer are barriers; the last is the kernel's end
        for b in range(1, n_barriers + 1):
            phase = 8 if b == n_barriers else (b - 1) % 8
            work = (arrive[b] - depart[b - 1]) / 1e3
            work_max[phase].append(work.max().item())
            work_med[phase].append(work.median().item())
            if b < n_barriers:
                barrier[phase].append((depart[b].median() - arrive[b].max()).item() / 1e3)
            if bool((has_input[b] > 0).all()):  # the linear phases record these
                parts[phase]["input"].append(((has_input[b] - depart[b - 1]) / 1e3).median().item())
                parts[phase]["multiply"].append(((has_products[b] - has_input[b]) / 1e3).median().item())
                parts[phase]["finish"].append(((arrive[b] - has_products[b]) / 1e3).median().item())
    return {"model": name, "steps": steps, "span_us": statistics.median(spans),
            "phases": [{"phase": PHASES[k], "work_max_us": statistics.median(work_max[k]),
                        "work_median_us": statistics.median(work_med[k]),
                        "barrier_us": statistics.median(barrier[k]) if barrier[k] else None,
                        **{f"{part}_us": statistics.median(v) if v else None for part, v in parts[k].items()}}
                       for k in range(9)]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,large-v3")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--commit", default=None)
    args = parser.parse_args()
    if os.environ.get("FASTWHISPER_PERSISTENT_TRACE") != "1":
        parser.error("set FASTWHISPER_PERSISTENT_TRACE=1 (read when fastwhisper loads)")
    results = [trace_model(name, args.steps) for name in check_model_names(parser, args.models)]
    commit = args.commit or git_commit()
    lines = [f"Persistent decoder kernel, per phase of a layer, {device_name('cuda')}, commit {commit} "
             f"(`benchmarks/persistent_trace.py`, fp16, one row, median over layers and {args.steps} steps).", ""]
    for r in results:
        lines += [f"**{r['model']}**: kernel span {r['span_us']:.1f} us", "",
                  "| phase | work, slowest block (us) | work, median block (us) | input | multiply | finish | barrier (us) |",
                  "|---|---|---|---|---|---|---|"]
        for ph in r["phases"]:
            cell = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(f"| {ph['phase']} | {ph['work_max_us']:.2f} | {ph['work_median_us']:.2f} | "
                         f"{cell(ph['input_us'])} | {cell(ph['multiply_us'])} | {cell(ph['finish_us'])} | "
                         f"{cell(ph['barrier_us'])} |")
        lines.append("")
    write_report(args.out, {"commit": commit, "device": device_name("cuda"), "steps": args.steps}, results,
                 "\n".join(lines))


if __name__ == "__main__":
    main()
