"""Command line: `sasr serve` runs the server, `sasr transcribe FILE...` prints transcripts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing

import msgspec

from sasr.config import ServerConfig

MODEL_FIELDS = ("model", "load_format", "device", "dtype")  # the settings `sasr transcribe` takes too


def _flag(field: msgspec.structs.FieldInfo) -> tuple[str, dict]:
    """A ServerConfig field as a flag: its name and add_argument's options."""
    kind, meta = typing.get_args(field.type)  # Annotated[kind, setting(help, **extra)]
    extra = meta.extra or {}
    switch_off = kind is bool and field.default  # a switch flips the default: --enforce-eager, --no-prefix-caching
    name = extra.get("flag") or f"--{'no-' if switch_off else ''}{field.name.replace('_', '-')}"
    default = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    options = {"dest": field.name, "help": meta.description,
               "default": os.environ.get(extra["env"], default) if "env" in extra else default}
    if typing.get_origin(kind) is list:  # repeatable; its environment variable is comma-separated
        env = options["default"]
        options.update(action="append", default=[x for x in env.split(",") if x] if isinstance(env, str) else env)
    elif kind is bool:
        options["action"] = "store_false" if switch_off else "store_true"
    elif typing.get_origin(kind) is typing.Literal:
        options["choices"] = typing.get_args(kind)
    else:  # int, float, str, or one of them | None
        options["type"] = next(t for t in typing.get_args(kind) or (kind,) if t is not type(None))
    return name, options


def add_config_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add a flag per ServerConfig field (or the fields in `names`), with its type, default and help."""
    for field in msgspec.structs.fields(ServerConfig):
        if names is None or field.name in names:
            name, options = _flag(field)
            parser.add_argument(name, **options)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sasr", description="Streaming speech recognition server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    add_config_flags(serve)
    serve.add_argument("--log-level", default="info", help="uvicorn's log level")
    transcribe = sub.add_parser("transcribe", help="transcribe files without a server")
    add_config_flags(transcribe, MODEL_FIELDS)
    transcribe.add_argument("files", nargs="+")
    transcribe.add_argument("--language", default=None)
    live = sub.add_parser("stream", help="stream a file to a server's live WebSocket, printing events as they arrive")
    live.add_argument("file")
    live.add_argument("--url", default="http://127.0.0.1:8000")
    live.add_argument("--realtime", action="store_true", help="send at the pace of speech")
    live.add_argument("--language", default=None)
    live.add_argument("--partials", action="store_true", help="also show the unstable tail")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(**{field: getattr(args, field) for field in ServerConfig.__struct_fields__})


def serve(args: argparse.Namespace) -> None:
    from sasr.server.app import app_for
    from sasr.server.run import serve_app

    config = config_from_args(args)
    app = app_for(config)
    logging.getLogger("sasr").info("serving %s as %r on http://%s:%d", config.model or "tiny.en",
                                   app.state.served_model_name, config.host, config.port)
    serve_app(app, config, args.log_level)


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
    print(f"{result.end_sent_s:7.2f}s session.end sent; final {result.final is not None}"
          + (f" after {result.reconnects} reconnects: {result.text}" if result.reconnects else ""), file=sys.stderr)
    sys.exit(0 if result.final is not None else 1)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    args = parse_args(argv)
    {"serve": serve, "transcribe": transcribe, "stream": stream}[args.command](args)
