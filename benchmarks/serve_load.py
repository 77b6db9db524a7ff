"""Load generator for fastwhisper-serve: aggregate RTFx and latency at several concurrencies, against sequential
transcribe() and one transcribe_batch() of the same requests, in one run.

    python benchmarks/serve_load.py --models large-v3=random,turbo=random,tiny.en=real --device cuda \
        --concurrency 1,4,16,64 --batch_size 64 --decoder cpp --batch_wait 0,0.1 \
        --out benchmarks/results/serve_load_h100.json

For each model: (1) in this process, the baselines: `fastwhisper.transcribe` of the first --sequential requests
one after another (after one untimed call), and `transcribe_batch` of --batch_requests requests with the server's
batch size (one untimed run, then the median of --batch_repeats); (2) for each --batch_wait value, a server
process (this script with --serve) on a free port, warmed by one untimed burst at the largest concurrency, and
(3) for each concurrency C,
max(--requests_per_client x C, --min_requests)
requests of --audio_seconds of audio each, C in flight at a time (asyncio + httpx): aggregate RTFx (audio
seconds / wall seconds), p50 and p95 latency (upload to last byte), the mean GPU utilisation (nvidia-smi), and from
/metrics the engine's windows per round, the mean queue wait and its scheduler thread's seconds per round in each
phase (hold, prepare, encode, decode, finish).

Random weights (NAME=random): benchmarks/common.random_whisper's seeded weights, and a fixed token budget per
30-s window (--tokens, run.py's long-form budget): English, no timestamps, EOT suppressed, temperature 0 without
fallback, so every window decodes exactly --tokens tokens whatever the weights. Real weights (NAME=real): the
bundled package's weights (tiny.en), whisper.transcribe's default options, speech cut from the bundled samples.
"""

import argparse
import asyncio
import io
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastwhisper  # noqa: E402
from fastwhisper.engine.scheduler import PHASES  # noqa: E402
from common import (device_name, free_device_memory, git_commit, percentile, random_whisper,  # noqa: E402
                    synchronize, write_outputs)

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "audio_samples" / "long_pocketsphinx_concat.flac"
SAMPLE_RATE = 16000
DEFAULT_TOKENS = 100  # run.py's long-form token budget per 30-s window
STARTUP_S = 600


# ---- models and requests ----------------------------------------------------------------------------

def parse_models(text: str) -> List[tuple]:
    models = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, _, kind = item.partition("=")
        kind = kind or "random"
        if kind not in ("random", "real"):
            raise SystemExit(f"--models: {item!r}: the weights are 'random' or 'real'")
        models.append((name, kind))
    return models


def build_model(name: str, kind: str, device: str):
    if kind == "real":
        return fastwhisper.load_model(name, device=device)
    source = random_whisper(name, device)
    with torch.device(device):
        model = fastwhisper.FastWhisper(source.dims)
    model.load_state_dict(source.state_dict())
    del source
    return model.eval()


def fixed_options(model, kind: str, tokens: int, device: str) -> Dict[str, object]:
    """The options every request runs with (the server's fixed_options, and the baselines')."""
    options: Dict[str, object] = {} if torch.device(device).type == "cuda" else {"fp16": False}
    if kind == "random":
        options.update(language="en", without_timestamps=True, suppress_tokens=[-1, _eot(model)], sample_len=tokens,
                       temperature=0.0, condition_on_previous_text=False, compression_ratio_threshold=None,
                       logprob_threshold=None, no_speech_threshold=None)
    return options


def _eot(model) -> int:
    import whisper

    return whisper.tokenizer.get_tokenizer(model.is_multilingual, num_languages=model.num_languages).eot


def request_audios(count: int, seconds: float) -> List[np.ndarray]:
    """`count` clips of `seconds` s cut from the bundled speech at different offsets (tiled when short)."""
    speech = fastwhisper.load_audio(str(SPEECH))
    n = int(seconds * SAMPLE_RATE)
    tiled = np.tile(speech, n // speech.size + 2)
    step = max(1, (tiled.size - n) // max(1, count))
    return [tiled[i * step % (tiled.size - n):][:n].copy() for i in range(count)]


def wav_bytes(audio: np.ndarray) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# ---- baselines --------------------------------------------------------------------------------------

def baselines(model, audios: List[np.ndarray], options: dict, args) -> Dict[str, object]:
    device = args.device
    audio_s = [a.size / SAMPLE_RATE for a in audios]
    fastwhisper.transcribe(model, audios[0], decoder=args.decoder, **options)  # warm-up
    synchronize(device)
    latencies = []
    for audio in audios[:args.sequential]:
        start = time.perf_counter()
        fastwhisper.transcribe(model, audio, decoder=args.decoder, **options)
        synchronize(device)
        latencies.append(time.perf_counter() - start)
    sequential = {"requests": len(latencies), "rtfx": sum(audio_s[:len(latencies)]) / sum(latencies),
                  "p50_s": statistics.median(latencies), "p95_s": percentile(latencies, 95)}
    batch = audios[:args.batch_requests]
    walls = []
    for run in range(1 + args.batch_repeats):  # the first run is untimed: it meets the batch's shapes first
        start = time.perf_counter()
        results = fastwhisper.transcribe_batch(model, batch, batch_size=args.batch_size, decoder=args.decoder,
                                               **options)
        synchronize(device)
        if run:
            walls.append(time.perf_counter() - start)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise RuntimeError(f"transcribe_batch failed: {failed[0]!r}")
    wall = statistics.median(walls)
    batched = {"requests": len(batch), "batch_size": args.batch_size, "rtfx": sum(audio_s[:len(batch)]) / wall,
               "wall_s": wall, "walls_s": walls}
    return {"sequential_transcribe": sequential, "transcribe_batch": batched}


# ---- the server -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_main(args) -> int:
    """--serve: build the model and serve it until SIGTERM."""
    from fastwhisper.serve import ServerConfig, create_app
    from fastwhisper.serve.runner import serve

    [(name, kind)] = parse_models(args.models)
    model = build_model(name, kind, args.device)
    config = ServerConfig(model_name=name, batch_size=args.batch_size, decoder=args.decoder,
                          batch_wait=float(args.batch_wait),
                          fixed_options=fixed_options(model, kind, args.tokens, args.device), max_queue=1024,
                          max_upload_bytes=256 << 20)
    serve(create_app(model, config), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


class Server:
    def __init__(self, name: str, kind: str, args, batch_wait: float):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, __file__, "--serve", "--models", f"{name}={kind}", "--port", str(self.port),
                   "--device", args.device, "--batch_size", str(args.batch_size), "--decoder", args.decoder,
                   "--tokens", str(args.tokens), "--batch_wait", str(batch_wait)]
        self.proc = subprocess.Popen(command)
        deadline = time.monotonic() + STARTUP_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start")
            time.sleep(0.5)

    def metrics(self) -> Dict[str, float]:
        import httpx

        samples = {}
        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                samples[key] = float(value)
        return samples

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class GpuUtilisation:
    """nvidia-smi's utilisation.gpu every 100 ms, on a thread; mean over [start, stop] of a level."""

    def __init__(self, device: str):
        self.samples: List[tuple] = []
        self.proc = None
        if torch.device(device).type != "cuda":
            return
        index = torch.device(device).index or 0
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-i", str(index), "-lms", "100"], stdout=subprocess.PIPE, text=True,
                                         stderr=subprocess.DEVNULL)
        except OSError:
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append((time.perf_counter(), float(line.strip())))
            except ValueError:
                pass

    def mean(self, start: float, stop: float) -> Optional[float]:
        values = [u for t, u in self.samples if start <= t <= stop]
        return statistics.mean(values) if values else None

    def close(self):
        if self.proc is not None:
            self.proc.terminate()


async def run_level(url: str, bodies: List[bytes], concurrency: int, requests: int, name: str) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    semaphore = asyncio.Semaphore(concurrency)
    latencies: List[float] = []
    errors: List[str] = []

    async def one(client, i):
        async with semaphore:
            start = time.perf_counter()
            response = await client.post(url + "/v1/audio/transcriptions", data={"model": name},
                                         files={"file": (f"r{i}.wav", bodies[i % len(bodies)], "audio/wav")})
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
            else:
                response.json()
                latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0), limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client, i) for i in range(requests)))
        wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} of {requests} requests failed, e.g. {errors[0]}")
    return {"wall_s": wall, "latencies_s": latencies}


def bench_model(name: str, kind: str, args, rows: List[dict]) -> None:
    """The baselines and every server of one model, appended to rows (written after each server, so a run cut
    short keeps what it measured)."""
    levels = [int(c) for c in args.concurrency.split(",")]
    largest = max(max(args.requests_per_client * c, args.min_requests) for c in levels)
    audios = request_audios(max(largest, args.batch_requests, args.sequential, 1), args.audio_seconds)
    audio_s = args.audio_seconds
    row: Dict[str, object] = {"model": name, "weights": kind, "audio_seconds_per_request": audio_s,
                              "tokens_per_window": args.tokens if kind == "random" else None,
                              "batch_size": args.batch_size, "decoder": args.decoder}
    model = build_model(name, kind, args.device)
    options = fixed_options(model, kind, args.tokens, args.device)
    row.update(baselines(model, audios, options, args))
    del model
    free_device_memory(args.device)
    print(f"{name}: sequential transcribe RTFx {row['sequential_transcribe']['rtfx']:.1f}, transcribe_batch RTFx "
          f"{row['transcribe_batch']['rtfx']:.1f}", flush=True)

    bodies = [wav_bytes(a) for a in audios]
    row["levels"] = []
    rows.append(row)
    for batch_wait in [float(w) for w in str(args.batch_wait).split(",")]:
        row["levels"] += bench_server(name, kind, args, bodies, audio_s, batch_wait)
        write(rows, args)


def bench_server(name: str, kind: str, args, bodies: list, audio_s: float, batch_wait: float) -> list:
    """The concurrency levels against one server process."""
    levels = []
    gpu = GpuUtilisation(args.device)
    server = Server(name, kind, args, batch_wait)
    try:
        # warm-up: one untimed burst at the largest concurrency, so every level's batch shapes are met before
        largest = max(int(c) for c in args.concurrency.split(","))
        asyncio.run(run_level(server.url, bodies, largest, largest, name))
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            requests = max(args.requests_per_client * concurrency, args.min_requests)
            before = server.metrics()
            start = time.perf_counter()
            measured = asyncio.run(run_level(server.url, bodies, concurrency, requests, name))
            stop = time.perf_counter()
            after = server.metrics()
            lat = measured["latencies_s"]
            windows = after["fastwhisper_engine_windows_total"] - before["fastwhisper_engine_windows_total"]
            rounds = after["fastwhisper_engine_rounds_total"] - before["fastwhisper_engine_rounds_total"]
            started = after["fastwhisper_engine_jobs_started_total"] - before["fastwhisper_engine_jobs_started_total"]
            waited = (after["fastwhisper_engine_queue_wait_seconds_total"]
                      - before["fastwhisper_engine_queue_wait_seconds_total"])
            phases = {phase: (after[f'fastwhisper_engine_phase_seconds_total{{phase="{phase}"}}']
                              - before[f'fastwhisper_engine_phase_seconds_total{{phase="{phase}"}}']) / rounds
                      for phase in PHASES} if rounds else {}
            level = {"batch_wait": batch_wait, "concurrency": concurrency, "requests": requests,
                     "wall_s": measured["wall_s"], "rtfx": requests * audio_s / measured["wall_s"],
                     "p50_s": statistics.median(lat), "p95_s": percentile(lat, 95), "max_s": max(lat),
                     "gpu_util_pct": gpu.mean(start, stop), "windows_per_round": windows / rounds if rounds else None,
                     "queue_wait_s": waited / started if started else None, "phase_s_per_round": phases}
            levels.append(level)
            util = "n/a" if level["gpu_util_pct"] is None else f"{level['gpu_util_pct']:.0f}%"
            print(f"{name} batch_wait {batch_wait:g} C={concurrency:3d}: RTFx {level['rtfx']:.1f}, p50 {level['p50_s']:.2f} s, "
                  f"p95 {level['p95_s']:.2f} s, GPU {util}, windows/round {level['windows_per_round'] or 0:.1f}",
                  flush=True)
    finally:
        server.stop()
        gpu.close()
    return levels


def report(rows: List[dict]) -> str:
    lines = ["| model | weights | batch_wait | concurrency | requests | aggregate RTFx | vs sequential | "
             "vs transcribe_batch | p50 s | p95 s | GPU util | windows/round | queue wait s | "
             "per round: " + " / ".join(PHASES) + " s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        seq, batch = row["sequential_transcribe"]["rtfx"], row["transcribe_batch"]["rtfx"]
        lines.append(f"| {row['model']} | {row['weights']} | | sequential transcribe() | "
                     f"{row['sequential_transcribe']['requests']} | {seq:.1f} | 1.00 | {seq / batch:.2f} | "
                     f"{row['sequential_transcribe']['p50_s']:.2f} | {row['sequential_transcribe']['p95_s']:.2f} | "
                     "| | | |")
        lines.append(f"| {row['model']} | {row['weights']} | | transcribe_batch (batch {row['batch_size']}) | "
                     f"{row['transcribe_batch']['requests']} | {batch:.1f} | {batch / seq:.2f} | 1.00 | | | | | | |")
        for level in row.get("levels", []):
            util = "" if level["gpu_util_pct"] is None else f"{level['gpu_util_pct']:.0f}%"
            per_round = "" if level["windows_per_round"] is None else f"{level['windows_per_round']:.1f}"
            wait = "" if level.get("queue_wait_s") is None else f"{level['queue_wait_s']:.2f}"
            phases = level.get("phase_s_per_round") or {}
            split = " / ".join(f"{phases[p]:.3f}" for p in PHASES) if phases else ""
            lines.append(f"| {row['model']} | {row['weights']} | {level['batch_wait']:g} | {level['concurrency']} | "
                         f"{level['requests']} | {level['rtfx']:.1f} | {level['rtfx'] / seq:.2f} | "
                         f"{level['rtfx'] / batch:.2f} | {level['p50_s']:.2f} | {level['p95_s']:.2f} | {util} | "
                         f"{per_round} | {wait} | {split} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="large-v3=random,turbo=random,tiny.en=real",
                   help="NAME=random|real, comma separated")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--concurrency", default="1,4,16,64")
    p.add_argument("--min_requests", type=int, default=8, help="requests per level at least")
    p.add_argument("--requests_per_client", type=int, default=4,
                   help="requests per level: this many per client in flight (the first ones arrive together, so a "
                        "few per client are needed to see the rounds a steady load makes)")
    p.add_argument("--audio_seconds", type=float, default=30.0, help="audio per request")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="token budget per window (random weights)")
    p.add_argument("--batch_size", type=int, default=64, help="the server's (and transcribe_batch's) batch size")
    p.add_argument("--decoder", default="cpp")
    p.add_argument("--batch_wait", default="0,0.1", help="the servers' --batch_wait values, comma separated: one "
                   "server (and every level) per value")
    p.add_argument("--sequential", type=int, default=4, help="requests timed one by one with transcribe()")
    p.add_argument("--batch_requests", type=int, default=64, help="requests in the transcribe_batch baseline")
    p.add_argument("--batch_repeats", type=int, default=3,
                   help="timed transcribe_batch runs (their median), after one untimed run")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    p.add_argument("--commit", default=None, help="recorded in the output (default: $FASTWHISPER_COMMIT or git HEAD)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve_main(args)
    rows = []
    for name, kind in parse_models(args.models):
        bench_model(name, kind, args, rows)
    print(report(rows))
    return 0


def write(rows: list, args) -> None:
    """OUT (JSON: meta, rows, report) and OUT with .md (the report)."""
    if args.out is None:
        return
    text = report(rows)
    meta = {"device": device_name(args.device), "commit": args.commit or git_commit(), "torch": torch.__version__,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    title = f"# fastwhisper-serve under load ({meta['device']}, commit {meta['commit']}, {time.strftime('%Y-%m-%d')})"
    write_outputs(args.out, {"meta": meta, "rows": rows, "report": text}, f"{title}\n\n{text}\n")


if __name__ == "__main__":
    sys.exit(main())
