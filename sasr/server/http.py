"""HTTP handlers: parse the request, hand it to the engine, render what comes back."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import msgspec
import numpy as np
from litestar import Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.response import Stream
from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

from sasr.audio.constants import SAMPLE_RATE
from sasr.audio.io import AudioError, AudioTooLongError, decode_audio
from sasr.engine import EngineBusy, TranscriptionRequest
from sasr.protocol import (
    MODEL_ALIASES,
    ErrorCode,
    Model,
    ModelList,
    ResponseFormat,
    TranscriptTextDelta,
    TranscriptTextDone,
    Usage,
)
from sasr.server.errors import APIError, ClientGone
from sasr.server.formats import render

GRANULARITIES = ("segment", "word")


@dataclass
class TranscriptionForm:
    file: UploadFile
    response_format: ResponseFormat
    language: str | None
    prompt: str | None
    temperature: float
    stream: bool  # answer with Server-Sent Events, a delta per decoded segment
    word_timestamps: bool  # timestamp_granularities[] holds "word": verbose_json gets `words`


def _bad(message: str, param: str, code: ErrorCode = ErrorCode.INVALID_VALUE, status: int = 400) -> APIError:
    return APIError(status, message, code, param)


def _language(value: str | None, state: State) -> str | None:
    if not value:
        return None
    code = TO_LANGUAGE_CODE.get(value.lower(), value.lower())
    if code not in state.engine.languages:
        accepted = ", ".join(sorted(state.engine.languages))
        raise _bad(f"language {value!r} is not supported by this model (accepted: {accepted})", "language")
    return code


def _temperature(value: str | None) -> float:
    try:
        temperature = float(value) if value not in (None, "") else 0.0
    except ValueError:
        raise _bad(f"temperature must be a number, got {value!r}", "temperature") from None
    if not 0.0 <= temperature <= 1.0:
        raise _bad(f"temperature must be between 0 and 1, got {temperature}", "temperature")
    return temperature


def parse_form(form, state: State) -> TranscriptionForm:
    """Validate the multipart fields OpenAI's API defines; fields it does not define are ignored."""
    file = form.get("file")
    if file is None:
        raise _bad("the 'file' field is required", "file", ErrorCode.MISSING_FIELD)
    if not isinstance(file, UploadFile):
        raise _bad("'file' must be an uploaded file, not a text field", "file")
    model = form.get("model")
    if model and model not in (state.served_model_name, *MODEL_ALIASES):
        raise APIError(404, f"model {model!r} does not exist; this server serves {state.served_model_name!r}",
                       ErrorCode.MODEL_NOT_FOUND, "model")
    try:
        response_format = ResponseFormat(form.get("response_format") or "json")
    except ValueError:
        accepted = ", ".join(f.value for f in ResponseFormat)
        raise _bad(f"response_format must be one of {accepted}", "response_format") from None
    word_timestamps = _word_timestamps(form, response_format, state)
    stream = (form.get("stream") or "false").lower()
    if stream not in ("true", "false", "1", "0"):
        raise _bad("stream must be true or false", "stream")
    return TranscriptionForm(
        file=file,
        response_format=response_format,
        language=_language(form.get("language"), state),
        prompt=form.get("prompt") or None,
        temperature=_temperature(form.get("temperature")),
        stream=stream in ("true", "1"),
        word_timestamps=word_timestamps,
    )


def _word_timestamps(form, response_format: ResponseFormat, state: State) -> bool:
    """Whether timestamp_granularities[] asks for words, which OpenAI gives in verbose_json only."""
    granularities = form.getall("timestamp_granularities[]", []) + form.getall("timestamp_granularities", [])
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise _bad(f"timestamp_granularities takes {' and '.join(GRANULARITIES)}", "timestamp_granularities[]")
    if "word" not in granularities:
        return False
    if not state.engine.supports_word_timestamps:
        raise _bad(f"{state.served_model_name} cannot time words (word timestamps come from a Whisper model's "
                   "alignment heads, which Qwen3-ASR does not have); use 'segment'", "timestamp_granularities[]",
                   ErrorCode.UNSUPPORTED_VALUE)
    if response_format is not ResponseFormat.VERBOSE_JSON:
        raise _bad("timestamp_granularities[]=word needs response_format=verbose_json", "timestamp_granularities[]")
    return True


async def until_disconnect(request: Request, work):
    """Await `work`, cancelling it if the client disconnects first (its engine slots free at once)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientGone()
    return task.result()


class Reservation:
    """A request's place in the engine: taken before its upload is read (503 at once when the engine is
    full: a burst is refused before it is buffered or decoded) and given back exactly once, however the
    request ends (a stream's when the stream ends, or is dropped unstarted)."""

    def __init__(self, engine) -> None:
        self.held = False  # (also for __del__ when reserve() refuses)
        try:
            engine.reserve()
        except EngineBusy as exc:
            raise APIError(503, str(exc), ErrorCode.SERVER_BUSY, headers={"Retry-After": str(exc.retry_after_s)}) from None
        self.engine, self.held = engine, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.engine.release()

    __del__ = release


async def read_upload(request: Request, state: State) -> tuple[TranscriptionForm, np.ndarray]:
    """The form and its audio: the body within --upload-timeout (a slow sender cannot hold a worker),
    decoded on a bounded number of threads."""
    try:
        form = await asyncio.wait_for(request.form(), state.config.upload_timeout)
    except TimeoutError:
        raise APIError(408, f"the upload took longer than {state.config.upload_timeout:g} s",
                       ErrorCode.REQUEST_TIMEOUT) from None
    fields = parse_form(form, state)
    data = await fields.file.read()
    try:
        async with state.decode_slots:
            return fields, await asyncio.to_thread(decode_audio, data, state.config.max_audio_seconds)
    except AudioTooLongError as exc:
        raise _bad(str(exc), "file", ErrorCode.AUDIO_TOO_LONG) from None
    except AudioError as exc:
        code = ErrorCode.EMPTY_FILE if not data else ErrorCode.INVALID_AUDIO
        raise _bad(str(exc), "file", code) from None


@dataclass
class TranscriptionOperation(Operation):
    """The multipart form OpenAI's API defines, which the handler reads itself (after admission), as
    the OpenAPI schema shows it to clients and fuzzers."""

    def __post_init__(self) -> None:
        text = Schema(type=OpenAPIType.STRING)
        form = Schema(type=OpenAPIType.OBJECT, required=["file"], properties={
            "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY), "model": text, "language": text,
            "prompt": text, "response_format": Schema(type=OpenAPIType.STRING, enum=[f.value for f in ResponseFormat]),
            "temperature": Schema(type=OpenAPIType.NUMBER), "stream": Schema(type=OpenAPIType.BOOLEAN),
            "timestamp_granularities[]": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING,
                                                                                      enum=list(GRANULARITIES))),
        })
        self.request_body = RequestBody(content={"multipart/form-data": OpenAPIMediaType(schema=form)}, required=True)


@post("/v1/audio/transcriptions", status_code=200, operation_class=TranscriptionOperation)
async def create_transcription(request: Request, state: State) -> Response:
    started = time.perf_counter()
    reservation = Reservation(state.engine)
    try:
        fields, audio = await read_upload(request, state)
        # a stream sends text deltas only: no words to time
        job = TranscriptionRequest(audio, fields.language, fields.prompt, fields.temperature,
                                   word_timestamps=fields.word_timestamps and not fields.stream)
        if fields.stream:
            stream, reservation = sse_response(state, job, reservation), None  # the stream gives it back
            return stream
        result = await until_disconnect(request, state.engine.transcribe(job))
    finally:
        if reservation is not None:
            reservation.release()
    if job.word_timestamps:
        result.words = job.words  # the engine fills the request's list as it decodes
    body, media_type = render(result, fields.response_format)
    metrics = state.metrics
    metrics.inc("sasr_audio_seconds_total", result.duration_s, help="Seconds of audio transcribed")
    metrics.observe("sasr_request_latency_seconds", time.perf_counter() - started,
                    help="Time from request to response", endpoint="transcriptions")
    return Response(body, media_type=media_type)


def sse_response(state: State, job: TranscriptionRequest, reservation: Reservation) -> Stream:
    """OpenAI's transcription stream: text deltas as windows are decoded, then the whole text. Its place
    in the engine was taken before the 200, so it cannot be refused once streaming."""

    def event(payload) -> bytes:
        return b"data: " + msgspec.json.encode(payload) + b"\n\n"

    async def events():
        try:
            text = ""
            async for segment in state.engine.transcribe_segments(job):
                delta = segment.text if text else segment.text.lstrip()
                text += delta
                yield event(TranscriptTextDelta(delta=delta, start=segment.start, end=segment.end))
            usage = Usage(seconds=math.ceil(len(job.audio) / SAMPLE_RATE))
            yield event(TranscriptTextDone(text=text, usage=usage))
            yield b"data: [DONE]\n\n"
        finally:
            reservation.release()

    return Stream(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@get("/v1/models")
async def list_models(state: State) -> Response:
    models = ModelList(data=[Model(id=state.served_model_name, created=state.started_at)])
    return Response(msgspec.json.encode(models), media_type="application/json")


@get("/health")
async def health(state: State) -> Response:
    """200 ok; 503 engine_failed once the engine cannot continue, draining once a shutdown has begun
    (load balancers stop sending new work)."""
    if state.engine.failure is not None:
        return Response({"status": "engine_failed"}, status_code=503)
    if state.draining.is_set():
        return Response({"status": "draining"}, status_code=503)
    return Response({"status": "ok"})


@get("/metrics", media_type="text/plain; version=0.0.4")
async def metrics(state: State) -> str:
    return state.metrics.render({"sasr_live_sessions": len(state.sessions)}) + state.engine.render_metrics()


ROUTES = [create_transcription, list_models, health, metrics]
