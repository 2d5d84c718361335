"""Every wire shape sasr speaks, as msgspec Structs: the single source of truth for clients and server.

HTTP shapes follow OpenAI's audio API (`POST /v1/audio/transcriptions`, `GET /v1/models`) and its
error object, so the official `openai` SDK works unchanged.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

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
    SHUTTING_DOWN = "shutting_down"
    REQUEST_TIMEOUT = "request_timeout"  # the upload was not sent within --upload-timeout
    INVALID_API_KEY = "invalid_api_key"
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


class TranscriptTextDelta(msgspec.Struct, tag_field="type", tag="transcript.text.delta", omit_defaults=True):
    delta: str
    # extension: the segment's time span in seconds (OpenAI's clients ignore it; sasr's page makes subtitles)
    start: float | None = None
    end: float | None = None


class TranscriptTextDone(msgspec.Struct, tag_field="type", tag="transcript.text.done"):
    text: str
    usage: Usage


# -- WebSocket /v1/audio/transcriptions/stream: the live protocol ------------------------------------

SAMPLE_ENCODINGS = ("pcm16", "f32")  # little-endian signed 16-bit, or 32-bit float
SAMPLE_RATES_KHZ = (8, 16, 24, 48)
G711_FORMATS = ("ulaw_8k_mono", "alaw_8k_mono")  # telephone audio: one G.711 byte a sample
AUDIO_FORMATS = (*(f"{enc}_{khz}k_mono" for enc in SAMPLE_ENCODINGS for khz in SAMPLE_RATES_KHZ), *G711_FORMATS)
DEFAULT_AUDIO_FORMAT = "pcm16_16k_mono"


class SessionStart(msgspec.Struct, tag_field="type", tag="session.start", forbid_unknown_fields=True):
    """client -> server: opens the session; binary audio frames follow."""

    language: str | None = None
    audio_format: str = DEFAULT_AUDIO_FORMAT  # one of AUDIO_FORMATS
    model: str | None = None
    partials: bool = False  # extension: also send transcript.partial with the unstable tail
    # extensions (Whisper; default: the server's --endpoint-ms and --live-commits): the silence that ends
    # an utterance, and whether settled words are committed while the speaker talks ("early") or by
    # their utterance's final only ("final": closer to the upload's text, later words)
    endpoint_ms: Annotated[int, msgspec.Meta(ge=100, le=5000)] | None = None
    commits: Literal["early", "final"] | None = None


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
    UNAUTHORIZED = "unauthorized"  # API keys are required and none valid was given
    SHUTTING_DOWN = "shutting_down"  # the server is draining before it exits: reconnect shortly


class StreamError(msgspec.Struct, tag_field="type", tag="error"):
    code: StreamErrorCode
    message: str


ServerEvent = SessionStarted | TranscriptDelta | TranscriptPartial | TranscriptFinal | StreamError

client_event_decoder = msgspec.json.Decoder(ClientEvent)
server_event_decoder = msgspec.json.Decoder(ServerEvent)


# -- WebSocket /v1/realtime: OpenAI's Realtime API, transcription sessions (GA and beta) -------------
# Client events are decoded leniently (fields sasr does not use, such as create_response, are ignored,
# as OpenAI's clients send them); fields left out of an update keep their value (UNSET).

REALTIME_LOGPROBS = "item.input_audio_transcription.logprobs"  # the one value of `include`


class RealtimeFormat(msgspec.Struct, omit_defaults=True):
    type: str  # audio/pcm (PCM16 LE mono), audio/pcmu, audio/pcma (G.711 at 8 kHz)
    rate: int | None = None  # audio/pcm: 24000 as OpenAI; 16000 and 48000 accepted too


class RealtimeTranscription(msgspec.Struct):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class RealtimeTurnDetection(msgspec.Struct, omit_defaults=True):
    type: str  # or semantic_vad (mapped onto the VAD: eagerness -> silence duration)
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    eagerness: str | None = None  # semantic_vad: low, medium, high, auto


class NoiseReduction(msgspec.Struct, omit_defaults=True):
    type: str | None = None  # near_field or far_field: accepted, not applied (see README)


class RealtimeAudioInput(msgspec.Struct, omit_defaults=True):
    format: RealtimeFormat | msgspec.UnsetType = msgspec.UNSET
    transcription: RealtimeTranscription | None | msgspec.UnsetType = msgspec.UNSET
    turn_detection: RealtimeTurnDetection | None | msgspec.UnsetType = msgspec.UNSET
    noise_reduction: NoiseReduction | None | msgspec.UnsetType = msgspec.UNSET


class RealtimeAudio(msgspec.Struct, omit_defaults=True):
    input: RealtimeAudioInput | msgspec.UnsetType = msgspec.UNSET


class RealtimeSessionConfig(msgspec.Struct, omit_defaults=True):
    """GA `session` of session.update (type "transcription")."""

    type: str = "transcription"
    audio: RealtimeAudio | msgspec.UnsetType = msgspec.UNSET
    include: list[str] | None | msgspec.UnsetType = msgspec.UNSET


class BetaSessionConfig(msgspec.Struct, omit_defaults=True):
    """Beta `session` of transcription_session.update."""

    input_audio_format: str | msgspec.UnsetType = msgspec.UNSET  # pcm16 (24 kHz), g711_ulaw, g711_alaw
    input_audio_transcription: RealtimeTranscription | None | msgspec.UnsetType = msgspec.UNSET
    turn_detection: RealtimeTurnDetection | None | msgspec.UnsetType = msgspec.UNSET
    input_audio_noise_reduction: NoiseReduction | None | msgspec.UnsetType = msgspec.UNSET
    include: list[str] | None | msgspec.UnsetType = msgspec.UNSET


class SessionUpdate(msgspec.Struct, tag_field="type", tag="session.update"):
    session: RealtimeSessionConfig
    event_id: str | None = None


class TranscriptionSessionUpdate(msgspec.Struct, tag_field="type", tag="transcription_session.update"):
    session: BetaSessionConfig
    event_id: str | None = None


class InputAudioBufferAppend(msgspec.Struct, tag_field="type", tag="input_audio_buffer.append"):
    audio: str  # base64 of audio in the session's format
    event_id: str | None = None


class InputAudioBufferCommit(msgspec.Struct, tag_field="type", tag="input_audio_buffer.commit"):
    event_id: str | None = None


class InputAudioBufferClear(msgspec.Struct, tag_field="type", tag="input_audio_buffer.clear"):
    event_id: str | None = None


RealtimeClientEvent = (
    SessionUpdate | TranscriptionSessionUpdate | InputAudioBufferAppend | InputAudioBufferCommit | InputAudioBufferClear
)


class RealtimeSession(msgspec.Struct):
    """The effective GA session, in session.created / session.updated."""

    id: str
    audio: RealtimeAudio
    include: list[str]
    type: str = "transcription"
    object: str = "realtime.transcription_session"


class BetaSession(msgspec.Struct):
    """The effective beta session, in transcription_session.created / .updated."""

    id: str
    input_audio_format: str
    input_audio_transcription: RealtimeTranscription
    turn_detection: RealtimeTurnDetection | None
    input_audio_noise_reduction: NoiseReduction | None
    include: list[str]
    modalities: list[str] = msgspec.field(default_factory=lambda: ["text"])
    object: str = "realtime.transcription_session"


class SessionCreated(msgspec.Struct, tag_field="type", tag="session.created"):
    session: RealtimeSession
    event_id: str = ""


class SessionUpdated(SessionCreated, tag="session.updated"):
    """The same fields, after each update."""


class TranscriptionSessionCreated(msgspec.Struct, tag_field="type", tag="transcription_session.created"):
    session: BetaSession
    event_id: str = ""


class TranscriptionSessionUpdated(TranscriptionSessionCreated, tag="transcription_session.updated"):
    """The same fields, after each update."""


class SpeechStarted(msgspec.Struct, tag_field="type", tag="input_audio_buffer.speech_started"):
    audio_start_ms: int  # session audio, with the turn's prefix padding
    item_id: str
    event_id: str = ""


class SpeechStopped(msgspec.Struct, tag_field="type", tag="input_audio_buffer.speech_stopped"):
    audio_end_ms: int
    item_id: str
    event_id: str = ""


class InputAudioBufferCommitted(msgspec.Struct, tag_field="type", tag="input_audio_buffer.committed"):
    item_id: str
    previous_item_id: str | None
    event_id: str = ""


class InputAudioBufferCleared(msgspec.Struct, tag_field="type", tag="input_audio_buffer.cleared"):
    event_id: str = ""


class LogProb(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int]  # the token's UTF-8 bytes


class TranscriptionDelta(msgspec.Struct, tag_field="type", tag="conversation.item.input_audio_transcription.delta"):
    """Committed words of an item (never retracted), sent while the user still speaks."""

    item_id: str
    delta: str
    content_index: int = 0
    logprobs: list[LogProb] | None = None  # with include item.input_audio_transcription.logprobs
    event_id: str = ""


class DurationUsage(msgspec.Struct):
    seconds: float  # the item's audio
    type: str = "duration"


class TranscriptionCompleted(
    msgspec.Struct, tag_field="type", tag="conversation.item.input_audio_transcription.completed"
):
    """The item's transcript: its deltas joined."""

    item_id: str
    transcript: str
    usage: DurationUsage
    content_index: int = 0
    logprobs: list[LogProb] | None = None
    event_id: str = ""


class RealtimeErrorCode(str, enum.Enum):
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"  # a known event with wrong fields
    UNKNOWN_EVENT = "unknown_event"
    INVALID_VALUE = "invalid_value"  # a configuration value outside what is accepted
    INVALID_AUDIO = "invalid_audio"  # audio that is not base64
    COMMIT_EMPTY = "input_audio_buffer_commit_empty"
    MODEL_NOT_FOUND = "model_not_found"
    BUFFER_OVERFLOW = "buffer_overflow"
    TOO_MANY_SESSIONS = "too_many_sessions"
    UNAUTHORIZED = "unauthorized"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL_ERROR = "internal_error"


class RealtimeErrorBody(msgspec.Struct):
    type: str  # invalid_request_error or server_error
    code: RealtimeErrorCode
    message: str
    param: str | None = None
    event_id: str | None = None  # the client event that caused it


class RealtimeError(msgspec.Struct, tag_field="type", tag="error"):
    error: RealtimeErrorBody
    event_id: str = ""


class TranscriptionFailed(msgspec.Struct, tag_field="type", tag="conversation.item.input_audio_transcription.failed"):
    item_id: str
    error: RealtimeErrorBody
    content_index: int = 0
    event_id: str = ""


RealtimeServerEvent = (
    SessionCreated | SessionUpdated | TranscriptionSessionCreated | TranscriptionSessionUpdated | SpeechStarted
    | SpeechStopped | InputAudioBufferCommitted | InputAudioBufferCleared | TranscriptionDelta
    | TranscriptionCompleted | TranscriptionFailed | RealtimeError
)

realtime_client_decoder = msgspec.json.Decoder(RealtimeClientEvent)
realtime_server_decoder = msgspec.json.Decoder(RealtimeServerEvent)
