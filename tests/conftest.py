"""Shared fixtures: the offline sandbox, a gateway pointed at it, test packs, an MCP client over stdio."""

from __future__ import annotations

import subprocess
import sys
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from fal_mcp.gateway import FalGateway

# The fixtures pack authors get from fal_mcp_sandbox.testing serve this project's own tests too:
# anyio_backend, fal_isolated (autouse: no real key or login, fal_client's hosts restored after each
# test), fal_sandbox, fal_registry and fal_tools, here also under shorter names.
from fal_mcp_sandbox.testing import (  # noqa: F401
    anyio_backend,
    fal_isolated,
    fal_registry,
    fal_tools,
    sandbox_settings,
)
from fal_mcp_sandbox.testing import clean_env as server_env  # noqa: F401

TESTS = Path(__file__).parent
PACKS = TESTS / "packs"
# A 2025-11-25 initialize request and the headers streamable HTTP asks for, for tests speaking raw HTTP
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def fal_sandbox():  # noqa: F811 (replaces fal_mcp_sandbox.testing's, for this suite's speed)
    """A fresh sandbox for each test, as fal_mcp_sandbox.testing's fal_sandbox gives, but on its own event
    loop in a thread, and left to stop in the background: stopping one waits ~0.2 s for its HTTP server's
    shutdown ticks, over hundreds of tests most of a minute. (Not one sandbox shared by every test: a
    request a finished test's server sends late must not land in the next test's records.)"""
    from fal_mcp_sandbox import Sandbox

    sb = Sandbox.start_in_thread()
    yield sb
    sb.state.reset()  # held jobs are released
    sb.stop_thread(timeout=0)  # asked to stop; not waited for


@pytest.fixture
def sandbox(fal_sandbox):
    return fal_sandbox


@pytest.fixture
def registry(fal_registry):  # noqa: F811 (pytest passes the imported fixture)
    return fal_registry


@pytest.fixture
def tool_table(fal_tools):  # noqa: F811 (pytest passes the imported fixture)
    """Every installed tool, served in-process against the sandbox: `await tool_table.call(name, args)`
    returns the CallToolResult an MCP client would get."""
    return fal_tools


@pytest.fixture
async def gateway(sandbox):
    async with FalGateway(sandbox_settings(sandbox, FAL_MCP_MAX_RETRY_AFTER=0.5)) as gw:
        yield gw


@pytest.fixture(scope="session")
def thread_sandbox():
    """One sandbox in a background thread, for tests that start server subprocesses."""
    from fal_mcp_sandbox import Sandbox

    sb = Sandbox.start_in_thread()
    yield sb
    sb.stop_thread()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server (Debian's package) on a free loopback port, for the session: its URL base."""
    import shutil
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import socket

    deadline = time.monotonic() + 60  # a hang guard: until it accepts connections
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail("redis-server exited at start")
            if time.monotonic() > deadline:
                pytest.fail("redis-server did not accept connections within 60 s")
            time.sleep(0.02)
    yield f"redis://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server):
    """Database 1 of the session's redis-server, emptied for this test."""
    import redis

    client = redis.Redis.from_url(f"{redis_server}/1")
    client.flushdb()
    client.close()
    return f"{redis_server}/1"


@pytest.fixture(scope="session")
def test_packs_dir(tmp_path_factory) -> Path:
    """The packs under tests/packs, really installed (wheels built by pip) into a directory of their own."""
    import shutil

    target = tmp_path_factory.mktemp("testpacks")
    # Built from a copy: a build writes build/ and *.egg-info beside the sources, and parallel test
    # workers (pytest-xdist) each build their own.
    sources = tmp_path_factory.mktemp("testpack-sources")
    copies = []
    for path in sorted(PACKS.iterdir()):
        if path.is_dir():
            copies.append(sources / path.name)
            shutil.copytree(
                path, copies[-1], ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
            )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            *map(str, copies),
        ],
        check=True,
        capture_output=True,
    )
    return target


@asynccontextmanager
async def stdio_client(args: list[str], env: dict[str, str], mode: str = "legacy"):
    """An mcp SDK client talking to `fal-mcp <args>` over a real stdio subprocess."""
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "fal_mcp.cli", *args], env=env)
    async with Client(params, mode=mode) as client:
        yield client


@contextmanager
def http_server(args: list[str], env: dict[str, str], timeout: float = 30):
    """`fal-mcp serve <args> --port 0` as a subprocess; yields (process, base_url) once it listens."""
    import re
    import threading
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "fal_mcp.cli", "serve", *args, "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    found: list[str] = []
    lines: list[str] = []

    def read_stderr():
        for raw in process.stderr:
            line = raw.decode(errors="replace")
            lines.append(line)
            match = re.search(r"listening on (http://\S+):?(\d+)? ", line)
            if match and not found:
                found.append(re.search(r"(http://[^ ]+) ", line).group(1))

    threading.Thread(target=read_stderr, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        if not found:
            raise RuntimeError("server did not start: " + "".join(lines))
        yield process, found[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@asynccontextmanager
async def tool_table_for(sb, registry, **overrides):
    """Like the tool_table fixture, with settings overrides (FAL_MCP_* names): `async with
    tool_table_for(sandbox, registry, FAL_MCP_ALLOWED_DIRS=...) as table:`."""
    from fal_mcp.server import ToolTable

    settings = sandbox_settings(sb, **{"FAL_MCP_MAX_RETRY_AFTER": 0.5, **overrides})
    async with FalGateway(settings) as gw, ToolTable(registry, settings, gw) as table:
        yield table


def count_routes(sb, *routes: str) -> int:
    """How many requests the sandbox received on these routes (submit, status, result, cancel, upload...)."""
    return sum(1 for request in sb.state.requests if request["route"] in routes)


@pytest.fixture(scope="module")
def portal():
    """An event loop in a background thread, for synchronous tests (hypothesis draws, many fast calls):
    `portal.call(table.call, name, arguments)`."""
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal() as portal:
        yield portal


@pytest.fixture(scope="module")
def portal_sandbox(portal):
    """One sandbox per module, served by `portal`'s event loop."""
    from fal_mcp_sandbox import Sandbox

    sb = Sandbox()
    portal.call(sb.start)
    yield sb
    portal.call(sb.stop)


def listed_outputs(listing) -> list:
    """The outputs in a resources/list answer (beside them is the viewer's ui:// resource)."""
    return [r for r in listing.resources if str(r.uri).startswith("fal-mcp://outputs/")]
