"""API keys (--api-key): the openai SDK over HTTP and Realtime, and websockets on the live protocol."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
import websockets

STREAM_PATH = "/v1/audio/transcriptions/stream"


def sdk(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def test_http_needs_a_valid_key(keyed_server, speech_dir):
    wav = speech_dir / "h0.wav"
    for key in ("sk-right", "sk-other"):
        assert sdk(keyed_server, key).audio.transcriptions.create(model="whisper-1", file=wav).text
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(keyed_server, "sk-wrong").audio.transcriptions.create(model="whisper-1", file=wav)
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        sdk(keyed_server, "sk-wrong").models.list()
    bare = httpx.Client(base_url=keyed_server.url)
    assert bare.get("/v1/models").status_code == 401
    assert bare.get("/v1/models", headers={"Authorization": "Basic sk-right"}).status_code == 401
    assert bare.get("/metrics").status_code == 401  # keyed unless --open-metrics
    assert bare.get("/metrics", headers={"Authorization": "Bearer sk-right"}).status_code == 200
    for open_path in ("/health", "/", "/web/app.js", "/info"):  # the page loads before a key is given
        assert bare.get(open_path).status_code == 200, open_path
    assert bare.get("/info").json()["auth"] is True


async def live_events(url: str, **connect) -> tuple[list[dict], int | None, str | None]:
    async with websockets.connect(url.replace("http", "ws") + STREAM_PATH, **connect) as ws:
        try:  # a refused client hears so at once, before it sends anything
            events = [json.loads(await asyncio.wait_for(ws.recv(), 1.0))]
        except TimeoutError:
            await ws.send(json.dumps({"type": "session.start"}))
            await ws.send(json.dumps({"type": "session.end"}))
            events = []
        try:
            async for message in ws:
                events.append(json.loads(message))
        except websockets.ConnectionClosedError:
            pass  # closed with an error code: returned below
        return events, ws.close_code, ws.subprotocol


async def test_live_protocol_needs_a_valid_key(keyed_server):
    events, code, _ = await live_events(keyed_server.url)
    assert events == [{"type": "error", "code": "unauthorized", "message": events[0]["message"]}] and code == 1008
    events, code, _ = await live_events(keyed_server.url, additional_headers={"Authorization": "Bearer sk-wrong"})
    assert events[0]["code"] == "unauthorized" and code == 1008
    events, code, _ = await live_events(keyed_server.url, additional_headers={"Authorization": "Bearer sk-right"})
    assert [e["type"] for e in events] == ["session.started", "transcript.final"] and code == 1000
    # browsers cannot set headers: the key comes as a subprotocol, and the server picks the other one offered
    events, code, chosen = await live_events(keyed_server.url, subprotocols=["sasr", "openai-insecure-api-key.sk-other"])
    assert [e["type"] for e in events] == ["session.started", "transcript.final"] and chosen == "sasr"


async def test_realtime_needs_a_valid_key(keyed_server):
    for key, expected in (("sk-wrong", "error"), ("sk-right", "session.created")):
        client = openai.AsyncOpenAI(base_url=f"{keyed_server.url}/v1", api_key=key, max_retries=0)
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            event = await conn.recv()
            assert event.type == expected
            if expected == "error":
                assert event.error.code == "unauthorized"
