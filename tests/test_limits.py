"""Limits that hold against hostile or careless clients: admission before the upload is read, slow
senders, oversized and many-part bodies, deeply nested JSON. Raw sockets where a client must misbehave
in ways HTTP libraries will not."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
import websockets

from tests.support.server import Server

BOUNDARY = "sasrboundary"


@pytest.fixture(scope="module")
def strict(cache_dir):
    srv = Server("--max-queued-requests", "1", "--upload-timeout", "2", "--max-upload-mb", "1")
    yield srv
    srv.stop()


def start_upload(port: int, declared_bytes: int, first_bytes: bytes = b"") -> socket.socket:
    """Headers of a multipart upload declaring declared_bytes, then only first_bytes of its body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                  f"Content-Length: {declared_bytes}\r\n\r\n").encode() + first_bytes)
    return sock


def response_of(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        body += sock.recv(65536)
    return status, json.loads(body) if body else {}


def part_header(name: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()


def test_a_full_server_refuses_before_reading_the_upload(strict):
    """With the one place taken (by an upload still arriving), the next upload is refused with 503 at
    once, though it has declared 900 KB and sent none of them: it is never buffered or decoded."""
    holder = start_upload(strict.port, 500_000, part_header("file", "a.wav"))
    time.sleep(0.3)
    started = time.monotonic()
    second = start_upload(strict.port, 900_000)
    status, body = response_of(second)
    assert status == 503 and body["error"]["code"] == "server_busy"
    assert time.monotonic() - started < 1.5
    holder.close()
    second.close()


def test_a_slow_sender_is_cut_off_and_its_place_freed(strict, speech_dir):
    slow = start_upload(strict.port, 400_000, part_header("file", "a.wav") + b"RIFF")
    started = time.monotonic()
    status, body = response_of(slow)  # and then nothing more is sent
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert 1.5 < time.monotonic() - started < 10
    slow.close()
    wav = (speech_dir / "h0.wav").read_bytes()
    ok = httpx.post(f"{strict.url}/v1/audio/transcriptions", files={"file": ("a.wav", wav)}, timeout=60)
    assert ok.status_code == 200 and ok.json()["text"]  # the one place is free again


def test_a_body_over_the_limit_is_refused_while_it_streams_in(strict):
    """No Content-Length (chunked): the server counts as it reads and stops at --max-upload-mb."""
    def chunks():
        yield part_header("file", "big.wav")
        for _ in range(40):
            yield b"\0" * 65536  # 2.6 MB in all
    response = httpx.post(f"{strict.url}/v1/audio/transcriptions", content=chunks(), timeout=60,
                          headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"
    assert strict.healthy()


def test_thousands_of_form_fields_are_refused(strict):
    body = b"".join(part_header(f"f{i}") + b"x\r\n" for i in range(3000)) + f"--{BOUNDARY}--\r\n".encode()
    response = httpx.post(f"{strict.url}/v1/audio/transcriptions", content=body, timeout=60,
                          headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert 400 <= response.status_code < 500 and "error" in response.json()
    assert strict.healthy()


async def test_deeply_nested_json_is_a_json_error_on_both_websockets(server):
    nested = "[" * 100_000 + "]" * 100_000
    async with websockets.connect(server.url.replace("http", "ws") + "/v1/audio/transcriptions/stream") as ws:
        await ws.send(nested)
        assert json.loads(await ws.recv())["code"] == "invalid_json"
    async with websockets.connect(server.url.replace("http", "ws") + "/v1/realtime?intent=transcription") as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(nested)
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["error"]["code"] == "invalid_json"
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))  # the session goes on
        assert json.loads(await ws.recv())["type"] == "input_audio_buffer.cleared"
    assert server.healthy()


async def test_a_frame_over_16_mib_closes_the_socket_and_nothing_else(server):
    async with websockets.connect(server.url.replace("http", "ws") + "/v1/audio/transcriptions/stream",
                                  max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.start"}))
        await ws.recv()
        await ws.send(b"\0" * (17 * 1024 * 1024))
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1009  # message too big
    assert server.healthy()
