"""Every wire shape sasr speaks, as msgspec Structs: the single source of truth for clients and server.

HTTP shapes follow OpenAI's audio API (`POST /v1/audio/transcriptions`, `GET /v1/models`) and its
error object, so the official `openai` SDK works unchanged.
"""

from __future__ import annotations

import enum

import msgspec

MODEL_ALIASES = ("whisper-1",)  # accepted as `model` besides the served name, so code written for OpenAI works


class ResponseFormat(str, enum.Enum):
    JSON = "json"
    TEXT = "text"
    VERBOSE_JSON = "verbose_json"
    SRT = "srt"
    VTT = "vtt"


class Segment(msgspec.Struct):
    """One timed piece of a transcript (verbose_json `segments[]`)."""

    id: int
    seek: int  # mel frame (10 ms) at which the window that produced it started
    start: float  # seconds from the start of the audio
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class Usage(msgspec.Struct):
    seconds: int  # audio duration, rounded up, as OpenAI bills it
    type: str = "duration"


class Transcription(msgspec.Struct):
    """response_format=json."""

    text: str
    usage: Usage


class Word(msgspec.Struct):
    """One timed word (verbose_json `words[]`, with timestamp_granularities[]=word)."""

    word: str  # as spoken, without the leading space
    start: float  # seconds from the start of the audio
    end: float


class VerboseTranscription(msgspec.Struct, omit_defaults=True):
    """response_format=verbose_json."""

    task: str
    language: str  # full English name, e.g. "english", as OpenAI returns it
    duration: float
    text: str
    segments: list[Segment]
    usage: Usage
    words: list[Word] | None = None  # only with timestamp_granularities[]=word: absent from the JSON otherwise


class Model(msgspec.Struct):
    id: str
    created: int
    owned_by: str = "sasr"
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[Model]
    object: str = "list"


class ErrorCode(str, enum.Enum):
    """Machine-readable `error.code` values of HTTP errors."""

    INVALID_AUDIO = "invalid_audio"  # not decodable as audio
    EMPTY_FILE = "empty_file"
    MISSING_FIELD = "missing_required_parameter"
    INVALID_VALUE = "invalid_value"  # a field with a value outside what is accepted
    UNSUPPORTED_VALUE = "unsupported_value"  # a valid OpenAI value sasr does not implement yet
    MODEL_NOT_FOUND = "model_not_found"
    AUDIO_TOO_LONG = "audio_too_long"
    FILE_TOO_LARGE = "file_too_large"
    SERVER_BUSY = "server_busy"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL_ERROR = "internal_error"


class ErrorBody(msgspec.Struct):
    message: str
    type: str  # "invalid_request_error" for client mistakes, "server_error" for faults
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


# -- SSE: POST /v1/audio/transcriptions with stream=true (OpenAI's transcription stream events) -------


class TranscriptTextDelta(msgspec.Struct, tag_field="type", tag="transcript.text.delta"):
    delta: str


class TranscriptTextDone(msgspec.Struct, tag_field="type", tag="transcript.text.done"):
    text: str
    usage: Usage


# -- WebSocket /v1/audio/transcriptions/stream: the live protocol ------------------------------------

SAMPLE_ENCODINGS = ("pcm16", "f32")  # little-endian signed 16-bit, or 32-bit float
SAMPLE_RATES_KHZ = (8, 16, 24, 48)
AUDIO_FORMATS = tuple(f"{enc}_{khz}k_mono" for enc in SAMPLE_ENCODINGS for khz in SAMPLE_RATES_KHZ)
DEFAULT_AUDIO_FORMAT = "pcm16_16k_mono"


class SessionStart(msgspec.Struct, tag_field="type", tag="session.start", forbid_unknown_fields=True):
    """client -> server: opens the session; binary audio frames follow."""

    language: str | None = None
    audio_format: str = DEFAULT_AUDIO_FORMAT  # one of AUDIO_FORMATS
    model: str | None = None
    partials: bool = False  # extension: also send transcript.partial with the unstable tail


class SessionEnd(msgspec.Struct, tag_field="type", tag="session.end", forbid_unknown_fields=True):
    """client -> server: no more audio; the server flushes and sends transcript.final."""


ClientEvent = SessionStart | SessionEnd


class SessionStarted(msgspec.Struct, tag_field="type", tag="session.started"):
    session_id: str


class TranscriptDelta(msgspec.Struct, tag_field="type", tag="transcript.delta", omit_defaults=True):
    """One committed word (with its leading space after the first), never retracted."""

    delta: str
    audio_ms: int  # session audio the inference that produced it had heard
    # extension: where the word was spoken on the session's audio clock (from the decoder's attention;
    # omitted by models that cannot tell)
    start_ms: int | None = None
    end_ms: int | None = None


class TranscriptPartial(msgspec.Struct, tag_field="type", tag="transcript.partial"):
    """The not-yet-stable tail after the committed text; replaces the previous partial."""

    text: str
    audio_ms: int


class TranscriptFinal(msgspec.Struct, tag_field="type", tag="transcript.final"):
    text: str  # the whole transcript: equal to the concatenated deltas
    audio_ms: int


class StreamErrorCode(str, enum.Enum):
    INVALID_JSON = "invalid_json"
    INVALID_PAYLOAD = "invalid_payload"  # wrong field types, unknown fields
    INVALID_STATE = "invalid_state"  # audio before start, start twice, end before start
    INVALID_AUDIO_FORMAT = "invalid_audio_format"
    UNKNOWN_MESSAGE = "unknown_message"
    BUFFER_OVERFLOW = "buffer_overflow"
    UNSUPPORTED_MODEL = "unsupported_model"
    INTERNAL_ERROR = "internal_error"
    TOO_MANY_SESSIONS = "too_many_sessions"


class StreamError(msgspec.Struct, tag_field="type", tag="error"):
    code: StreamErrorCode
    message: str


ServerEvent = SessionStarted | TranscriptDelta | TranscriptPartial | TranscriptFinal | StreamError

client_event_decoder = msgspec.json.Decoder(ClientEvent)
server_event_decoder = msgspec.json.Decoder(ServerEvent)
