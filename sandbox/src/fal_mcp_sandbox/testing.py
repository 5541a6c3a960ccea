"""Pytest fixtures for pack authors: a fal sandbox, every installed tool served against it, and a
real `fal-mcp serve` over stdio. A pack's tests enable them in their conftest.py:

    pytest_plugins = ["fal_mcp_sandbox.testing"]

    @pytest.mark.anyio
    async def test_speak(fal_tools, fal_sandbox):
        result = await fal_tools.call("text_to_speech", {"text": "hello"})
        assert not result.is_error and fal_sandbox.state.submissions[-1]["input"]["prompt"] == "hello"

Fixtures: `anyio_backend` ("asyncio"); `fal_sandbox` (an in-process Sandbox, one per test);
`fal_registry` (every installed pack, loaded once); `fal_tools` (a ToolTable of that registry against
`fal_sandbox`); `fal_isolated` (autouse: no real fal key or login is read, and fal_client's module
constants are restored after each test). Helpers: `stdio_session`, `run_cli`, `clean_env`,
`sandbox_settings`.

This module imports pytest, so it is for tests only: `import fal_mcp_sandbox` never imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from fal_mcp.config import Settings

__all__ = [
    "anyio_backend",
    "clean_env",
    "fal_isolated",
    "fal_registry",
    "fal_sandbox",
    "fal_tools",
    "run_cli",
    "sandbox_settings",
    "stdio_session",
]

# What a server subprocess must not inherit from the developer's shell: keys, and fal-mcp
# settings that would change which packs load or where calls go.
PRIVATE_PREFIXES = ("FAL_KEY", "FAL_MCP_")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without fal keys and FAL_MCP_* settings, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(PRIVATE_PREFIXES)}
    # A server's job store lives with it unless a test says otherwise (never in the developer's home).
    env["FAL_MCP_STORE"] = "sqlite:///:memory:"
    env.update(extra or {})
    return env


def sandbox_settings(sandbox: Any, **overrides: Any) -> Settings:
    """Settings pointing at a started sandbox; `overrides` are FAL_MCP_* variables."""
    env = {**sandbox.env(), "FAL_MCP_STORE": "sqlite:///:memory:"}
    env.update({name: str(value) for name, value in overrides.items()})
    return Settings.from_env(env)


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """`fal-mcp <args>` in a subprocess of this interpreter, in `clean_env(env)`; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "fal_mcp.cli", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
    )


@asynccontextmanager
async def stdio_session(
    env: Mapping[str, str] | None = None,
    args: Sequence[str] | None = None,
    *,
    sandbox: Any = None,
    mode: str = "legacy",
):
    """An `mcp.Client` talking to a real `fal-mcp <args>` subprocess over stdio.

    By default the server runs its own sandbox (`serve --sandbox`). Pass `sandbox=fal_sandbox` to
    point it at yours instead, so the test can read what the sandbox received. `mode="legacy"` is the
    `initialize` handshake most clients use today; "auto" lets the SDK pick the newest protocol.
    """
    from mcp import Client, StdioServerParameters

    extra = dict(sandbox.env()) if sandbox is not None else {}
    extra.update(env or {})
    if args is None:
        args = ("serve",) if sandbox is not None else ("serve", "--sandbox")
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "fal_mcp.cli", *args], env=clean_env(extra)
    )
    async with Client(params, mode=mode) as client:
        yield client


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def fal_isolated(monkeypatch, tmp_path_factory):
    """No test reads the developer's fal key or `fal auth login` token, and the gateway's rewrite of
    fal_client's module-level hosts (pointed at a sandbox) does not leak into the next test."""
    import fal_client.client as client

    from fal_mcp.falclient import HOST_CONSTANTS

    monkeypatch.setenv("FAL_HOME_DIR", str(tmp_path_factory.mktemp("falhome")))
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name in (*HOST_CONSTANTS, "MAX_ATTEMPTS"):
        monkeypatch.setattr(client, name, getattr(client, name))


@pytest.fixture
async def fal_sandbox():
    """A fal sandbox on 127.0.0.1, started for this test; `fal_sandbox.state` holds what it received."""
    from . import Sandbox

    async with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def fal_registry():
    """Every installed pack, loaded as the server would with no FAL_MCP_* settings."""
    from fal_mcp.plugins import load_plugins

    return load_plugins(Settings.from_env({}))


@pytest.fixture
async def fal_tools(fal_sandbox, fal_registry):
    """The installed tools served in-process against `fal_sandbox`: `await fal_tools.call(name, args)`
    returns the mcp CallToolResult a client would get."""
    from fal_mcp.gateway import FalGateway
    from fal_mcp.server import ToolTable

    # A sandbox fault with a long Retry-After must not stall a test.
    settings = sandbox_settings(fal_sandbox, FAL_MCP_MAX_RETRY_AFTER=0.5)
    async with FalGateway(settings) as gateway, ToolTable(fal_registry, settings, gateway) as table:
        yield table
