"""WS /v1/audio/transcriptions/stream: the live protocol (shared/DESIGN.md section 1), thin over Session."""

from __future__ import annotations

import logging
from dataclasses import fields, replace

import msgspec
from litestar import WebSocket, websocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect

from sasr.engine import LiveOptions
from sasr.live.commit import TimedWord
from sasr.live.session import BufferOverflow, Listener, Session
from sasr.protocol import (
    AUDIO_FORMATS,
    MODEL_ALIASES,
    ClientEvent,
    SessionEnd,
    SessionStart,
    SessionStarted,
    StreamError,
    StreamErrorCode,
    TranscriptDelta,
    TranscriptFinal,
    TranscriptPartial,
    client_event_decoder,
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
# close codes: 1008 policy violation (client mistakes), 1011 server fault, 1012 restarting, 1013 try again later
_CLOSE_CODES = {StreamErrorCode.INTERNAL_ERROR: 1011, StreamErrorCode.TOO_MANY_SESSIONS: 1013,
                StreamErrorCode.SHUTTING_DOWN: 1012}


class StreamFailure(Exception):
    def __init__(self, code: StreamErrorCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


_REFUSALS = {"json": StreamErrorCode.INVALID_JSON, "shape": StreamErrorCode.INVALID_PAYLOAD,
             "unknown": StreamErrorCode.UNKNOWN_MESSAGE, "fields": StreamErrorCode.INVALID_PAYLOAD}


def parse_event(text: str | bytes) -> ClientEvent:
    try:
        return decode_event(client_event_decoder, text)
    except BadEvent as bad:
        raise StreamFailure(_REFUSALS[bad.kind], bad.message) from None


def open_session(start: SessionStart, socket: WebSocket, state: State) -> Session:
    if start.model and start.model not in (state.served_model_name, *MODEL_ALIASES):
        raise StreamFailure(StreamErrorCode.UNSUPPORTED_MODEL,
                            f"model {start.model!r} is not served here; this server serves {state.served_model_name!r}")
    if start.audio_format not in AUDIO_FORMATS:
        raise StreamFailure(StreamErrorCode.INVALID_AUDIO_FORMAT,
                            f"audio_format {start.audio_format!r} is not one of {', '.join(AUDIO_FORMATS)}")
    if start.language and start.language not in state.engine.languages:
        raise StreamFailure(StreamErrorCode.INVALID_PAYLOAD, f"language {start.language!r} is not supported by this model")
    if len(state.sessions) >= state.config.max_sessions:
        raise StreamFailure(StreamErrorCode.TOO_MANY_SESSIONS, f"the server holds {state.config.max_sessions} sessions already")

    asked = {f.name: getattr(start, f.name) for f in fields(LiveOptions) if getattr(start, f.name) is not None}
    if unsupported := sorted(LiveOptions(**asked).chosen() - state.engine.live_options):  # (a default asked for: fine)
        raise StreamFailure(StreamErrorCode.INVALID_PAYLOAD,
                            f"{', '.join(unsupported)}: not a choice this model's live policy takes")
    return Session(state.engine, StreamListener(socket, start.partials), start.audio_format, start.language,
                   chunk_s=state.config.chunk_seconds, max_buffer_s=state.config.max_buffer_seconds,
                   max_file_s=state.config.max_audio_seconds, options=replace(live_defaults(state.config), **asked))


class StreamListener(Listener):
    """A live session's words as the seed protocol's events: one delta a word, partials if asked for."""

    def __init__(self, socket: WebSocket, partials: bool) -> None:
        self.socket, self.partials = socket, partials
        self.started = False  # a word has been sent

    async def send(self, event) -> None:
        await self.socket.send_text(msgspec.json.encode(event).decode())

    async def words(self, words: list[TimedWord], audio_ms: int) -> None:
        for word in words:
            timed = word.start_s is not None
            await self.send(TranscriptDelta(
                delta=" " + word.text if self.started else word.text, audio_ms=audio_ms,
                start_ms=round(word.start_s * 1000) if timed else None,
                end_ms=round(word.end_s * 1000) if timed else None,
            ))
            self.started = True

    async def partial(self, text: str, audio_ms: int) -> None:
        if self.partials:
            await self.send(TranscriptPartial(text=text, audio_ms=audio_ms))


async def finish(socket: WebSocket, session: Session, close_code: int) -> None:
    """Decode what is left, send transcript.final, close."""
    await session.finish()
    final = TranscriptFinal(text=session.text, audio_ms=session.received_ms)
    await socket.send_text(msgspec.json.encode(final).decode())
    await socket.close(close_code, reason="server shutting down" if close_code == 1012 else "")


async def fail(socket: WebSocket, code: StreamErrorCode, message: str) -> None:
    try:
        await socket.send_text(msgspec.json.encode(StreamError(code=code, message=message)).decode())
        await socket.close(_CLOSE_CODES.get(code, 1008), reason=code.value)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client is gone already


@websocket("/v1/audio/transcriptions/stream")
async def transcription_stream(socket: WebSocket, state: State) -> None:
    authorized = await accept(socket)
    session: Session | None = None
    metrics = state.metrics
    stop = draining(state)
    try:
        if not authorized:
            raise StreamFailure(StreamErrorCode.UNAUTHORIZED, "a valid API key is required")
        if state.draining.is_set():
            raise StreamFailure(StreamErrorCode.SHUTTING_DOWN, "the server is shutting down; reconnect shortly")
        while True:
            message = await next_message(socket, session, stop)
            if message["type"] == "websocket.disconnect":
                count_lost(state, message, "stream")
                return  # the client vanished: finally frees the session
            if message.get("bytes") is not None:
                if session is None:
                    raise StreamFailure(StreamErrorCode.INVALID_STATE, "audio before session.start")
                session.feed(message["bytes"])
                continue
            match parse_event(message.get("text") or ""):
                case SessionStart() as start:
                    if session is not None:
                        raise StreamFailure(StreamErrorCode.INVALID_STATE, "session.start sent twice")
                    session = open_session(start, socket, state)
                    state.sessions.add(session)
                    metrics.inc("sasr_stream_sessions_total", help="Live sessions started", protocol="stream")
                    await socket.send_text(msgspec.json.encode(SessionStarted(session_id=session.id)).decode())
                case SessionEnd():
                    if session is None:
                        raise StreamFailure(StreamErrorCode.INVALID_STATE, "session.end before session.start")
                    await finish(socket, session, 1000)
                    return
    except Draining:  # the text of the audio received, then 1012: the client may reconnect and go on
        if session is None:
            await fail(socket, StreamErrorCode.SHUTTING_DOWN, "the server is shutting down; reconnect shortly")
        else:
            try:
                await finish(socket, session, 1012)
            except (WebSocketDisconnect, OSError):
                pass  # the client went away meanwhile
            except Exception:
                log.exception("live session failed while draining")
                await fail(socket, StreamErrorCode.INTERNAL_ERROR, "internal server error")
    except StreamFailure as exc:
        metrics.inc("sasr_stream_errors_total", help="Live sessions ended by an error", protocol="stream", code=exc.code.value)
        await fail(socket, exc.code, exc.message)
    except BufferOverflow as exc:
        metrics.inc("sasr_stream_errors_total", help="Live sessions ended by an error", protocol="stream", code="buffer_overflow")
        await fail(socket, StreamErrorCode.BUFFER_OVERFLOW, str(exc))
    except (WebSocketDisconnect, OSError):  # the client went away (uvicorn's ClientDisconnected is an OSError)
        pass
    except Exception:
        log.exception("live session failed")
        metrics.inc("sasr_stream_errors_total", help="Live sessions ended by an error", protocol="stream", code="internal_error")
        await fail(socket, StreamErrorCode.INTERNAL_ERROR, "internal server error")
    finally:
        stop.cancel()
        if session is not None:
            session.cancel()
            state.sessions.discard(session)
