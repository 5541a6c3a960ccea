"""Shared fixtures: the offline sandbox, a gateway pointed at it, test packs, an MCP client over stdio."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from fal_mcp.config import Settings
from fal_mcp.gateway import FalGateway

TESTS = Path(__file__).parent
PACKS = TESTS / "packs"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def no_real_credentials(monkeypatch, tmp_path_factory):
    """No test may read a developer's fal login or key."""
    monkeypatch.setenv("FAL_HOME_DIR", str(tmp_path_factory.mktemp("falhome")))
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def restore_fal_client_globals(monkeypatch):
    """The gateway points fal_client's module constants at a sandbox; undo that after each test."""
    import fal_client.client as client

    from fal_mcp.falclient import HOST_CONSTANTS

    for name in (*HOST_CONSTANTS, "MAX_ATTEMPTS"):
        monkeypatch.setattr(client, name, getattr(client, name))


@pytest.fixture
async def sandbox():
    from fal_mcp.sandbox import Sandbox

    async with Sandbox() as sb:
        yield sb


def sandbox_settings(sb, **overrides) -> Settings:
    env = dict(sb.env())
    env.update({name: str(value) for name, value in overrides.items()})
    return Settings.from_env(env)


@pytest.fixture
async def gateway(sandbox):
    async with FalGateway(sandbox_settings(sandbox, FAL_MCP_MAX_RETRY_AFTER=0.5)) as gw:
        yield gw


@pytest.fixture(scope="session")
def registry():
    from fal_mcp.plugins import load_plugins

    return load_plugins(Settings.from_env({}))


@pytest.fixture
async def tool_table(sandbox, registry):
    """Every installed tool, served in-process against the sandbox: `await tool_table.call(name, args)`
    returns the CallToolResult an MCP client would get."""
    from fal_mcp.server import ToolTable

    settings = sandbox_settings(sandbox, FAL_MCP_MAX_RETRY_AFTER=0.5)
    async with FalGateway(settings) as gw:
        yield ToolTable(registry, settings, gw)


@pytest.fixture(scope="session")
def thread_sandbox():
    """One sandbox in a background thread, for tests that start server subprocesses."""
    from fal_mcp.sandbox import Sandbox

    sb = Sandbox.start_in_thread()
    yield sb
    sb.stop_thread()


@pytest.fixture(scope="session")
def test_packs_dir(tmp_path_factory) -> Path:
    """The packs under tests/packs, really installed (wheels built by pip) into a directory of their own."""
    target = tmp_path_factory.mktemp("testpacks")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target),
                    *[str(path) for path in sorted(PACKS.iterdir()) if path.is_dir()]],
                   check=True, capture_output=True)
    return target


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a server subprocess: this one's, minus credentials, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_KEY", "FAL_MCP_"))}
    env.update(extra or {})
    return env


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

    process = subprocess.Popen([sys.executable, "-m", "fal_mcp.cli", "serve", *args, "--port", "0"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
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
    async with FalGateway(settings) as gw:
        yield ToolTable(registry, settings, gw)


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
    from fal_mcp.sandbox import Sandbox

    sb = Sandbox()
    portal.call(sb.start)
    yield sb
    portal.call(sb.stop)
