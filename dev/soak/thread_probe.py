"""Does a CUDA matmul on a new thread each time grow resident memory? (fp16 addmm, as the torch decoder's Linears)"""
import os, threading, torch

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

a = torch.randn(5, 384, device="cuda", dtype=torch.float16)
w = torch.randn(1536, 384, device="cuda", dtype=torch.float16)
b = torch.randn(1536, device="cuda", dtype=torch.float16)
work = {"linear": lambda: torch.nn.functional.linear(a, w, b).sum().item(),
        "matmul": lambda: (a @ w.t()).sum().item(),
        "add": lambda: (a + 1).sum().item(),
        "sdpa": lambda: sum(torch.nn.functional.scaled_dot_product_attention(
            torch.randn(5, 6, 1, 64, device="cuda", dtype=torch.float16),
            torch.randn(5, 6, n, 64, device="cuda", dtype=torch.float16),
            torch.randn(5, 6, n, 64, device="cuda", dtype=torch.float16)).sum().item() for n in (4, 5, 6, 7, 8, 1500)),
        "sdpa_causal": lambda: torch.nn.functional.scaled_dot_product_attention(
            torch.randn(5, 6, 4, 64, device="cuda", dtype=torch.float16),
            torch.randn(5, 6, 4, 64, device="cuda", dtype=torch.float16),
            torch.randn(5, 6, 4, 64, device="cuda", dtype=torch.float16), is_causal=True).sum().item()}
for name, fn in list(work.items())[3:]:
    for how in ("same thread", "new thread"):
        fn(); r0 = rss()
        for i in range(100):
            if how == "same thread":
                fn()
            else:
                t = threading.Thread(target=fn); t.start(); t.join()
        print(f"{name:7s} {how}: 100 calls, RSS {r0:.0f} -> {rss():.0f} MiB", flush=True)
