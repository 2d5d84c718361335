"""`make soak`'s short variant: 40 s of live sessions, uploads, misbehaving clients, an injected engine
fault and a SIGTERM drain against a real server; no lost words, hangs, unexpected errors or leaks."""

from __future__ import annotations

import argparse

from bench.soak import soak, verdict


async def test_short_soak(cache_dir):
    out = await soak(argparse.Namespace(duration=40.0, sessions=3, max_upload_mb=2.0))
    assert verdict(out) == [], out
    assert out["injected_fault"] and out["errors"].get("file_too_large")
    assert out["completed"] >= 3
