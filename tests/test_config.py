"""The `sasr serve` flags come from ServerConfig: one flag per field, with its help, type and default."""

from __future__ import annotations

import argparse

import pytest

from sasr.cli import add_config_flags, config_from_args, parse_args
from sasr.config import ServerConfig


def serve_actions() -> dict[str, argparse.Action]:
    """The flags `sasr serve` adds from ServerConfig, by destination."""
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return {action.dest: action for action in parser._actions if action.dest != "help"}


def test_every_field_has_a_flag_with_help():
    actions = serve_actions()
    assert set(actions) == set(ServerConfig.__struct_fields__)
    for name, action in actions.items():
        assert action.help, name
        assert action.option_strings, name


def test_flag_names_are_the_documented_ones():
    flags = {action.option_strings[0] for action in serve_actions().values()}
    assert flags == {
        "--model", "--load-format", "--served-model-name", "--host", "--port", "--device", "--dtype",
        "--max-audio-seconds", "--max-upload-mb", "--max-queued-requests", "--max-num-seqs", "--enforce-eager",
        "--max-sessions", "--chunk-seconds", "--live-commits", "--endpoint-ms", "--no-prefix-caching",
        "--num-kv-blocks", "--max-buffer-seconds",
        "--quantize", "--api-key", "--open-metrics", "--ws-ping-interval", "--ws-ping-timeout",
        "--upload-timeout", "--shutdown-timeout",
    }


def test_defaults_equal_the_struct(monkeypatch):
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    args = parse_args(["serve"])
    assert config_from_args(args) == ServerConfig()
    assert args.log_level == "info"


def test_flags_set_the_config():
    args = parse_args(["serve", "--max-sessions", "3", "--no-prefix-caching", "--enforce-eager",
                       "--chunk-seconds", "1.5", "--num-kv-blocks", "200", "--dtype", "bfloat16"])
    config = config_from_args(args)
    assert (config.max_sessions, config.enable_prefix_caching, config.enforce_eager) == (3, False, True)
    assert (config.chunk_seconds, config.num_kv_blocks, config.dtype) == (1.5, 200, "bfloat16")


def test_host_and_port_from_the_environment(monkeypatch):
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9123")
    config = config_from_args(parse_args(["serve"]))
    assert (config.host, config.port) == ("0.0.0.0", 9123)
    assert config_from_args(parse_args(["serve", "--port", "7000"])).port == 7000


def test_api_keys_from_flags_and_the_environment(monkeypatch):
    monkeypatch.delenv("SASR_API_KEYS", raising=False)
    assert config_from_args(parse_args(["serve"])).api_keys == []
    assert config_from_args(parse_args(["serve", "--api-key", "a", "--api-key", "b"])).api_keys == ["a", "b"]
    monkeypatch.setenv("SASR_API_KEYS", "k1,k2")
    assert config_from_args(parse_args(["serve"])).api_keys == ["k1", "k2"]
    assert config_from_args(parse_args(["serve", "--api-key", "c"])).api_keys == ["k1", "k2", "c"]


def test_choices_are_enforced():
    with pytest.raises(SystemExit):
        parse_args(["serve", "--load-format", "safetensors"])


def test_transcribe_takes_the_model_flags():
    args = parse_args(["transcribe", "a.wav", "--model", "m", "--load-format", "dummy", "--dtype", "float16"])
    assert (args.files, args.model, args.load_format, args.dtype, args.device) == (["a.wav"], "m", "dummy", "float16", "auto")
    assert not hasattr(args, "max_sessions")


def test_an_endpoint_out_of_range_is_refused():
    from sasr.server.app import create_app

    with pytest.raises(ValueError, match="--endpoint-ms"):
        create_app(ServerConfig(endpoint_ms=50), engine=None, served_model_name="x")  # checked before the engine is used
