"""Server settings, defined once: the struct create_app reads, and from its fields the `sasr serve` flags.

Each field's help is its `description`; `extra` holds what only the command line needs: `flag` (a name
other than `--field-name`) and `env` (an environment variable that overrides the default).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec


def setting(help: str, **extra: str) -> msgspec.Meta:
    """A field's help text and command-line extras."""
    return msgspec.Meta(description=help, extra=extra)


class ServerConfig(msgspec.Struct, kw_only=True):
    """What `sasr serve` takes (the flags are made from these fields: cli.py)."""

    model: Annotated[str | None, setting(
        "Whisper or Qwen3-ASR checkpoint: a transformers (or Whisper CTranslate2) directory, a hub id, "
        "or qwen3-asr-0.6b with --load-format dummy (default: the bundled Whisper tiny.en, no network needed)"
    )] = None
    load_format: Annotated[Literal["auto", "dummy"], setting(
        "dummy: random weights of the model's shapes, a fixed number of output tokens "
        "(Qwen3-ASR; measures cost where weights cannot be fetched)"
    )] = "auto"
    served_model_name: Annotated[str | None, setting(
        "name clients pass as `model` (default: from the model; whisper-1 is always accepted)"
    )] = None
    host: Annotated[str, setting("address to listen on", env="HOST")] = "127.0.0.1"
    port: Annotated[int, setting("port to listen on", env="PORT")] = 8000
    device: Annotated[str, setting("cpu, cuda, cuda:N or auto (cuda if present)")] = "auto"
    dtype: Annotated[Literal["auto", "float32", "float16", "bfloat16"], setting(
        "auto: float16 (Whisper) or bfloat16 (Qwen3-ASR) on cuda, float32 on cpu"
    )] = "auto"
    quantize: Annotated[Literal["auto", "none", "int8", "bf16"], setting(
        "Whisper on the CPU: int8 runs the encoder's linear layers in int8, bf16 the whole model in bf16; "
        "auto: bf16 where the CPU has AMX (2.9x faster than int8), else int8 where it has AVX-512 VNNI "
        "(measured 1.65x faster than fp32 at fp32's accuracy), none elsewhere and on cuda"
    )] = "auto"
    max_audio_seconds: Annotated[float, setting("longer uploads get a 400")] = 3600.0
    max_upload_mb: Annotated[float, setting("request bodies larger than this get a 413")] = 100.0
    max_queued_requests: Annotated[int, setting("requests admitted at once; more get 503 with Retry-After")] = 64
    max_num_seqs: Annotated[int, setting(
        "windows decoded together in one batch (KV arena slots); more wait in the queue"
    )] = 16
    enforce_eager: Annotated[bool, setting("on CUDA, run without CUDA graphs (the eager reference path)")] = False
    max_sessions: Annotated[int, setting("live WebSocket sessions at once; more get too_many_sessions")] = 64
    chunk_seconds: Annotated[float | None, setting(
        "new audio a live session gathers before each decode (default: 1 s Whisper, 2 s Qwen3-ASR)"
    )] = None
    live_commits: Annotated[Literal["early", "final"], setting(
        "Whisper live sessions: early commits settled words while the speaker talks; final commits an "
        "utterance's words at its end only (partials show them sooner), measured closer to uploads (README)"
    )] = "early"
    endpoint_ms: Annotated[int | None, setting(
        "Whisper live sessions: the silence (100-5000 ms) that ends an utterance and brings its final "
        "(default 500; 800 with --live-commits final measured closest to uploads)"
    )] = None
    enable_prefix_caching: Annotated[bool, setting(
        "Qwen3-ASR: reuse the KV blocks of prompts that start alike; "
        "--no-prefix-caching recomputes every prompt in full (for comparison)", flag="--no-prefix-caching"
    )] = True
    num_kv_blocks: Annotated[int | None, setting(
        "Qwen3-ASR: KV arena size in 16-token blocks (default: sized from memory)"
    )] = None
    max_buffer_seconds: Annotated[float, setting(
        "live audio buffered past this ends the session with buffer_overflow (a client streaming a file "
        "faster than speech may have up to --max-audio-seconds waiting)"
    )] = 60.0
    ws_ping_interval: Annotated[float, setting("seconds between the server's WebSocket pings")] = 20.0
    ws_ping_timeout: Annotated[float, setting(
        "a WebSocket peer that has not answered a ping this long is gone: its session is ended and its slot freed"
    )] = 20.0
    api_keys: Annotated[list[str], setting(
        "require this key (repeatable; SASR_API_KEYS: comma-separated) on every endpoint but /health and the "
        "web page: HTTP Authorization: Bearer KEY, WebSocket the same header or the "
        "openai-insecure-api-key.KEY subprotocol", flag="--api-key", env="SASR_API_KEYS"
    )] = msgspec.field(default_factory=list)
    open_metrics: Annotated[bool, setting("with API keys set, leave /metrics open (default: keyed)")] = False
    upload_timeout: Annotated[float, setting(
        "seconds a client may take to send an upload; a slower one gets 408 (its worker and queue place freed)"
    )] = 300.0
    shutdown_timeout: Annotated[float, setting(
        "on SIGTERM/SIGINT: seconds to drain (refuse new work, finish requests, send live sessions their "
        "final text) before exiting; a second signal exits at once"
    )] = 30.0
