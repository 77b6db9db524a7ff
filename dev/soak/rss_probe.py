"""Which decoder grows resident memory on CUDA: tiny.en real weights, N transcriptions per phase, RSS and the
Python object counts that grew, per phase."""
import collections, gc, os, sys, threading
sys.path.insert(0, "tests")
import torch
import fastwhisper
from fastwhisper.audio import load_audio
from real_models import SAMPLES_DIR, fast_model

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def counts():
    gc.collect()
    return collections.Counter(type(o).__name__ for o in gc.get_objects())

model = fast_model("tiny.en", "cuda")
audio = load_audio(SAMPLES_DIR / "pocketsphinx_goforward.flac")
n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
import ctypes
for phase in sys.argv[2].split(",") if len(sys.argv) > 2 else ("cpp", "torch", "cpp", "torch"):
    before, c0 = rss(), counts()
    for i in range(n):
        fastwhisper.transcribe(model, audio, decoder=phase, fp16=True, language="en")
    torch.cuda.synchronize()
    grown = (counts() - c0).most_common(8)
    after = rss()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    host = {k: v for k, v in torch.cuda.host_memory_stats().items() if k in ("allocated_bytes.current", "reserved_bytes.current", "num_host_alloc")} if hasattr(torch.cuda, "host_memory_stats") else {}
    print(f"{phase}: {n} runs, RSS {before:.0f} -> {after:.0f} MiB, after malloc_trim {rss():.0f}; threads {threading.active_count()}; host {host}; objects grown {grown}", flush=True)
