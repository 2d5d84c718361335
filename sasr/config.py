"""Server settings, shared by the CLI and create_app."""

from __future__ import annotations

import msgspec


class ServerConfig(msgspec.Struct, kw_only=True):
    model: str | None = None  # bundled tiny.en when None; else a directory or hub id
    served_model_name: str | None = None  # name clients pass as `model`; derived from the model if None
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"  # auto: cuda if present, else cpu
    dtype: str = "auto"  # auto: float16 on cuda, float32 on cpu
    max_audio_seconds: float = 3600.0  # longer uploads get a 400
    max_upload_mb: float = 100.0  # request bodies larger than this get a 413
    max_queued_requests: int = 64  # beyond this, 503 with Retry-After
    max_num_seqs: int = 16  # windows decoded together (KV arena slots); more wait in the queue
    enforce_eager: bool = False  # CUDA: no graphs (the eager reference path)
    load_format: str = "auto"  # dummy: random weights from the model's config (Qwen3-ASR; for measuring cost)
    enable_prefix_caching: bool = True  # Qwen3-ASR: reuse KV blocks of prompts that start alike
    num_kv_blocks: int | None = None  # Qwen3-ASR: KV arena size in 16-token blocks; None: sized at start
    max_sessions: int = 64  # live WebSocket sessions at once; more get too_many_sessions
    chunk_seconds: float | None = None  # new audio per live decode; None: the model's default (1 s Whisper, 2 s Qwen3-ASR)
    max_buffer_seconds: float = 60.0  # live audio buffered past this gets buffer_overflow
