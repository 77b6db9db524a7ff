"""fastwhisper-serve, the OpenAI-compatible server: a live server process (tiny.en, CPU) on 127.0.0.1, driven by
OpenAI's own Python client and by raw HTTP.

Each answer is checked against model.transcribe() of the same audio in this process (and that, once, against
openai-whisper's whisper.transcribe), so a request that got another request's transcript, or a batch that
changed a transcript, fails. Also: every response_format, word timestamps, streaming, translations, the error
answers (OpenAI's error JSON with the right status and field), 8 clients at once, a client that disconnects
(its job leaves the engine), the queue limit and a draining shutdown, and the server's memory over 200 requests.
"""

import concurrent.futures
import io
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
pytest.importorskip("prometheus_client")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
soundfile = pytest.importorskip("soundfile")

from whisper.transcribe import transcribe as whisper_transcribe  # noqa: E402
from whisper.utils import WriteSRT, WriteVTT  # noqa: E402

import fastwhisper  # noqa: E402
from conftest import assert_same_result  # noqa: E402
from real_models import SAMPLES_DIR, fast_model, require  # noqa: E402

pytestmark = pytest.mark.real_weights

SHORT = str(SAMPLES_DIR / "pocketsphinx_goforward.flac")
SPEECH = [str(SAMPLES_DIR / name) for name in ("librivox_sense_and_sensibility_0870.flac",
                                                "librivox_sense_and_sensibility_0890.flac",
                                                "pocketsphinx_goforward.flac", "cards_005.flac")]
LONG = str(SAMPLES_DIR / "long_pocketsphinx_concat.flac")  # 72.7 s: several windows and segments
MEDIUM_SECONDS = 35.0  # the first 35 s of LONG: two windows, several segments
MAX_UPLOAD_MB = 3
MAX_AUDIO_SECONDS = 100
OPTIONS = dict(fp16=False)  # what the server runs on the CPU
STARTUP_S = 180


# ---- servers ----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m fastwhisper.serve` on a free port of 127.0.0.1, ready once /health answers."""

    def __init__(self, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(fastwhisper.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastwhisper.serve", "--model", "tiny.en", "--device", "cpu", "--port",
             str(self.port), "--log_level", "warning", *flags],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._output = []
        threading.Thread(target=self._read_output, daemon=True).start()
        deadline = time.monotonic() + STARTUP_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.output}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start in {STARTUP_S} s:\n{self.output}")
            time.sleep(0.2)

    def _read_output(self):
        for line in self.proc.stdout:
            self._output.append(line)

    @property
    def output(self) -> str:
        return "".join(self._output[-200:])

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/PID/status")

    def metrics(self) -> dict:
        """The server's Prometheus samples: {'name{labels}': value}."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server():
    require("tiny.en")
    srv = ServerProcess("--max_upload_mb", str(MAX_UPLOAD_MB), "--max_audio_seconds", str(MAX_AUDIO_SECONDS),
                        "--max_queue", "32", "--batch_size", "8")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model():
    return fast_model("tiny.en")


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> str:
    """A flac file of the first MEDIUM_SECONDS of LONG."""
    path = tmp_path_factory.mktemp("audio") / "medium.flac"
    soundfile.write(str(path), fastwhisper.load_audio(LONG)[:int(MEDIUM_SECONDS * 16000)], 16000)
    return str(path)


_references = {}


def reference(model, path: str, **options) -> dict:
    """model.transcribe(path) in this process, with the options the server runs with."""
    key = (path, tuple(sorted(options.items())))
    if key not in _references:
        _references[key] = model.transcribe(path, **OPTIONS, **options)
    return _references[key]


def upload(path: str):
    return open(path, "rb")


def post(server, fields=None, files=None, endpoint="transcriptions", **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/audio/{endpoint}", data=fields or {}, files=files, timeout=300, **kwargs)


def assert_openai_error(response: httpx.Response, status: int, param, code=None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["param"] == param, body
    assert body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


# ---- response formats -------------------------------------------------------------------------------

def test_json_and_text(client, model):
    expected = reference(model, SPEECH[0])["text"].strip()
    assert expected, "the sample has speech"
    result = client.audio.transcriptions.create(model="tiny.en", file=upload(SPEECH[0]))
    assert result.text == expected
    assert result.usage.seconds == pytest.approx(7.1, abs=0.05)
    text = client.audio.transcriptions.create(model="whisper-1", file=upload(SPEECH[0]), response_format="text")
    assert text == expected + "\n"


@pytest.mark.parametrize("fmt, writer", [("srt", WriteSRT), ("vtt", WriteVTT)])
def test_subtitles(client, model, medium, fmt, writer):
    expected = reference(model, medium)
    out = io.StringIO()
    writer(output_dir=".").write_result(expected, out, {"max_line_width": None, "max_line_count": None,
                                                        "highlight_words": False})
    subtitles = client.audio.transcriptions.create(model="tiny.en", file=upload(medium), response_format=fmt)
    assert subtitles == out.getvalue()
    cues = re.findall(r"([\d:]+[.,]\d\d\d) --> ([\d:]+[.,]\d\d\d)", subtitles)
    assert len(cues) == len(expected["segments"]) > 1
    assert subtitles.startswith("WEBVTT") == (fmt == "vtt")


def test_verbose_json_segments(client, model, medium):
    expected = reference(model, medium)
    result = client.audio.transcriptions.create(model="tiny.en", file=upload(medium), response_format="verbose_json")
    assert result.language == "english" and result.text == expected["text"].strip()
    assert result.duration == MEDIUM_SECONDS
    assert result.words is None
    assert len(result.segments) == len(expected["segments"]) > 1
    for ours, theirs in zip(result.segments, expected["segments"]):
        for field in ("id", "seek", "start", "end", "text", "tokens", "temperature", "compression_ratio"):
            assert getattr(ours, field) == theirs[field], field
        assert ours.avg_logprob == pytest.approx(theirs["avg_logprob"], abs=1e-5)


def test_word_timestamps(client, model):
    expected = reference(model, SPEECH[3], word_timestamps=True)
    words = [w for segment in expected["segments"] for w in segment["words"]]
    assert len(words) > 5
    result = client.audio.transcriptions.create(model="tiny.en", file=upload(SPEECH[3]),
                                                response_format="verbose_json",
                                                timestamp_granularities=["word", "segment"])
    assert [(w.word, w.start, w.end) for w in result.words] == [(w["word"], w["start"], w["end"]) for w in words]
    assert [s.text for s in result.segments] == [s["text"] for s in expected["segments"]]


def test_verbose_json_with_word_granularity_only_has_no_segments(model):
    from fastwhisper.serve.fields import AudioRequest
    from fastwhisper.serve.formats import verbose_json

    expected = reference(model, SPEECH[3], word_timestamps=True)
    request = AudioRequest(upload=None, task="transcribe", response_format="verbose_json", stream=False,
                           granularities=("word",), options={})
    body = verbose_json(expected, request, 3.5)
    assert "segments" not in body and body["language"] == "english" and body["duration"] == 3.5
    assert [w["word"] for w in body["words"]] == [w["word"] for s in expected["segments"] for w in s["words"]]


def test_streaming_sends_each_segment_then_the_text(client, model, medium):
    expected = reference(model, medium)
    assert len(expected["segments"]) > 1
    events = list(client.audio.transcriptions.create(model="tiny.en", file=upload(medium), stream=True))
    assert [e.type for e in events] == ["transcript.text.delta"] * len(expected["segments"]) + ["transcript.text.done"]
    assert [e.delta for e in events[:-1]] == [s["text"] for s in expected["segments"]]
    assert [(e.start, e.end) for e in events[:-1]] == [(s["start"], s["end"]) for s in expected["segments"]]
    assert events[-1].text == expected["text"].strip()


def test_translation(client, model):
    expected = reference(model, SPEECH[3], task="translate")
    result = client.audio.translations.create(model="tiny.en", file=upload(SPEECH[3]))
    assert result.text == expected["text"].strip() != ""
    verbose = client.audio.translations.create(model="tiny.en", file=upload(SPEECH[3]), response_format="verbose_json")
    assert getattr(verbose, "task", None) == "translate"
    assert [s.text for s in verbose.segments] == [s["text"] for s in expected["segments"]]


def test_prompt_language_and_temperature(client, model):
    expected = reference(model, SPEECH[0], initial_prompt="Dashwood. Austen.", language="en",
                         temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    result = client.audio.transcriptions.create(model="tiny.en", file=upload(SPEECH[0]), prompt="Dashwood. Austen.",
                                                language="en", temperature=0.0, response_format="verbose_json")
    assert [s.tokens for s in result.segments] == [s["tokens"] for s in expected["segments"]]


# ---- models, health, metrics ------------------------------------------------------------------------

def test_models_health_and_metrics(server, client):
    assert [m.id for m in client.models.list()] == ["tiny.en", "whisper-1"]
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("large-v9")
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny.en"
    client.audio.transcriptions.create(model="tiny.en", file=upload(SPEECH[0]), response_format="text")
    response = httpx.get(server.url + "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = server.metrics()
    for name in ("fastwhisper_queue_depth", "fastwhisper_engine_live_streams", "fastwhisper_engine_windows_total",
                 "fastwhisper_engine_audio_seconds_total", "fastwhisper_engine_jobs",
                 "fastwhisper_engine_jobs_started_total", "fastwhisper_engine_queue_wait_seconds_total"):
        assert name in samples, name
    for phase in ("prepare", "encode", "decode", "finish"):  # the request above ran a round
        assert samples[f'fastwhisper_engine_phase_seconds_total{{phase="{phase}"}}'] > 0, phase
    assert 'fastwhisper_engine_phase_seconds_total{phase="hold"}' in samples
    assert "fastwhisper_request_latency_seconds_bucket" in response.text


# ---- errors -----------------------------------------------------------------------------------------

def wav_bytes(seconds: float, sr: int = 8000, subtype: str = "PCM_U8") -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, int(seconds * sr)).astype(np.float32)
    soundfile.write(buffer, noise, sr, format="WAV", subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize("fields, files, param, code", [
    ({"model": "tiny.en"}, None, "file", "missing_required_parameter"),
    ({"model": "tiny.en", "file": "not a file"}, None, "file", None),
    ({"model": "tiny.en"}, {"file": ("speech.wav", b"RIFF\x00\x00garbage" * 50, "audio/wav")}, "file", "invalid_audio"),
    ({"model": "tiny.en"}, {"file": ("speech.flac", b"", "audio/flac")}, "file", "invalid_audio"),
    ({"model": "tiny.en"}, {"file": ("noise.xyz", os.urandom(5000), "application/octet-stream")}, "file",
     "invalid_audio"),
    ({"model": "gpt-9"}, "short", "model", "model_not_found"),
    ({"model": "tiny.en", "response_format": "xml"}, "short", "response_format", None),
    ({"model": "tiny.en", "temperature": "1.5"}, "short", "temperature", None),
    ({"model": "tiny.en", "temperature": "-0.1"}, "short", "temperature", None),
    ({"model": "tiny.en", "temperature": "warm"}, "short", "temperature", None),
    ({"model": "tiny.en", "language": "klingon"}, "short", "language", None),
    ({"model": "tiny.en", "stream": "maybe"}, "short", "stream", None),
    ({"model": "tiny.en", "timestamp_granularities[]": "char", "response_format": "verbose_json"}, "short",
     "timestamp_granularities[]", None),
    ({"model": "tiny.en", "timestamp_granularities[]": "word"}, "short", "timestamp_granularities[]", None),
])
def test_bad_fields_and_bad_audio_are_400(server, fields, files, param, code):
    if files == "short":
        files = {"file": ("speech.flac", Path(SHORT).read_bytes(), "audio/flac")}
    error = assert_openai_error(post(server, fields, files), 400, param, code)
    assert error["type"] == "invalid_request_error"


def test_upload_and_duration_limits_are_413(server):
    too_big = {"file": ("big.wav", wav_bytes(MAX_UPLOAD_MB * 1.1 * 1024 * 1024 / 2 / 16000, sr=16000,
                                             subtype="PCM_16"), "audio/wav")}
    assert_openai_error(post(server, {"model": "tiny.en"}, too_big), 413, "file", "file_too_large")
    too_long = {"file": ("long.wav", wav_bytes(MAX_AUDIO_SECONDS + 20), "audio/wav")}
    assert len(too_long["file"][1]) < MAX_UPLOAD_MB * 1024 * 1024
    assert_openai_error(post(server, {"model": "tiny.en"}, too_long), 413, "file", "audio_too_long")


def test_openai_client_raises_the_servers_errors(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="gpt-9", file=upload(SHORT))
    assert info.value.body["param"] == "model" and info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="tiny.en", file=("a.wav", b"not audio at all"))
    assert info.value.body["param"] == "file"


def test_not_multipart_and_unknown_routes(server):
    assert_openai_error(httpx.post(server.url + "/v1/audio/transcriptions", json={"model": "tiny.en"}), 400, "file")
    assert_openai_error(httpx.post(server.url + "/v1/audio/transcriptions", content=b"--x\r\nbroken",
                                   headers={"content-type": "multipart/form-data; boundary=x"}), 400, "file")
    assert httpx.get(server.url + "/v1/nothing").json()["error"]["code"] == "http_404"


# ---- concurrency ------------------------------------------------------------------------------------

def test_eight_clients_at_once_each_get_their_own_transcript(server, client, model):
    paths = SPEECH + SPEECH[::-1]
    expected = [reference(model, p) for p in paths]
    assert len({e["text"] for e in expected}) == 4, "the samples differ, so a mix-up shows"
    # this process's transcribe is openai-whisper's: for one audio at least, check it against whisper.transcribe
    assert_same_result(expected[0], whisper_transcribe(model, fastwhisper.load_audio(paths[0]), **OPTIONS))

    before = server.metrics()
    barrier = threading.Barrier(len(paths))

    def one(path):
        barrier.wait()
        return client.audio.transcriptions.create(model="tiny.en", file=upload(path), response_format="verbose_json")

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        results = list(pool.map(one, paths))
    elapsed = time.monotonic() - start
    for result, theirs in zip(results, expected):
        assert result.text == theirs["text"].strip()
        assert [s.tokens for s in result.segments] == [s["tokens"] for s in theirs["segments"]]
    after = server.metrics()
    windows = after["fastwhisper_engine_windows_total"] - before["fastwhisper_engine_windows_total"]
    assert windows >= len(paths)
    started = after["fastwhisper_engine_jobs_started_total"] - before["fastwhisper_engine_jobs_started_total"]
    assert started == len(paths)
    waited = (after["fastwhisper_engine_queue_wait_seconds_total"]
              - before["fastwhisper_engine_queue_wait_seconds_total"])
    assert 0 < waited < len(paths) * elapsed, (waited, elapsed)  # eight at once: some wait for a round
    # that jobs in flight share rounds is tested without the timing of HTTP: tests/test_threads.py


def raw_request(server, fields: dict, path: str) -> socket.socket:
    """Send a multipart request on a plain socket (so the test decides when the client goes away)."""
    request = httpx.Request("POST", f"{server.url}/v1/audio/transcriptions", data=fields,
                            files={"file": (os.path.basename(path), Path(path).read_bytes(), "audio/flac")})
    body = request.read()
    head = f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() != "host") + "\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head.encode() + body)
    return sock


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_disconnects_cancels_its_job(server, stream):
    full_windows = math.ceil(72.68 / 30)  # LONG takes at least this many 30-s windows
    before = server.metrics()
    sock = raw_request(server, {"model": "tiny.en", "stream": str(stream).lower()}, LONG)
    wait_for(lambda: server.metrics()["fastwhisper_engine_live_streams"] == 1, 60, "the job to start")
    sock.close()
    wait_for(lambda: server.metrics()["fastwhisper_engine_jobs"] == 0, 30, "the job to leave the engine")
    wait_for(lambda: server.metrics()["fastwhisper_queue_depth"] == 0, 10, "the request to be released")
    after = server.metrics()
    assert after["fastwhisper_engine_live_streams"] == 0
    windows = after["fastwhisper_engine_windows_total"] - before["fastwhisper_engine_windows_total"]
    assert windows < full_windows, "the job was dropped before its audio was done"
    kind = 'fastwhisper_errors_total{kind="client_disconnected"}'
    wait_for(lambda: server.metrics().get(kind, 0) == before.get(kind, 0) + 1, 10, "the disconnect to be counted")


def test_service_refuses_when_full_or_draining():
    from fastwhisper.serve.config import ServerConfig
    from fastwhisper.serve.errors import APIError
    from fastwhisper.serve.service import TranscriptionService

    service = TranscriptionService(model=None, config=ServerConfig(model_name="m", max_queue=2))
    service.admit()
    service.admit()
    with pytest.raises(APIError) as full:
        service.admit()
    assert full.value.status == 429
    service.release()
    service.draining = True
    with pytest.raises(APIError) as draining:
        service.admit()
    assert draining.value.status == 503 and draining.value.body()["error"]["code"] == "shutting_down"
    service.close()


def read_response(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_queue_limit_429_and_shutdown_drains_the_request_in_flight(model, medium):
    require("tiny.en")
    expected = reference(model, medium)["text"].strip()
    srv = ServerProcess("--max_queue", "1")
    try:
        sock = raw_request(srv, {"model": "tiny.en", "response_format": "text"}, medium)
        wait_for(lambda: srv.metrics()["fastwhisper_engine_live_streams"] == 1, 60, "the first request to start")
        refused = post(srv, {"model": "tiny.en"}, {"file": ("s.flac", Path(SHORT).read_bytes(), "audio/flac")})
        assert_openai_error(refused, 429, None, "queue_full")
        srv.proc.send_signal(signal.SIGTERM)
        answer = read_response(sock, 120).decode()
        sock.close()
        head, _, body = answer.partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200"), answer
        assert body.strip() == expected
        assert srv.proc.wait(60) == 0, srv.output
    finally:
        srv.stop()


@pytest.mark.slow
def test_no_memory_growth_over_200_requests(server):
    short = Path(SHORT).read_bytes()
    files = [{"file": ("s.flac", short, "audio/flac")}, {"file": ("bad.wav", b"RIFFjunk" * 10, "audio/wav")}]

    def one(i):
        response = post(server, {"model": "tiny.en", "response_format": "json"}, files[int(i % 10 == 9)])
        return response.status_code

    # one client: every round holds one request, so the heap meets no new batch shape after the warm-up
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert set(pool.map(one, range(40))) == {200, 400}  # warm-up: allocator pools and caches fill
        statuses, rss = [], []
        for start in range(0, 200, 20):  # RSS after every 20 requests: a trend, not one noisy difference
            statuses += pool.map(one, range(start, start + 20))
            rss.append(server.rss_bytes())
    assert statuses.count(200) == 180 and statuses.count(400) == 20
    # a leak grows the heap all along: the second hundred requests must not add to what the first reached
    first, second = statistics.median(rss[:5]), statistics.median(rss[5:])
    assert second - first < 24 * 1024 * 1024, [r // 2**20 for r in rss]
    assert rss[-1] - rss[0] < 96 * 1024 * 1024, [r // 2**20 for r in rss]
    assert json.loads(httpx.get(server.url + "/health").text)["in_flight"] == 0


def test_temperature_and_language_fields():
    from fastwhisper.serve.fields import _language, _temperature

    assert _temperature("0") is None  # whisper.transcribe's default fallback (0.0, 0.2, ..., 1.0)
    assert _temperature("0.3") == (0.3, 0.5, 0.7, 0.9)  # whisper's CLI: np.arange(t, 1.0 + 1e-6, 0.2)
    assert _temperature("1") == (1.0,)
    assert _language("German", multilingual=True) == "de" and _language("DE", multilingual=True) == "de"
    assert _language("de", multilingual=False) == "en"  # an English-only model transcribes English


def test_command_usage_errors_exit_2(capsys):
    from fastwhisper.serve import cli

    assert cli.main(["--model", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["--decoder", "fortran"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["--max_queue", "0"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["--batch_wait", "-1"])
    assert info.value.code == 2
    assert "batch_wait" in capsys.readouterr().err
