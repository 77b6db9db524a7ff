"""Running the application under uvicorn with a draining shutdown: on SIGINT/SIGTERM the server stops taking
connections, answers new requests on open connections with 503, and finishes the requests in flight."""

import contextlib
import threading

import uvicorn
from fastapi import FastAPI


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self._service = app.state.service

    def handle_exit(self, sig, frame) -> None:
        self._service.draining = True
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        """uvicorn's, without raising the caught signal again after the drain: the command then exits with 0."""
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> DrainingServer:
    # timeout_graceful_shutdown None: wait for every request in flight, however long its audio
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=None,
                            timeout_keep_alive=30)
    return DrainingServer(config, app)


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve `app` until SIGINT/SIGTERM (in the main thread)."""
    make_server(app, host, port, log_level).run()


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
    """Start serving `app` on a daemon thread; returns (server, thread, port) once it listens. Stop it with
    `server.should_exit = True` (after setting app.state.service.draining) and thread.join()."""
    server = make_server(app, host, port, log_level)
    server.install_signal_handlers = lambda: None  # only the main thread may install them
    thread = threading.Thread(target=server.run, name="fastwhisper-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server failed to start")
        threading.Event().wait(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, port
