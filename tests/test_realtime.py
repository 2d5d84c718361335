"""OpenAI's Realtime API on WS /v1/realtime, driven by the official `openai` SDK against a real server."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import warnings

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import soxr

from tests.support.server import Server
from tests.support.speech import HARVARD, concat, read16k
from tests.support.wer import wer

with warnings.catch_warnings():  # the reference G.711 encoder (standard library up to Python 3.12)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
# An item's completed transcript is held to the upload of the same audio: its WER against the text may
# exceed the upload's by at most this (two words of an 18-word stretch; measured 2026-11-26: 0.00 on
# every item here, paced, at file speed and as G.711). tiny.en itself gets 0.4 and 0.6 on these two
# stretches (espeak's "birch canoe" comes back as "merch can be").
MAX_ITEM_GAP = 0.12


def pcm16(audio: np.ndarray, rate: int = 24000) -> bytes:
    audio = soxr.resample(audio, 16000, rate) if rate != 16000 else audio
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def stretches(speech_dir, client) -> list[tuple[np.ndarray, str, float]]:
    """Two spoken stretches of two sentences each (16 kHz; espeak ends each with 0.35 s of silence),
    their texts, and the WER of the same audio uploaded."""
    found = []
    for i in (0, 2):
        audio = concat([read16k(speech_dir / f"h{i}.wav"), read16k(speech_dir / f"h{i + 1}.wav")], gap_s=0.0)
        text = f"{HARVARD[i]} {HARVARD[i + 1]}"
        found.append((audio, text, upload_wer(client, audio, 16000, text)))
    return found


def upload_wer(client, audio: np.ndarray, rate: int, text: str) -> float:
    wav = io.BytesIO()
    sf.write(wav, audio, rate, format="WAV", subtype="PCM_16")
    upload = client.audio.transcriptions.create(model="whisper-1", file=("stretch.wav", wav.getvalue()))
    return wer(text, upload.text)


def close_to_upload(transcript: str, stretch) -> bool:
    _, text, upload_wer = stretch
    return wer(text, transcript) <= upload_wer + MAX_ITEM_GAP


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * 16000), np.float32)


def connect(server: Server, beta: bool = False, **query):
    # the beta client always dials wss:// unless told the WebSocket address
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="sk-unused", max_retries=0,
                                websocket_base_url=server.url.replace("http", "ws") + "/v1")
    if beta:
        return client.beta.realtime.connect(model=query.pop("model", "whisper-1"), extra_query=query)
    return client.realtime.connect(extra_query={"intent": "transcription", **query})


async def append(conn, data: bytes, paced: bool = False, bytes_per_s: int = 48000) -> None:
    """Send audio in 100 ms appends, as fast as the socket takes them or at the pace of speech."""
    step = bytes_per_s // 10
    started = time.monotonic()
    for i in range(0, len(data), step):
        await conn.input_audio_buffer.append(audio=base64.b64encode(data[i : i + step]).decode())
        if paced:
            await asyncio.sleep(max(0.0, started + (i + step) / bytes_per_s - time.monotonic()))


async def events_until(conn, done, timeout_s: float = 120) -> list[dict]:
    """Server events (as dicts) until done(events) is true."""
    events = []
    async with asyncio.timeout(timeout_s):
        while not done(events):
            event = await conn.recv()
            events.append(event.model_dump(exclude_unset=True))
    return events


def count(kind: str):
    return lambda n: lambda events: sum(e["type"] == kind for e in events) >= n


def items(events: list[dict]) -> dict[str, dict]:
    """Each item's events by type, in order of completion."""
    by_item: dict[str, dict] = {}
    for e in events:
        if "item_id" in e:
            by_item.setdefault(e["item_id"], {}).setdefault(e["type"], []).append(e)
    return by_item


def check_items(events: list[dict], stretches) -> list[dict]:
    """Items in order, each committed once and completed once with its deltas joined, chained by
    previous_item_id, each completed transcript as accurate as the upload of its stretch."""
    completed = [e for e in events if e["type"] == COMPLETED]
    assert len(completed) == len(stretches), [e["type"] for e in events]
    previous = None
    by_item = items(events)
    for done, stretch in zip(completed, stretches):
        item = by_item[done["item_id"]]
        assert len(item["input_audio_buffer.committed"]) == 1
        assert item["input_audio_buffer.committed"][0].get("previous_item_id") == previous
        previous = done["item_id"]
        assert "".join(d["delta"] for d in item.get(DELTA, [])) == done["transcript"]
        assert done["usage"]["type"] == "duration" and done["usage"]["seconds"] > 1
        assert close_to_upload(done["transcript"], stretch), (stretch[1:], done["transcript"])
    return completed


async def test_ga_server_vad_two_stretches_become_two_items(server, stretches):
    """GA client, server_vad: a pause splits the audio into two items; the events of each come in
    order with times on the session's audio clock, and deltas arrive while its speech goes on."""
    audio = concat([stretches[0][0], silence(1.5), stretches[1][0], silence(1.5)], gap_s=0)
    async with connect(server) as conn:
        created = await conn.recv()
        assert created.type == "session.created" and created.session.type == "transcription"
        await conn.session.update(session={
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"model": "whisper-1", "language": "en"},
                                "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                                   "prefix_padding_ms": 300, "silence_duration_ms": 800}}},
        })
        sender = asyncio.create_task(append(conn, pcm16(audio), paced=True))
        events = await events_until(conn, count(COMPLETED)(2))
        await sender
    updated = events[0]
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 800
    assert updated["session"]["audio"]["input"]["transcription"]["language"] == "en"
    assert all(e["event_id"].startswith("event_") for e in events)
    check_items(events, stretches)
    first_end_ms = len(stretches[0][0]) * 1000 // 16000
    for n, (item_id, item) in enumerate(items(events).items()):
        kinds = [e["type"] for e in events if e.get("item_id") == item_id]
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped") \
            < kinds.index("input_audio_buffer.committed") < kinds.index(COMPLETED)
        assert DELTA in kinds[: kinds.index("input_audio_buffer.speech_stopped")]  # while the user speaks
        start = item["input_audio_buffer.speech_started"][0]["audio_start_ms"]
        end = item["input_audio_buffer.speech_stopped"][0]["audio_end_ms"]
        if n == 0:
            assert start <= 300 and abs(end - first_end_ms) < 400
        else:
            assert start >= first_end_ms + 1000 and end > start + 3000


@pytest.fixture(scope="module")
def final_commits_server(cache_dir):
    srv = Server("--live-commits", "final", "--endpoint-ms", "800")
    yield srv
    srv.stop()


async def test_commits_at_utterance_ends_over_realtime(final_commits_server, stretches):
    """--live-commits final: the items come as with the default (each completed transcript as close to
    its upload), and no commit decode ran: each utterance's words were committed at its end."""
    audio = concat([stretches[0][0], silence(1.5), stretches[1][0], silence(1.5)], gap_s=0)
    async with connect(final_commits_server) as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session={
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"model": "whisper-1", "language": "en"},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}}},
        })
        sender = asyncio.create_task(append(conn, pcm16(audio), paced=True))
        events = await events_until(conn, count(COMPLETED)(2))
        await sender
    check_items(events, stretches)
    metrics = httpx.get(f"{final_commits_server.url}/metrics").text
    assert 'sasr_live_decodes_total{kind="final"}' in metrics and 'kind="commit"' not in metrics


async def test_ga_manual_commits_make_the_items(server, stretches):
    """turn_detection null: no VAD events; each commit makes an item of the audio since the last one."""
    async with connect(server) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        for audio, _, _ in stretches:
            await append(conn, pcm16(audio))
            await conn.input_audio_buffer.commit()
        events = await events_until(conn, count(COMPLETED)(2))
        await conn.input_audio_buffer.commit()  # nothing since the last commit
        errors = await events_until(conn, count("error")(1))
    assert events[1]["type"] == "session.updated"
    assert events[1]["session"]["audio"]["input"].get("turn_detection") is None
    assert not any(e["type"].startswith("input_audio_buffer.speech") for e in events)
    check_items(events, stretches)
    assert errors[-1]["error"]["code"] == "input_audio_buffer_commit_empty"


async def test_beta_client_with_g711_and_logprobs(server, client, stretches):
    """The beta client (OpenAI-Beta: realtime=v1): transcription_session.update, mu-law audio at 8 kHz,
    logprobs included: every delta carries its tokens, which spell it. Held to the upload of the same
    telephone audio (8 kHz G.711 loses much of what tiny.en hears)."""
    audio = concat([stretches[0][0], silence(1.2)], gap_s=0)
    ulaw = audioop.lin2ulaw(pcm16(audio, 8000), 2)
    phone = np.frombuffer(audioop.ulaw2lin(ulaw, 2), "<i2").astype(np.float32) / 32768
    phone_stretch = (None, stretches[0][1], upload_wer(client, phone, 8000, stretches[0][1]))
    async with connect(server, beta=True) as conn:
        await conn.transcription_session.update(session={
            "input_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
            "include": ["item.input_audio_transcription.logprobs"],
        })
        await append(conn, ulaw, bytes_per_s=8000)
        events = await events_until(conn, count(COMPLETED)(1))
    assert [e["type"] for e in events[:2]] == ["transcription_session.created", "transcription_session.updated"]
    session = events[1]["session"]
    assert session["input_audio_format"] == "g711_ulaw" and session["include"] == ["item.input_audio_transcription.logprobs"]
    check_items(events, [phone_stretch])
    deltas = [e for e in events if e["type"] == DELTA]
    for delta in deltas:
        spelled = "".join(p["token"] for p in delta["logprobs"])
        assert spelled.strip() == delta["delta"].strip()
        assert all(p["logprob"] <= 0 and bytes(p["bytes"]).decode() == p["token"] for p in delta["logprobs"])
    completed = [e for e in events if e["type"] == COMPLETED][0]
    assert len(completed["logprobs"]) == sum(len(d["logprobs"]) for d in deltas)


async def test_clear_drops_the_uncommitted_audio(server, stretches):
    async with connect(server) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        await append(conn, pcm16(stretches[0][0]))
        await conn.input_audio_buffer.clear()
        await conn.input_audio_buffer.commit()
        events = await events_until(conn, count("error")(1))
        await append(conn, pcm16(stretches[1][0]))
        await conn.input_audio_buffer.commit()
        events += await events_until(conn, count(COMPLETED)(1))
    kinds = [e["type"] for e in events]
    assert kinds.index("input_audio_buffer.cleared") < kinds.index("error")
    assert events[kinds.index("error")]["error"]["code"] == "input_audio_buffer_commit_empty"
    completed = [e for e in events if e["type"] == COMPLETED]
    assert close_to_upload(completed[0]["transcript"], stretches[1])  # the cleared words are not in it


BAD_EVENTS = [
    ("{not json", "invalid_json"),
    ('{"type": "response.create"}', "unknown_event"),
    ('["input_audio_buffer.commit"]', "invalid_event"),
    ('{"type": "input_audio_buffer.append", "audio": "%%% not base64"}', "invalid_audio"),
    ('{"type": "input_audio_buffer.append"}', "invalid_event"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": '
     '{"turn_detection": {"type": "server_vad", "threshold": 2}}}}}', "invalid_value"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": '
     '{"format": {"type": "audio/flac"}}}}}', "invalid_value"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": '
     '{"transcription": {"model": "no-such-model"}}}}}', "model_not_found"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": '
     '{"transcription": {"language": "xx"}}}}}', "invalid_value"),
    ('{"type": "session.update", "session": {"type": "realtime"}}', "invalid_value"),
    ('{"type": "session.update", "session": {"type": "transcription", "include": ["something"]}}', "invalid_value"),
    ('{"type": "transcription_session.update", "session": {"input_audio_format": "mp3"}}', "invalid_value"),
]


async def test_each_bad_event_gets_an_error_and_the_session_goes_on(server, stretches):
    async with connect(server) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        for i, (raw, _) in enumerate(BAD_EVENTS):
            await conn.send_raw(raw.replace('"type": "input_audio_buffer.append"', f'"event_id": "ev{i}", "type": "input_audio_buffer.append"'))
        errors = await events_until(conn, count("error")(len(BAD_EVENTS)))
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}})
        await append(conn, pcm16(stretches[0][0], 16000), bytes_per_s=32000)  # still configured: 16 kHz
        await conn.input_audio_buffer.commit()
        events = await events_until(conn, count(COMPLETED)(1))
    errors = [e for e in errors if e["type"] == "error"]
    assert [e["error"]["code"] for e in errors] == [code for _, code in BAD_EVENTS]
    assert all(e["error"]["type"] == "invalid_request_error" and e["error"]["message"] for e in errors)
    assert errors[3]["error"]["event_id"] == "ev3"
    assert errors[5]["error"]["param"] == "session.turn_detection.threshold"
    assert close_to_upload([e for e in events if e["type"] == COMPLETED][0]["transcript"], stretches[0])


async def test_unknown_model_at_connect_is_an_error(server):
    async with connect(server, model="no-such-model") as conn:
        event = await conn.recv()
        assert event.type == "error" and event.error.code == "model_not_found"
        with pytest.raises(Exception):
            await asyncio.wait_for(conn.recv(), 10)


@pytest.fixture(scope="module")
def small_server(cache_dir):
    srv = Server("--max-sessions", "1", "--max-buffer-seconds", "3", "--max-audio-seconds", "5")
    yield srv
    srv.stop()


async def test_limits_are_realtime_errors(small_server, stretches):
    """A full server refuses the next session; more waiting audio than allowed (a file sender: up to
    --max-audio-seconds) ends the session; the server stays up."""
    async with connect(small_server) as first:
        assert (await first.recv()).type == "session.created"
        async with connect(small_server) as second:
            event = await second.recv()
            assert event.type == "error" and event.error.code == "too_many_sessions"
        await first.send_raw('{"type": "input_audio_buffer.append", "audio": "%s"}'
                             % base64.b64encode(pcm16(concat([stretches[0][0]] * 2))).decode())
        events = await events_until(first, count("error")(1))
        assert events[-1]["error"]["code"] == "buffer_overflow"
    assert small_server.healthy()


async def test_semantic_vad_eagerness_sets_how_long_a_pause_ends_an_item(server, stretches):
    """semantic_vad is mapped onto the VAD: at eagerness low (2 s of silence) a 1 s pause does not end
    the item, so both stretches come back as one; server_vad at 500 ms splits them (tested above)."""
    audio = concat([stretches[0][0], silence(1.0), stretches[1][0], silence(2.5)], gap_s=0)
    async with connect(server) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "turn_detection": {"type": "semantic_vad", "eagerness": "low"}}}})
        await append(conn, pcm16(audio))
        events = await events_until(conn, count(COMPLETED)(1))
        await asyncio.sleep(1.0)  # nothing more comes
        await conn.input_audio_buffer.commit()  # the last 0.5 s of silence, after the item ended
        more = await events_until(conn, count(COMPLETED)(1))
    turn = events[1]["session"]["audio"]["input"]["turn_detection"]
    assert turn["type"] == "semantic_vad" and turn["eagerness"] == "low"
    completed = [e for e in events if e["type"] == COMPLETED]
    assert len(completed) == 1
    assert [e["transcript"] for e in more if e["type"] == COMPLETED] == [""]  # the speech was all in the item
    num_words = len(completed[0]["transcript"].split())
    assert num_words >= 0.8 * len(f"{stretches[0][1]} {stretches[1][1]}".split())


async def test_a_clear_after_a_commit_keeps_the_committed_item(server, stretches):
    """Commit, more audio, clear (while the committed item is still being transcribed): the committed
    item completes with its words; only the audio after the commit is dropped."""
    async with connect(server) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        await append(conn, pcm16(stretches[0][0]))
        await conn.input_audio_buffer.commit()
        await append(conn, pcm16(stretches[1][0]))  # and then the user thinks better of it
        await conn.input_audio_buffer.clear()
        await conn.input_audio_buffer.commit()  # nothing since the clear
        events = await events_until(conn, lambda evs: count(COMPLETED)(1)(evs) and count("error")(1)(evs))
        await asyncio.sleep(2)  # nothing more comes: no item of the cleared audio
        await conn.input_audio_buffer.clear()
        events += await events_until(conn, count("input_audio_buffer.cleared")(1))
    completed = [e for e in events if e["type"] == COMPLETED]
    assert len(completed) == 1 and close_to_upload(completed[0]["transcript"], stretches[0])
    assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["input_audio_buffer_commit_empty"]
    assert not any(e["type"] == DELTA and e["item_id"] != completed[0]["item_id"] for e in events)
