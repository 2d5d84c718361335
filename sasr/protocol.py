"""Every wire shape sasr speaks, as msgspec Structs: the single source of truth for clients and server.

HTTP shapes follow OpenAI's audio API (`POST /v1/audio/transcriptions`, `GET /v1/models`) and its
error object, so the official `openai` SDK works unchanged.
"""

from __future__ import annotations

import enum

import msgspec


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


class VerboseTranscription(msgspec.Struct):
    """response_format=verbose_json."""

    task: str
    language: str  # full English name, e.g. "english", as OpenAI returns it
    duration: float
    text: str
    segments: list[Segment]
    usage: Usage


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
