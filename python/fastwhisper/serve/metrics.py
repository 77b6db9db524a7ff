"""The server's Prometheus metrics (GET /metrics), in a registry of its own.

Queue depth (requests admitted and not yet answered), the engine's jobs, live streams and waiting audios (read
from fastwhisper.engine.stats at each scrape), its windows and audio seconds as counters (rate() of them gives
windows/s and audio s/s), the requests by endpoint and status, their latency, and the errors by kind.
"""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import engine
from .service import TranscriptionService

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class _EngineCollector(Collector):
    def __init__(self, service: TranscriptionService):
        self._service = service

    def collect(self):
        stats = engine.stats(self._service.model)
        yield GaugeMetricFamily("fastwhisper_queue_depth", "Requests admitted and not yet answered (uploading, "
                                "decoding, waiting or transcribing)", value=self._service.in_flight)
        yield GaugeMetricFamily("fastwhisper_queue_limit", "Requests admitted at most (more get 429)",
                                value=self._service.config.max_queue)
        yield GaugeMetricFamily("fastwhisper_draining", "1 while the server shuts down", value=int(self._service.draining))
        yield GaugeMetricFamily("fastwhisper_engine_jobs", "Jobs on the model's engine", value=stats["jobs"])
        yield GaugeMetricFamily("fastwhisper_engine_live_streams", "Audios being transcribed by the engine",
                                value=stats["live_streams"])
        yield GaugeMetricFamily("fastwhisper_engine_waiting_audios", "Audios of the engine's jobs not started yet",
                                value=stats["waiting_audios"])
        yield CounterMetricFamily("fastwhisper_engine_rounds", "Scheduler rounds run", value=stats["rounds"])
        yield CounterMetricFamily("fastwhisper_engine_windows", "30-s windows encoded and decoded (rate: windows/s)",
                                  value=stats["windows"])
        yield CounterMetricFamily("fastwhisper_engine_audio_seconds", "Audio seconds behind the decoded windows "
                                  "(rate: audio s/s)", value=stats["audio_seconds"])
        yield CounterMetricFamily("fastwhisper_engine_jobs_started", "Jobs (requests) that reached their first "
                                  "scheduler round", value=stats["jobs_started"])
        yield CounterMetricFamily("fastwhisper_engine_queue_wait_seconds", "Seconds jobs waited from their submission "
                                  "to the start of their first round (divided by jobs_started: the mean wait)",
                                  value=stats["queue_wait_seconds"])
        phases = CounterMetricFamily("fastwhisper_engine_phase_seconds", "The scheduler thread's seconds in each "
                                     "phase of its rounds (hold: waiting for returning clients)", labels=["phase"])
        for phase, seconds in stats["phase_seconds"].items():
            phases.add_metric([phase], seconds)
        yield phases


class ServerMetrics:
    def __init__(self, service: TranscriptionService):
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(service))
        self.requests = Counter("fastwhisper_requests", "Requests answered, by endpoint and HTTP status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("fastwhisper_request_latency_seconds", "Time from a request's arrival to its "
                                 "complete answer (successful requests)", ["endpoint"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.audio_seconds = Counter("fastwhisper_request_audio_seconds", "Audio seconds of the requests answered",
                                     ["endpoint"], registry=self.registry)
        self.errors = Counter("fastwhisper_errors", "Failed requests by kind of error", ["kind"],
                              registry=self.registry)

    def answered(self, endpoint: str, status: int, seconds: float, audio_seconds: float = 0.0) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status < 400:
            self.latency.labels(endpoint).observe(seconds)
            self.audio_seconds.labels(endpoint).inc(audio_seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(kind or "unknown").inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
