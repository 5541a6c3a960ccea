"""fal_mcp_sandbox.testing, as a pack author uses it: a pytest run of its own, with the plugin enabled either
by `pytest_plugins` in a conftest or by `-p fal_mcp_sandbox.testing`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fal_mcp_sandbox.testing import clean_env, run_cli

# A pack's test suite in miniature: each fixture and helper once, in the order that shows the
# per-test isolation (the test after fal_tools sees fal_client's hosts restored).
PACK_TESTS = """
import os

import fal_client.client
import pytest

from fal_mcp_sandbox.testing import stdio_session

DEFAULT_QUEUE = fal_client.client.QUEUE_URL_FORMAT


def test_no_real_credentials(tmp_path_factory):
    assert not any(name.startswith("FAL_KEY") for name in os.environ)
    assert os.environ["FAL_HOME_DIR"].startswith(str(tmp_path_factory.getbasetemp()))


@pytest.mark.anyio
async def test_fal_tools_against_fal_sandbox(fal_tools, fal_sandbox):
    result = await fal_tools.call("generate_image", {"prompt": "a red cube", "seed": 3})
    assert not result.is_error, result.content[0].text
    assert fal_sandbox.state.submissions[-1]["input"]["seed"] == 3
    assert fal_client.client.QUEUE_URL_FORMAT.startswith(fal_sandbox.base_url)


def test_fal_client_hosts_restored():
    assert fal_client.client.QUEUE_URL_FORMAT == DEFAULT_QUEUE


@pytest.mark.anyio
async def test_stdio_session_against_my_sandbox(fal_sandbox):
    async with stdio_session(sandbox=fal_sandbox) as client:
        result = await client.call_tool("generate_image", {"prompt": "over stdio"})
    assert not result.is_error, result.content[0].text
    assert fal_sandbox.state.submissions[-1]["input"]["prompt"] == "over stdio"


@pytest.mark.anyio
async def test_stdio_session_with_its_own_sandbox(anyio_backend):
    assert anyio_backend == "asyncio"
    async with stdio_session() as client:
        assert "generate_image" in {tool.name for tool in (await client.list_tools()).tools}
"""


@pytest.mark.parametrize("enabled_by", ["conftest", "-p"])
def test_a_pack_suite_using_the_plugin(tmp_path, enabled_by):
    (tmp_path / "test_pack.py").write_text(PACK_TESTS)
    options = ["-p", "fal_mcp_sandbox.testing"] if enabled_by == "-p" else []
    if enabled_by == "conftest":
        (tmp_path / "conftest.py").write_text('pytest_plugins = ["fal_mcp_sandbox.testing"]\n')
    # A real key in the environment must not reach the tests or the servers they start.
    env = {**clean_env(), "FAL_KEY": "real-key-must-not-be-used"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options, str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout


def test_importing_fal_mcp_or_the_sandbox_imports_neither_testing_nor_pytest():
    code = (
        "import sys, fal_mcp, fal_mcp_sandbox; "
        "print(sorted(m for m in ('pytest', 'fal_mcp_sandbox.testing') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_clean_env_drops_keys_and_settings(monkeypatch):
    monkeypatch.setenv("FAL_KEY", "secret")
    monkeypatch.setenv("FAL_MCP_PLUGINS", "image")
    env = clean_env({"FAL_MCP_ALLOWED_DIRS": "/tmp"})
    assert "FAL_KEY" not in env and "FAL_MCP_PLUGINS" not in env
    assert env["FAL_MCP_ALLOWED_DIRS"] == "/tmp" and env["PATH"] == clean_env()["PATH"]


def test_run_cli_runs_fal_mcp():
    done = run_cli("plugins", "--json", env={"FAL_MCP_DISABLE_PLUGINS": "video"})
    assert done.returncode == 0, done.stderr
    status = {row["name"]: row["status"] for row in json.loads(done.stdout)}
    assert status["image"] == "active" and status["video"] == "disabled"
