"""The FastAPI application: OpenAI's audio endpoints on one fastwhisper model, plus models, health and metrics.

    POST /v1/audio/transcriptions   multipart: file, model, language, prompt, response_format, temperature,
    POST /v1/audio/translations                timestamp_granularities[], stream
    GET  /v1/models, /v1/models/{id}, /health, /metrics

Every request is a job of the model's engine (see service.py); a request that fails fails alone, with
OpenAI's error JSON and a status that says whose fault it was (400/413/429 the client's, 500/503 the server's).
"""

import asyncio
import contextlib
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from .. import engine
from ..audio import SAMPLE_RATE
from .config import ServerConfig
from .errors import APIError
from .fields import check_upload_size, parse_request
from .formats import done_event, error_event, render, segment_event
from .metrics import ServerMetrics
from .service import ClientDisconnected, TranscriptionService

ENDPOINTS = {"transcribe": "transcriptions", "translate": "translations"}
DISCONNECTED = 499  # nginx's status for a request its client abandoned (logged, never sent)
CREATED = int(time.time())


class _UploadTooLarge(Exception):
    pass


def create_app(model, config: ServerConfig) -> FastAPI:
    """The server's application for `model` (a loaded fastwhisper model)."""
    engine.set_batch_wait(model, config.batch_wait)
    service = TranscriptionService(model, config)
    metrics = ServerMetrics(service)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.draining = True
        service.close()

    app = FastAPI(title="fastwhisper", summary="OpenAI-compatible speech-to-text on fastwhisper", lifespan=lifespan)
    app.state.service, app.state.metrics = service, metrics

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return APIError(exc.status_code, str(exc.detail), code=f"http_{exc.status_code}").response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return APIError(400, str(exc), code="invalid_request").response()

    async def handle(request: Request, task: str) -> Response:
        endpoint = ENDPOINTS[task]
        start = time.perf_counter()
        try:
            service.admit()
        except APIError as exc:
            metrics.error(exc.code)
            metrics.answered(endpoint, exc.status, time.perf_counter() - start)
            return exc.response()
        handed_over = False  # a streamed answer releases its place when its last event is sent
        form = None
        try:
            form = await _read_form(request, config)
            audio_request = parse_request(form, task, config, model.is_multilingual)
            audio = await service.load(audio_request.upload)
            await form.close()
            duration = audio.shape[0] / SAMPLE_RATE
            if audio_request.stream:
                events = _events(service, metrics, audio, audio_request, request, endpoint, start, duration)
                handed_over = True
                return StreamingResponse(events, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"})
            result = await service.transcribe(audio, audio_request, request.is_disconnected)
            response = render(result, audio_request, duration)
            metrics.answered(endpoint, response.status_code, time.perf_counter() - start, duration)
            return response
        except APIError as exc:
            metrics.error(exc.code)
            metrics.answered(endpoint, exc.status, time.perf_counter() - start)
            return exc.response()
        except ClientDisconnected:
            metrics.error("client_disconnected")
            metrics.answered(endpoint, DISCONNECTED, time.perf_counter() - start)
            return Response(status_code=DISCONNECTED)
        finally:
            if form is not None:
                await form.close()
            if not handed_over:
                service.release()

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        return await handle(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request):
        return await handle(request, "translate")

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": CREATED, "owned_by": "fastwhisper"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(name) for name in config.model_names]}

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str):
        if name not in config.model_names:
            raise APIError(404, f"the model {name!r} does not exist on this server", param="model",
                           code="model_not_found")
        return model_card(name)

    @app.get("/health")
    async def health():
        status = "draining" if service.draining else "ok"
        return JSONResponse({"status": status, "model": config.model_name, "in_flight": service.in_flight},
                            status_code=503 if service.draining else 200)

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


async def _read_form(request: Request, config: ServerConfig):
    """The multipart form, refused with 413 as soon as the body is known to exceed the upload limit."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            check_upload_size(int(length), config)
        except ValueError:
            raise APIError(400, f"invalid Content-Length {length!r}", code="invalid_request") from None
    received = 0
    receive = request.receive

    async def counted_receive():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > config.max_upload_bytes:
                raise _UploadTooLarge()
        return message

    try:
        return await Request(request.scope, counted_receive).form(max_files=4, max_fields=64)
    except _UploadTooLarge:
        check_upload_size(received, config)
        raise
    except MultiPartException as exc:
        raise APIError(400, f"could not read the multipart form: {exc.message}", code="invalid_form") from exc
    except (ValueError, AssertionError) as exc:  # a malformed body or content type
        raise APIError(400, f"could not read the request body: {exc}", code="invalid_form") from exc


async def _events(service, metrics, audio, audio_request, request, endpoint, start, duration):
    """The server-sent events of a streamed request: a delta per finished segment, then the whole text; an error
    after the first event is an error event (the status line has gone)."""
    status = 200
    try:
        async for kind, item in service.stream(audio, audio_request, request.is_disconnected):
            yield segment_event(item) if kind == "segment" else done_event(item)
    except APIError as exc:
        status = exc.status
        metrics.error(exc.code)
        yield error_event(exc.body())
    except (ClientDisconnected, asyncio.CancelledError) as exc:  # cancelled: Starlette saw the client go
        status = DISCONNECTED
        metrics.error("client_disconnected")
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        service.release()
        metrics.answered(endpoint, status, time.perf_counter() - start, duration)
