"""Command line: `sasr serve` runs the server, `sasr transcribe FILE...` prints transcripts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from sasr.config import ServerConfig


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="Whisper or Qwen3-ASR checkpoint: a transformers (or Whisper CTranslate2) directory, "
                        "a hub id, or qwen3-asr-0.6b with --load-format dummy "
                        "(default: the bundled Whisper tiny.en, no network needed)")
    p.add_argument("--load-format", default="auto", choices=["auto", "dummy"],
                   help="dummy: random weights of the model's shapes, a fixed number of output tokens "
                        "(Qwen3-ASR; measures cost where weights cannot be fetched)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if present)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="auto: float16 on cuda, float32 on cpu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sasr", description="Streaming speech recognition server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    _model_args(serve)
    defaults = ServerConfig()
    serve.add_argument("--served-model-name", default=None, help="name clients pass as `model` (whisper-1 is always accepted)")
    serve.add_argument("--host", default=os.environ.get("HOST", defaults.host))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", defaults.port)))
    serve.add_argument("--max-audio-seconds", type=float, default=defaults.max_audio_seconds)
    serve.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_mb)
    serve.add_argument("--max-queued-requests", type=int, default=defaults.max_queued_requests,
                       help="requests admitted at once; more get 503 with Retry-After")
    serve.add_argument("--max-num-seqs", type=int, default=defaults.max_num_seqs,
                       help="windows decoded together in one batch (KV arena slots)")
    serve.add_argument("--enforce-eager", action="store_true", help="on CUDA, run without CUDA graphs")
    serve.add_argument("--max-sessions", type=int, default=defaults.max_sessions, help="live WebSocket sessions at once")
    serve.add_argument("--chunk-seconds", type=float, default=defaults.chunk_seconds,
                       help="new audio a live session gathers before each decode (default: 1 s Whisper, 2 s Qwen3-ASR)")
    serve.add_argument("--no-prefix-caching", dest="enable_prefix_caching", action="store_false",
                       help="Qwen3-ASR: recompute every prompt in full (for comparison)")
    serve.add_argument("--num-kv-blocks", type=int, default=None,
                       help="Qwen3-ASR: KV arena size in 16-token blocks (default: sized from memory)")
    serve.add_argument("--max-buffer-seconds", type=float, default=defaults.max_buffer_seconds,
                       help="live audio buffered past this ends the session with buffer_overflow")
    serve.add_argument("--log-level", default="info")
    transcribe = sub.add_parser("transcribe", help="transcribe files without a server")
    _model_args(transcribe)
    transcribe.add_argument("files", nargs="+")
    transcribe.add_argument("--language", default=None)
    live = sub.add_parser("stream", help="stream a file to a server's live WebSocket, printing events as they arrive")
    live.add_argument("file")
    live.add_argument("--url", default="http://127.0.0.1:8000")
    live.add_argument("--realtime", action="store_true", help="send at the pace of speech")
    live.add_argument("--language", default=None)
    live.add_argument("--partials", action="store_true", help="also show the unstable tail")
    return parser.parse_args(argv)


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from sasr.models.build import build_engine
    from sasr.server.app import create_app

    config = ServerConfig(
        model=args.model, served_model_name=args.served_model_name, host=args.host, port=args.port,
        device=args.device, dtype=args.dtype, max_audio_seconds=args.max_audio_seconds,
        max_upload_mb=args.max_upload_mb, max_queued_requests=args.max_queued_requests,
        max_num_seqs=args.max_num_seqs, enforce_eager=args.enforce_eager, max_sessions=args.max_sessions,
        chunk_seconds=args.chunk_seconds, max_buffer_seconds=args.max_buffer_seconds,
        load_format=args.load_format, enable_prefix_caching=args.enable_prefix_caching,
        num_kv_blocks=args.num_kv_blocks,
    )
    engine = build_engine(config.model, config.device, config.dtype, config.max_num_seqs,
                          config.max_queued_requests, config.enforce_eager, config.load_format,
                          config.enable_prefix_caching, config.num_kv_blocks)
    name = config.served_model_name or engine.served_name
    logging.getLogger("sasr").info("serving %s as %r on http://%s:%d", config.model or "tiny.en", name, config.host, config.port)
    # Keepalive pings never time out: a client streaming a file faster than speech is held back by TCP
    # backpressure, and its pongs queue behind its audio (minutes of it, in socket buffers).
    uvicorn.run(create_app(config, engine, name), host=config.host, port=config.port, log_level=args.log_level,
                ws_ping_interval=20.0, ws_ping_timeout=None)


def transcribe(args: argparse.Namespace) -> None:
    import asyncio
    from pathlib import Path

    from sasr.audio.io import AudioError, decode_audio
    from sasr.engine import TranscriptionRequest
    from sasr.models.build import build_engine

    engine = build_engine(args.model, args.device, args.dtype, load_format=args.load_format)

    async def one(name: str) -> str:
        try:
            audio = decode_audio(Path(name).read_bytes())
        except (OSError, AudioError) as exc:
            return f"{name}: error: {exc}"
        result = await engine.transcribe(TranscriptionRequest(audio, language=args.language))
        return f"{name}: {result.text}" if len(args.files) > 1 else result.text

    async def all_files() -> list[str]:
        return await asyncio.gather(*(one(name) for name in args.files))  # batched together

    lines = asyncio.run(all_files())
    engine.close()
    print("\n".join(lines))
    sys.exit(1 if any(": error: " in line for line in lines) else 0)


def stream(args: argparse.Namespace) -> None:
    import asyncio
    from pathlib import Path

    from sasr.audio.io import decode_audio
    from sasr.client import stream_audio, to_pcm16

    audio = decode_audio(Path(args.file).read_bytes())
    start = {k: v for k, v in {"language": args.language, "partials": args.partials or None}.items() if v}

    def show(at_s: float, event: dict) -> None:
        print(f"{at_s:7.2f}s {json.dumps(event)}", flush=True)

    result = asyncio.run(stream_audio(args.url, to_pcm16(audio), realtime=args.realtime, start=start, on_event=show))
    print(f"{result.end_sent_s:7.2f}s session.end sent; final {result.final is not None}", file=sys.stderr)
    sys.exit(0 if result.final is not None else 1)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    args = parse_args(argv)
    {"serve": serve, "transcribe": transcribe, "stream": stream}[args.command](args)
