"""Shared pieces of the benchmarks: a sandbox process, a server process, machine facts."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def initialize_message(client: str = "bench") -> dict:
    """The 2025-11-25 `initialize` request a stdio client sends first."""
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": client, "version": "0"},
        },
    }


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_KEY", "FAL_MCP_"))}
    env.update(extra or {})
    return env


@contextlib.contextmanager
def sandbox_process(*args: str):
    """`python -m fal_mcp_sandbox` in its own process; yields its FAL_MCP_* settings and the process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fal_mcp_sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )
    try:
        settings = dict(
            process.stdout.readline().removeprefix("export ").strip().split("=", 1) for _ in range(6)
        )
        yield settings, process
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def server_process(args: list[str], env: dict[str, str]):
    """`fal-mcp serve <args>` listening on HTTP; yields (process, base_url)."""
    process = subprocess.Popen(
        [str(BIN / "fal-mcp"), "serve", *args, "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    found: list[str] = []

    def read() -> None:
        for line in process.stderr:
            match = re.search(r"listening on (http://\S+) ", line)
            if match and not found:
                found.append(match.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    while not found and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    try:
        if not found:
            raise RuntimeError("the server did not start")
        yield process, found[0]
    finally:
        process.terminate()
        process.wait(timeout=10)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PINGER = r"""
import json, sys, time, http.client
from urllib.parse import urlsplit
url, seconds = urlsplit(sys.argv[1]), float(sys.argv[2])
lags, deadline = [], time.monotonic() + seconds
connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
while time.monotonic() < deadline:
    started = time.perf_counter()
    connection.request("GET", "/health")
    connection.getresponse().read()
    lags.append((time.perf_counter() - started) * 1000)
    time.sleep(0.02)
print(json.dumps(lags))
"""


@contextlib.contextmanager
def health_pinger(base_url: str, seconds: float):
    """A separate process that times GET /health every 20 ms: how long the server's event loop takes
    to answer, measured apart from the load generator's own work. Yields a function returning the
    round trips in ms (waits for the pinger to finish)."""
    import json

    process = subprocess.Popen(
        [sys.executable, "-c", PINGER, base_url, str(seconds)], stdout=subprocess.PIPE, text=True
    )

    def results() -> list[float]:
        out, _ = process.communicate(timeout=seconds + 30)
        return json.loads(out)

    try:
        yield results
    finally:
        if process.poll() is None:
            process.kill()
