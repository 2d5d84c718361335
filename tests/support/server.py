"""Run `python -m sasr serve` in a subprocess on a free port, as a user would start it."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str, timeout_s: float = 120, port: int | None = None, env: dict | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "sasr", "serve", "--port", str(self.port), "--log-level", "warning", *args]
        # its output goes to a file: a pipe nobody reads would fill and block the server
        self.log = tempfile.NamedTemporaryFile("w+", prefix="sasr-server-", suffix=".log")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not become healthy in {timeout_s} s")

    def output(self) -> str:
        with open(self.log.name) as log:
            return log.read()

    def healthy(self) -> bool:
        return self.proc.poll() is None and httpx.get(f"{self.url}/health", timeout=5).status_code == 200

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process so far (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate, and kill what does not exit within 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
