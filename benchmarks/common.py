"""Shared pieces of the benchmarks: a sandbox process, a server process, machine facts."""

from __future__ import annotations

import contextlib
import itertools
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
        from fal_mcp_sandbox import read_settings

        settings = read_settings(process.stdout)
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


# -- shared by the capacity benchmarks (issue 20): run facts, a lean MCP client, /health throughout ----


def run_facts() -> str:
    """Machine, date (UTC), load average and where fal_mcp is imported from: the lines every capacity
    benchmark prints first, so a figure can be read against the conditions it was measured in."""
    import datetime
    import importlib.util

    spec = importlib.util.find_spec("fal_mcp")
    source = str(Path(spec.origin).parent) if spec and spec.origin else "not installed"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"machine: {machine()}\ndate: {now}; load average (1, 5, 15 min): {load}\nfal_mcp from: {source}"


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def percentile(values: list[float], fraction: float) -> float:
    """The value at `fraction` (0..1) of the sorted values, nearest rank; nan for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * len(ordered))) - 1))]


def raise_own_open_files() -> int:
    """This process's soft open-files limit raised to its hard limit (a load generator holding thousands
    of connections needs it); returns the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_files_limit(soft: int, hard: int | None = None):
    """A preexec_fn setting a child's open-files limits (soft, and hard if given) before it starts."""

    def apply() -> None:
        import resource

        current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, current_hard if hard is None else hard))

    return apply


@contextlib.contextmanager
def http_server(args: list[str], env: dict[str, str], *, preexec_fn=None, command: list[str] | None = None):
    """Like server_process (`fal-mcp serve <args> --port 0` on HTTP), also keeping the server's stderr
    lines (errors such as "Too many open files" show there) and taking a preexec_fn (resource limits).
    `command` replaces `fal-mcp serve`. Yields (process, base_url, stderr_lines)."""
    process = subprocess.Popen(
        [*(command or [str(BIN / "fal-mcp"), "serve"]), *args, "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=preexec_fn,
    )
    found: list[str] = []
    lines: list[str] = []

    def read() -> None:
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            match = re.search(r"listening on (http://\S+) ", line)
            if match and not found:
                found.append(match.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while not found and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    try:
        if not found:
            raise RuntimeError("the server did not start:\n" + "\n".join(lines[-20:]))
        yield process, found[0], lines
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def fal_mcp_serve_help() -> str:
    """`fal-mcp serve --help` of the installed server: what options this version has."""
    done = subprocess.run(
        [str(BIN / "fal-mcp"), "serve", "--help"], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    return done.stdout + done.stderr


class McpHttpError(Exception):
    """A call that did not come back as a tool result: HTTP status, JSON-RPC error, broken connection."""


class McpConnection:
    """One keep-alive HTTP/1.1 connection speaking MCP's streamable HTTP (protocol 2025-11-25) as raw
    JSON-RPC over asyncio streams: a load generator far lighter than mcp.Client over httpx, so that on a
    2-core machine the server, not the client, is what is measured. `session` is an Mcp-Session-Id
    from `open_session` (None for a stateless server)."""

    PROTOCOL = "2025-11-25"
    # Request ids unique across every connection of this process: the server routes a response by its
    # id within the session, so two connections of one session must never use the same id at once.
    ids = itertools.count(2)

    def __init__(self, base_url: str, session: str | None = None, path: str = "/mcp") -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(base_url)
        self.host, self.port, self.path = parts.hostname, parts.port, path
        self.netloc = parts.netloc
        self.session = session
        self.reader = self.writer = None
        self.answered = False  # whether the response being read has begun (its status line)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def post(self, message: dict) -> tuple[int, dict[str, str], bytes]:
        """Send one JSON-RPC message; (status, headers, body). A kept-alive connection the server closed
        meanwhile (its keep-alive timeout) is reopened once, as HTTP clients do: nothing was received."""
        import asyncio
        import json

        body = json.dumps(message).encode()
        head = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.netloc}",
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
            f"Content-Length: {len(body)}",
            f"Mcp-Protocol-Version: {self.PROTOCOL}",
        ]
        if self.session:
            head.append(f"Mcp-Session-Id: {self.session}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for attempt in range(2):
            reused = self.writer is not None
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.answered = False
                self.writer.write(request)
                return await self._response()
            except (ConnectionResetError, BrokenPipeError) as exc:
                answered = self.answered
                await self.close()
                if not (reused and attempt == 0 and not answered):
                    raise McpHttpError(f"connection failed: {type(exc).__name__}: {exc}") from None
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                await self.close()
                raise McpHttpError(f"connection failed: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    async def _response(self) -> tuple[int, dict[str, str], bytes]:
        reader = self.reader
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("closed before a response")
        self.answered = True
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        if chunked:
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(chunks)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
        if headers.get("connection", "").lower() == "close" or not (chunked or "content-length" in headers):
            await self.close()
        return status, headers, body

    async def request(self, method: str, params: dict) -> dict:
        """A JSON-RPC request; its `result` (McpHttpError for anything else)."""
        import json

        request_id = next(self.ids)
        status, headers, body = await self.post(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        )
        if status != 200:
            raise McpHttpError(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        if headers.get("content-type", "").startswith("text/event-stream"):
            messages = [
                json.loads(line[5:])
                for line in body.decode().splitlines()
                if line.startswith("data:") and line[5:].strip()
            ]
        else:
            messages = [json.loads(body)]
        for message in messages:
            if message.get("id") == request_id:
                if "error" in message:
                    raise McpHttpError(f"JSON-RPC error {message['error']}")
                return message["result"]
        raise McpHttpError(f"no response to request {request_id} in {body[:300]!r}")

    async def call_tool(self, name: str, arguments: dict) -> dict:
        """tools/call; the CallToolResult as a dict (check its `isError`)."""
        return await self.request("tools/call", {"name": name, "arguments": arguments})

    async def initialize(self, client: str = "bench") -> str | None:
        """The `initialize` handshake on this connection; keeps and returns the Mcp-Session-Id (None:
        a stateless server). A session of its own per connection also works where each of several
        server processes knows only its own sessions."""
        status, headers, body = await self.post(initialize_message(client))
        if status != 200:
            raise McpHttpError(f"initialize: HTTP {status}: {body[:300]!r}")
        self.session = headers.get("mcp-session-id")
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self.session


async def open_session(base_url: str, client: str = "bench") -> str | None:
    """The `initialize` handshake on a connection of its own; the Mcp-Session-Id (None: stateless)."""
    connection = McpConnection(base_url)
    try:
        return await connection.initialize(client)
    finally:
        await connection.close()


def tool_error(result: dict) -> str | None:
    """The text of a tool result that is an error (isError), else None."""
    if not result.get("isError"):
        return None
    texts = [item.get("text", "") for item in result.get("content", []) if item.get("type") == "text"]
    return " ".join(texts) or "isError without text"


MONITOR = r"""
import json, signal, sys, time, http.client
from urllib.parse import urlsplit
url = urlsplit(sys.argv[1])
interval = float(sys.argv[2])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
lags, failures, connection = [], [], None
print("ready", flush=True)
while not stop:
    started = time.perf_counter()
    try:
        if connection is None:
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request("GET", "/health")
        connection.getresponse().read()
        lags.append((time.perf_counter() - started) * 1000)
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {exc}"[:200])
        connection = None
    time.sleep(interval)
print(json.dumps({"lags": lags, "failures": failures}))
"""


@contextlib.contextmanager
def health_monitor(base_url: str, interval: float = 0.02):
    """Like health_pinger, but for as long as the caller needs: a separate process times GET /health
    every `interval` s (one keep-alive connection, reconnecting after a failure) until the function it
    yields is called, which stops it and returns (round trips in ms, failures)."""
    import json

    process = subprocess.Popen(
        [sys.executable, "-c", MONITOR, base_url, str(interval)],
        stdout=subprocess.PIPE,
        text=True,
    )
    process.stdout.readline()  # "ready": timing starts before the caller's load

    def results() -> tuple[list[float], list[str]]:
        process.terminate()
        out, _ = process.communicate(timeout=60)
        found = json.loads(out.strip().splitlines()[-1])
        return found["lags"], found["failures"]

    try:
        yield results
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def sandbox_records(base_url: str, what: str) -> list:
    """GET /_sandbox/<what> (requests, submissions, cancels, jobs) of a sandbox in another process."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/_sandbox/{what}", timeout=60) as response:
        return json.loads(response.read())


def sandbox_reset(base_url: str) -> None:
    import urllib.request

    request = urllib.request.Request(f"{base_url}/_sandbox/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def sandbox_base(settings: dict[str, str]) -> str:
    """The sandbox's base URL from its FAL_MCP_* settings."""
    return settings["FAL_MCP_QUEUE_URL"].removesuffix("/queue")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc/<pid>/task/*/children)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its living descendants (a server's worker processes)."""
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def reset_peak_rss(pid: int) -> bool:
    """Start a new peak (VmHWM) for `pid` (writing 5 to /proc/<pid>/clear_refs); False where refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


TIME_WAIT_SECONDS = 60  # Linux's TCP_TIMEWAIT_LEN


def closed_connections(port: int, within: float) -> int:
    """TCP connections to or from `port` on this machine closed within the last `within` seconds: the
    sockets in TIME-WAIT (/proc/net/tcp, state 06) whose 60 s timer started since then. Every connection
    one side closes leaves one, so this counts connections made and dropped (e.g. a client that leaves
    a response unread closes its connection instead of reusing it)."""
    ticks = os.sysconf("SC_CLK_TCK")
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                if len(fields) < 6 or fields[3] != "06":
                    continue
                ports = {int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)}
                remaining = int(fields[5].split(":")[1], 16) / ticks
                if port in ports and remaining >= TIME_WAIT_SECONDS - within - 0.5:
                    count += 1
    return count
