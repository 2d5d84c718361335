"""WS /v1/realtime: OpenAI's Realtime API for transcription sessions (GA and beta), thin over Session.

One live session per connection, on the same engine, VAD and live policy as the seed protocol; the
session's turns become Realtime items. With `server_vad` each spoken stretch is an item
(speech_started, deltas while it is spoken, speech_stopped, committed, the rest of its deltas,
completed); with `turn_detection: null` the client's commit makes the item. A mistake in one event
gets an `error` event and the session goes on, as OpenAI's does; only a full server, an unknown
model at connect, too much buffered audio or a fault end it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import uuid

import msgspec
from litestar import WebSocket, websocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromQuery

from sasr.live.commit import TimedWord
from sasr.live.session import BufferOverflow, Listener, Session
from sasr.live.turns import TurnDetection
from sasr.protocol import (
    MODEL_ALIASES,
    REALTIME_LOGPROBS,
    BetaSession,
    BetaSessionConfig,
    DurationUsage,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCleared,
    InputAudioBufferCommit,
    InputAudioBufferCommitted,
    LogProb,
    NoiseReduction,
    RealtimeAudio,
    RealtimeAudioInput,
    RealtimeClientEvent,
    RealtimeError,
    RealtimeErrorBody,
    RealtimeErrorCode,
    RealtimeFormat,
    RealtimeSession,
    RealtimeSessionConfig,
    RealtimeTranscription,
    RealtimeTurnDetection,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptionCompleted,
    TranscriptionDelta,
    TranscriptionFailed,
    TranscriptionSessionCreated,
    TranscriptionSessionUpdate,
    TranscriptionSessionUpdated,
    realtime_client_decoder,
)
from sasr.server.auth import accept
from sasr.server.sockets import (
    BadEvent,
    Draining,
    count_lost,
    decode_event,
    draining,
    live_defaults,
    next_message,
)

log = logging.getLogger("sasr")
MIN_COMMIT_MS = 100  # as OpenAI: a commit needs this much audio
# GA format (type, rate) and beta format name -> the FrameDecoder format
GA_FORMATS = {("audio/pcm", 24000): "pcm16_24k_mono", ("audio/pcm", 16000): "pcm16_16k_mono",
              ("audio/pcm", 48000): "pcm16_48k_mono", ("audio/pcmu", None): "ulaw_8k_mono",
              ("audio/pcma", None): "alaw_8k_mono"}
BETA_FORMATS = {"pcm16": "pcm16_24k_mono", "g711_ulaw": "ulaw_8k_mono", "g711_alaw": "alaw_8k_mono"}
# semantic_vad has no turn model here: its eagerness picks how long a silence ends a turn
EAGERNESS_SILENCE_MS = {"high": 500, "medium": 1000, "auto": 1000, "low": 2000}
DEFAULT_TURNS = RealtimeTurnDetection("server_vad", 0.5, 300, 500)
_CLOSE_CODES = {RealtimeErrorCode.INTERNAL_ERROR: 1011, RealtimeErrorCode.TOO_MANY_SESSIONS: 1013,
                RealtimeErrorCode.SHUTTING_DOWN: 1012}


class RealtimeFailure(Exception):
    def __init__(self, code: RealtimeErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex[:20]}"


@dataclasses.dataclass
class Settings:
    """A Realtime session's effective configuration."""

    model: str
    audio_format: str = "pcm16_24k_mono"  # FrameDecoder's name for it
    transcription: RealtimeTranscription = dataclasses.field(default_factory=RealtimeTranscription)
    turn_detection: RealtimeTurnDetection | None = DEFAULT_TURNS
    noise_reduction: NoiseReduction | None = None
    include: list[str] = dataclasses.field(default_factory=list)

    @property
    def turns(self) -> TurnDetection | None:
        td = self.turn_detection
        if td is None:
            return None
        silence_ms = td.silence_duration_ms if td.type == "server_vad" else EAGERNESS_SILENCE_MS[td.eagerness or "auto"]
        return TurnDetection(td.threshold, td.prefix_padding_ms, silence_ms)

    def ga(self, session_id: str) -> RealtimeSession:
        fmt = next(RealtimeFormat(t, r or None) for (t, r), name in GA_FORMATS.items() if name == self.audio_format)
        audio = RealtimeAudio(RealtimeAudioInput(fmt, self.transcription, self.turn_detection, self.noise_reduction))
        return RealtimeSession(id=session_id, audio=audio, include=self.include)

    def beta(self, session_id: str) -> BetaSession:
        fmt = next((n for n, name in BETA_FORMATS.items() if name == self.audio_format), self.audio_format)
        return BetaSession(session_id, fmt, self.transcription, self.turn_detection, self.noise_reduction, self.include)


def accepts_model(name: str, state: State) -> bool:
    """The served model, whisper-1, or an OpenAI transcription/realtime model name (so code written for
    OpenAI works unchanged: the served model transcribes)."""
    openai_name = name.startswith("gpt-") and ("transcribe" in name or "realtime" in name)
    return name in (state.served_model_name, *MODEL_ALIASES) or openai_name


def checked_turns(td: RealtimeTurnDetection | None) -> RealtimeTurnDetection | None:
    """The turn detection with OpenAI's defaults filled in; a bad value raises."""
    if td is None:
        return None
    if td.type not in ("server_vad", "semantic_vad"):
        raise RealtimeFailure(RealtimeErrorCode.INVALID_VALUE, f"turn_detection.type {td.type!r} is not "
                              "server_vad or semantic_vad", "session.turn_detection.type")
    if td.type == "semantic_vad":
        if (td.eagerness or "auto") not in EAGERNESS_SILENCE_MS:
            raise RealtimeFailure(RealtimeErrorCode.INVALID_VALUE, f"eagerness {td.eagerness!r} is not one of "
                                  f"{', '.join(EAGERNESS_SILENCE_MS)}", "session.turn_detection.eagerness")
        return RealtimeTurnDetection("semantic_vad", DEFAULT_TURNS.threshold, DEFAULT_TURNS.prefix_padding_ms,
                                     eagerness=td.eagerness or "auto")
    filled = RealtimeTurnDetection(
        "server_vad",
        DEFAULT_TURNS.threshold if td.threshold is None else td.threshold,
        DEFAULT_TURNS.prefix_padding_ms if td.prefix_padding_ms is None else td.prefix_padding_ms,
        DEFAULT_TURNS.silence_duration_ms if td.silence_duration_ms is None else td.silence_duration_ms,
    )
    if not 0.0 <= filled.threshold <= 1.0:
        raise RealtimeFailure(RealtimeErrorCode.INVALID_VALUE, "threshold must be between 0 and 1",
                              "session.turn_detection.threshold")
    if not 0 <= filled.prefix_padding_ms <= 10_000 or not 0 < filled.silence_duration_ms <= 10_000:
        raise RealtimeFailure(RealtimeErrorCode.INVALID_VALUE, "prefix_padding_ms and silence_duration_ms must "
                              "be between 0 and 10000 (silence_duration_ms above 0)", "session.turn_detection")
    return filled


def updated(settings: Settings, event: SessionUpdate | TranscriptionSessionUpdate, state: State) -> Settings:
    """The settings after an update (fields left out keep their value); a bad value raises, changing nothing."""
    new = dataclasses.replace(settings)
    unset = msgspec.UNSET
    if isinstance(event, SessionUpdate):
        config: RealtimeSessionConfig = event.session
        if config.type != "transcription":
            raise RealtimeFailure(RealtimeErrorCode.INVALID_VALUE, "sasr serves transcription sessions: "
                                  "session.type must be 'transcription'", "session.type")
        given = config.audio.input if config.audio is not unset and config.audio.input is not unset else RealtimeAudioInput()
        if given.format is not unset:
            key = (given.format.type, (given.format.rate or 24000) if given.format.type == "audio/pcm" else None)
            if key not in GA_FORMATS:
                raise RealtimeFailure(RealtimeErrorCode.INVALID_VALUE, "format must be audio/pcm (rate 24000, 16000 "
                                      "or 48000), audio/pcmu or audio/pcma", "session.audio.input.format")
            new.audio_format = GA_FORMATS[key]
        transcription, turn_detection, noise, include = (
            given.transcription, given.turn_detection, given.noise_reduction, config.include)
    else:
        beta: BetaSessionConfig = event.session
        if beta.input_audio_format is not unset:
            if beta.input_audio_format not in BETA_FORMATS:
                raise RealtimeFailure(RealtimeErrorCode.INVALID_VALUE, "input_audio_format must be one of "
                                      f"{', '.join(BETA_FORMATS)}", "session.input_audio_format")
            new.audio_format = BETA_FORMATS[beta.input_audio_format]
        transcription, turn_detection, noise, include = (
            beta.input_audio_transcription, beta.turn_detection, beta.input_audio_noise_reduction, beta.include)
    if transcription is not unset:
        transcription = transcription or RealtimeTranscription()
        if transcription.model and not accepts_model(transcription.model, state):
            raise RealtimeFailure(RealtimeErrorCode.MODEL_NOT_FOUND, f"model {transcription.model!r} is not served "
                                  f"here; this server serves {state.served_model_name!r}", "session.transcription.model")
        if transcription.language and transcription.language not in state.engine.languages:
            raise RealtimeFailure(RealtimeErrorCode.INVALID_VALUE, f"language {transcription.language!r} is not "
                                  "supported by this model", "session.transcription.language")
        new.transcription = RealtimeTranscription(transcription.model or settings.model, transcription.language,
                                                  transcription.prompt)
    if turn_detection is not unset:
        new.turn_detection = checked_turns(turn_detection)
    if noise is not unset:
        new.noise_reduction = noise
    if include is not unset:
        if any(item != REALTIME_LOGPROBS for item in include or []):
            raise RealtimeFailure(RealtimeErrorCode.INVALID_VALUE, f"include may hold only {REALTIME_LOGPROBS!r}",
                                  "session.include")
        new.include = list(include or [])
    return new


_REFUSALS = {"json": RealtimeErrorCode.INVALID_JSON, "shape": RealtimeErrorCode.INVALID_EVENT,
             "unknown": RealtimeErrorCode.UNKNOWN_EVENT, "fields": RealtimeErrorCode.INVALID_EVENT}


def parse_event(text: str | bytes) -> RealtimeClientEvent:
    try:
        return decode_event(realtime_client_decoder, text)
    except BadEvent as bad:
        raise RealtimeFailure(_REFUSALS[bad.kind], bad.message, "type" if bad.kind == "unknown" else None) from None


class RealtimeListener(Listener):
    """A session's turns as Realtime items: each opened by speech (or by its first words), closed by
    the end of speech or the client's commit."""

    def __init__(self, send) -> None:
        self.send = send
        self.logprobs = False  # include token logprobs
        self.item_id: str | None = None  # the open item
        self.previous_item_id: str | None = None  # the last item committed
        self.transcript = ""  # the open item's deltas joined
        self.item_logprobs: list[LogProb] = []

    def _open(self) -> str:
        if self.item_id is None:
            self.item_id, self.transcript, self.item_logprobs = new_id("item"), "", []
        return self.item_id

    async def cleared(self) -> None:
        """The client's clear took effect: the open item (never committed) is gone."""
        self.item_id = None

    async def speech_started(self, start_ms: int) -> None:
        await self.send(SpeechStarted(audio_start_ms=start_ms, item_id=self._open()))

    async def words(self, words: list[TimedWord], audio_ms: int) -> None:
        item_id = self._open()
        delta = " ".join(w.text for w in words)
        delta = " " + delta if self.transcript else delta
        self.transcript += delta
        logprobs = None
        if self.logprobs:
            logprobs = [LogProb(token, lp, list(token.encode())) for w in words for token, lp in w.logprobs or []]
            self.item_logprobs += logprobs
        await self.send(TranscriptionDelta(item_id=item_id, delta=delta, logprobs=logprobs))

    async def turn_closing(self, end_ms: int, detected: bool) -> None:
        item_id = self._open()
        if detected:
            await self.send(SpeechStopped(audio_end_ms=end_ms, item_id=item_id))
        await self.send(InputAudioBufferCommitted(item_id=item_id, previous_item_id=self.previous_item_id))

    async def turn_closed(self, duration_ms: int) -> None:
        item_id = self._open()
        await self.send(TranscriptionCompleted(
            item_id=item_id, transcript=self.transcript, usage=DurationUsage(seconds=duration_ms / 1000),
            logprobs=self.item_logprobs if self.logprobs else None,
        ))
        self.previous_item_id, self.item_id = item_id, None


class Connection:
    """One Realtime WebSocket: its settings, its session, and how it sends."""

    def __init__(self, socket: WebSocket, state: State, beta: bool, model: str | None) -> None:
        self.socket, self.state, self.beta = socket, state, beta
        self.id = new_id("sess")
        self.settings = Settings(model=model or state.served_model_name)
        self.listener = RealtimeListener(self.send)
        self.session: Session | None = None

    async def send(self, event) -> None:
        event.event_id = new_id("event")
        await self.socket.send_text(msgspec.json.encode(event).decode())

    @staticmethod
    def error_body(failure: RealtimeFailure, event_id: str | None = None) -> RealtimeErrorBody:
        kind = "server_error" if failure.code is RealtimeErrorCode.INTERNAL_ERROR else "invalid_request_error"
        return RealtimeErrorBody(kind, failure.code, failure.message, failure.param, event_id)

    async def error(self, failure: RealtimeFailure, event_id: str | None = None) -> None:
        await self.send(RealtimeError(self.error_body(failure, event_id)))

    async def send_session(self, created: bool) -> None:
        if self.beta:
            kind = TranscriptionSessionCreated if created else TranscriptionSessionUpdated
            await self.send(kind(self.settings.beta(self.id)))
        else:
            kind = SessionCreated if created else SessionUpdated
            await self.send(kind(self.settings.ga(self.id)))

    def open(self) -> Session:
        settings, config = self.settings, self.state.config
        self.session = Session(
            self.state.engine, self.listener, settings.audio_format, settings.transcription.language,
            settings.transcription.prompt, settings.turns, chunk_s=config.chunk_seconds,
            max_buffer_s=config.max_buffer_seconds, max_file_s=config.max_audio_seconds,
            options=live_defaults(config),
        )
        self.session.id = self.id
        return self.session

    async def handle(self, event: RealtimeClientEvent) -> None:
        session = self.session
        match event:
            case SessionUpdate() | TranscriptionSessionUpdate():
                new = updated(self.settings, event, self.state)
                if new.audio_format != self.settings.audio_format:
                    session.set_format(new.audio_format)
                session.configure(new.transcription.language, new.transcription.prompt, new.turns)
                self.settings = new
                self.listener.logprobs = REALTIME_LOGPROBS in new.include
                await self.send_session(created=False)
            case InputAudioBufferAppend(audio=audio):
                try:
                    data = base64.b64decode(audio, validate=True)
                except (binascii.Error, ValueError):
                    raise RealtimeFailure(RealtimeErrorCode.INVALID_AUDIO, "audio is not valid base64", "audio") from None
                session.feed(data)
            case InputAudioBufferCommit():
                if session.uncommitted_ms < MIN_COMMIT_MS:
                    raise RealtimeFailure(RealtimeErrorCode.COMMIT_EMPTY, f"buffer too small: expected at least "
                                          f"{MIN_COMMIT_MS} ms of audio, the buffer holds {session.uncommitted_ms} ms")
                session.commit()
            case InputAudioBufferClear():
                session.clear()
                await self.send(InputAudioBufferCleared())


def _is_beta(socket: WebSocket) -> bool:
    return "realtime=v1" in socket.headers.get("openai-beta", "")


@websocket("/v1/realtime")
async def realtime(socket: WebSocket, state: State, model: FromQuery[str | None] = None) -> None:
    authorized = await accept(socket)
    conn = Connection(socket, state, _is_beta(socket), model)
    metrics = state.metrics
    stop = draining(state)
    try:
        if not authorized:
            raise RealtimeFailure(RealtimeErrorCode.UNAUTHORIZED, "a valid API key is required")
        if state.draining.is_set():
            raise RealtimeFailure(RealtimeErrorCode.SHUTTING_DOWN, "the server is shutting down; reconnect shortly")
        if model is not None and not accepts_model(model, state):
            raise RealtimeFailure(RealtimeErrorCode.MODEL_NOT_FOUND,
                                  f"model {model!r} is not served here; this server serves {state.served_model_name!r}",
                                  "model")
        if len(state.sessions) >= state.config.max_sessions:
            raise RealtimeFailure(RealtimeErrorCode.TOO_MANY_SESSIONS,
                                  f"the server holds {state.config.max_sessions} sessions already")
        session = conn.open()
        state.sessions.add(session)
        metrics.inc("sasr_stream_sessions_total", help="Live sessions started", protocol="realtime")
        await conn.send_session(created=True)
        while True:
            message = await next_message(socket, session, stop)
            if message["type"] == "websocket.disconnect":
                count_lost(state, message, "realtime")
                return
            event_id = None
            try:
                if message.get("bytes") is not None:
                    raise RealtimeFailure(RealtimeErrorCode.INVALID_EVENT, "binary frames are not Realtime events: "
                                          "send audio as input_audio_buffer.append")
                event = parse_event(message.get("text") or "")
                event_id = event.event_id
                await conn.handle(event)
            except RealtimeFailure as exc:  # one bad event: say so and go on
                metrics.inc("sasr_realtime_event_errors_total", help="Realtime events refused (the session goes on)",
                            code=exc.code.value)
                await conn.error(exc, event_id)
    except Draining:  # the open item is committed and completed, then 1012: the client may reconnect
        await _drain(conn)
    except RealtimeFailure as exc:
        await _fail(conn, exc)
    except BufferOverflow as exc:
        await _fail(conn, RealtimeFailure(RealtimeErrorCode.BUFFER_OVERFLOW, str(exc)))
    except (WebSocketDisconnect, OSError):  # the client went away (uvicorn's ClientDisconnected is an OSError)
        pass
    except Exception:
        log.exception("realtime session failed")
        failure = RealtimeFailure(RealtimeErrorCode.INTERNAL_ERROR, "internal server error")
        if conn.listener.item_id is not None:  # the item being transcribed fails with it
            await _quietly(conn.send(TranscriptionFailed(item_id=conn.listener.item_id, error=conn.error_body(failure))))
        await _fail(conn, failure)
    finally:
        stop.cancel()
        if conn.session is not None:
            conn.session.cancel()
            state.sessions.discard(conn.session)


async def _drain(conn: Connection) -> None:
    try:
        if conn.session.uncommitted_ms >= MIN_COMMIT_MS or conn.listener.item_id is not None:
            conn.session.commit()
        await conn.session.finish()
        await conn.socket.close(1012, reason="server shutting down")
    except (WebSocketDisconnect, OSError):
        pass  # the client went away meanwhile
    except Exception:
        log.exception("realtime session failed while draining")
        await _fail(conn, RealtimeFailure(RealtimeErrorCode.INTERNAL_ERROR, "internal server error"))


async def _fail(conn: Connection, failure: RealtimeFailure) -> None:
    """Send the error that ends the session, and close."""
    conn.state.metrics.inc("sasr_stream_errors_total", help="Live sessions ended by an error",
                           protocol="realtime", code=failure.code.value)
    await _quietly(conn.error(failure))
    await _quietly(conn.socket.close(_CLOSE_CODES.get(failure.code, 1008), reason=failure.code.value))


async def _quietly(sending) -> None:
    try:
        await sending
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client is gone already
