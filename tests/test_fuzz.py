"""Property-based fuzzing of every wire format against a real server: whatever a client sends gets a
4xx or an error event (never a 5xx or internal_error), a Realtime session goes on after a bad event,
and the server stays up. HTTP through schemathesis on the server's own OpenAPI schema; WebSocket
events and frames through hypothesis."""

from __future__ import annotations

import base64
import json

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from websockets.sync.client import connect

from sasr.protocol import RealtimeErrorCode, StreamErrorCode

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))

# -- HTTP --------------------------------------------------------------------------------------------

def test_http_never_answers_5xx(server):
    """Every operation in the server's OpenAPI schema, with valid (positive) and invalid (negative) data
    generated from it: no answer is a 5xx. (Schemathesis' pytest plugin does not load under pytest 9,
    so its strategies drive a hypothesis test here.)"""
    schema = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/audio/transcriptions", "/v1/models", "/health", "/info"}
    cases = st.one_of([op.as_strategy(mode) for op in operations for mode in GenerationMode])

    @given(case=cases)
    @FUZZ
    def each(case):
        response = case.call(timeout=120)
        case.validate_response(response, checks=[not_a_server_error])
    each()


# -- WebSockets --------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
turn_detection = st.none() | st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["server_vad", "semantic_vad", "other"]) | json_values,
    "threshold": st.floats(-1, 2) | json_values, "silence_duration_ms": st.integers(-100, 20_000) | json_values,
    "prefix_padding_ms": st.integers(-100, 20_000), "eagerness": st.sampled_from(["low", "high", "auto", "x"]),
})
ga_session = st.fixed_dictionaries({"type": st.sampled_from(["transcription", "realtime"]) | json_values}, optional={
    "audio": st.fixed_dictionaries({}, optional={"input": st.fixed_dictionaries({}, optional={
        "format": st.fixed_dictionaries({"type": st.sampled_from(["audio/pcm", "audio/pcmu", "audio/pcma", "x"])},
                                        optional={"rate": st.sampled_from([8000, 16000, 24000, 48000, 44100])}),
        "transcription": st.fixed_dictionaries({}, optional={"model": st.sampled_from(["whisper-1", "nope"]),
                                                             "language": st.sampled_from(["en", "xx", ""])}),
        "turn_detection": turn_detection, "noise_reduction": json_values,
    })}) | json_values,
    "include": st.lists(st.sampled_from(["item.input_audio_transcription.logprobs", "other"]), max_size=2),
})
audio_b64 = st.binary(max_size=4800).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=40)
realtime_events = st.one_of(
    st.fixed_dictionaries({"type": st.just("session.update"), "session": ga_session}),
    st.fixed_dictionaries({"type": st.just("transcription_session.update"), "session": st.fixed_dictionaries(
        {}, optional={"input_audio_format": st.sampled_from(["pcm16", "g711_ulaw", "g711_alaw", "mp3"]),
                      "turn_detection": turn_detection})}),
    st.fixed_dictionaries({"type": st.just("input_audio_buffer.append")}, optional={"audio": audio_b64}),
    st.fixed_dictionaries({"type": st.sampled_from(["input_audio_buffer.commit", "input_audio_buffer.clear",
                                                    "response.create", "nonsense"])}, optional={"event_id": json_values}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
).map(json.dumps) | st.text(max_size=60)


def ws_url(server, path: str) -> str:
    return server.url.replace("http", "ws") + path


@given(messages=st.lists(realtime_events, min_size=1, max_size=4))
@FUZZ
def test_realtime_events_get_an_answer_and_the_session_goes_on(server, messages):
    with connect(ws_url(server, "/v1/realtime?intent=transcription"), max_size=None) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
        for message in messages:
            ws.send(message)
        ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "probe"}))
        while True:  # every answer up to the probe's
            event = json.loads(ws.recv(timeout=30))
            if event["type"] == "error":
                assert event["error"]["code"] in {c.value for c in RealtimeErrorCode}
                assert event["error"]["code"] != "internal_error", event
            if event["type"] == "input_audio_buffer.cleared":
                break


seed_messages = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["session.start", "session.end", "session.pause"])},
                          optional={"audio_format": st.sampled_from(["pcm16_16k_mono", "ulaw_8k_mono", "mp3"]) | json_values,
                                    "language": json_values, "partials": json_values, "model": json_values}).map(json.dumps),
    st.text(max_size=60),
    st.binary(max_size=3200),
)


@given(messages=st.lists(seed_messages, min_size=1, max_size=4))
@FUZZ
def test_live_protocol_frames_get_an_answer_or_an_error_never_a_fault(server, messages):
    with connect(ws_url(server, "/v1/audio/transcriptions/stream"), max_size=None) as ws:
        try:
            for message in messages:
                ws.send(message)
            ws.send(json.dumps({"type": "session.end"}))
            while True:
                event = json.loads(ws.recv(timeout=30))
                if event["type"] == "error":
                    assert event["code"] in {c.value for c in StreamErrorCode} and event["code"] != "internal_error"
                    break
                if event["type"] == "transcript.final":
                    break
        except Exception as exc:  # a closed socket after an error is fine; a timeout is not
            assert "ConnectionClosed" in type(exc).__name__, exc
    assert server.healthy()
