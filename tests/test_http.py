"""HTTP transports: streamable HTTP (both eras), SSE, dual mode, security, health, cancel, stateless replicas."""

from __future__ import annotations

import sys

import anyio
import httpx
import pytest

from .conftest import INITIALIZE, http_server, server_env, stdio_client

pytestmark = pytest.mark.anyio
TOKEN = "test-token-0123456789abcdef"


def mcp_http_client(url: str, *, token: str | None = None, mode: str = "legacy", transport=None):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else None
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120), transport=transport)
    return Client(streamable_http_client(url, http_client=http), mode=mode)


def mcp_sse_client(url: str, *, token: str | None = None):
    from mcp import Client
    from mcp.client.sse import sse_client

    return Client(
        sse_client(url, headers={"Authorization": f"Bearer {token}"} if token else None), mode="legacy"
    )


async def tool_names(client) -> list[str]:
    return sorted(tool.name for tool in (await client.list_tools()).tools)


async def test_every_tool_over_every_transport_is_the_same():
    async with stdio_client(["serve", "--sandbox"], server_env()) as client:
        over_stdio = await tool_names(client)
    with http_server(["--sandbox", "--transport", "http"], server_env()) as (_, base):
        for mode in ("legacy", "2026-07-28"):
            async with mcp_http_client(base + "/mcp", mode=mode) as client:
                assert await tool_names(client) == over_stdio
    with http_server(["--sandbox", "--transport", "sse"], server_env()) as (_, base):
        async with mcp_sse_client(base + "/sse") as client:
            assert await tool_names(client) == over_stdio
    assert "generate_image" in over_stdio


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_generate_image_over_http_with_progress(mode):
    with http_server(["--sandbox", "--transport", "http"], server_env()) as (_, base):
        async with mcp_http_client(base + "/mcp", mode=mode) as client:
            messages = []

            async def on_progress(progress, total, message):
                messages.append(message)

            result = await client.call_tool(
                "generate_image",
                {"prompt": "over http", "image_size": "square"},
                progress_callback=on_progress,
            )
    assert not result.is_error, result.content[0].text
    assert result.structured_content["files"][0]["width"] == 1024
    # fal's own statuses depend on how far the job got before it was followed; these two do not
    assert messages and messages[0].startswith("Recorded as job") and messages[-1] == "Done", messages


async def test_generate_image_over_sse():
    with http_server(["--sandbox", "--transport", "sse"], server_env()) as (_, base):
        async with mcp_sse_client(base + "/sse") as client:
            result = await client.call_tool("generate_image", {"prompt": "over sse"})
    assert not result.is_error and result.structured_content["files"]


async def test_dual_mode_serves_stdio_and_http_from_one_process():
    from mcp import Client, StdioServerParameters

    env = server_env({"FAL_MCP_TRANSPORT": "dual", "FAL_MCP_PORT": "0"})
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "fal_mcp.cli", "serve", "--sandbox"], env=env
    )
    async with Client(params, mode="legacy") as over_stdio:
        names = await tool_names(over_stdio)
        assert not (await over_stdio.call_tool("generate_image", {"prompt": "dual stdio"})).is_error
        port = _listening_port_of_child()  # the same process's HTTP side
        async with mcp_http_client(f"http://127.0.0.1:{port}/mcp") as over_http:
            assert await tool_names(over_http) == names
            assert not (await over_http.call_tool("generate_image", {"prompt": "dual http"})).is_error
        # both sides used the one in-process sandbox, so one gateway: the usage shows both calls
        # (flux_schnell is priced per megapixel: two 1024x576 images)
        usage = await over_stdio.call_tool("get_usage", {})
        assert usage.structured_content["usage"][0]["quantity"] == pytest.approx(2 * 1024 * 576 / 1e6)


def _listening_port_of_child() -> int:
    """The TCP port a child process of ours listens on (Linux /proc), other than its sandbox's."""
    import os

    me = os.getpid()
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == me]
    inodes = set()
    for child in children:
        fd_dir = f"/proc/{child}/fd"
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = []
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.append(int(fields[1].split(":")[1], 16))
    for port in ports:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return port
        except httpx.HTTPError:
            continue
    raise AssertionError(f"no MCP HTTP port among {ports}")


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


async def test_bearer_token_is_required_when_set():
    env = server_env({"FAL_MCP_AUTH_TOKEN": TOKEN})
    with http_server(["--sandbox", "--transport", "http"], env) as (_, base):
        headers = {"Accept": "application/json, text/event-stream"}
        missing = httpx.post(base + "/mcp", json=INITIALIZE, headers=headers)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.post(
            base + "/mcp", json=INITIALIZE, headers={**headers, "Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        assert httpx.get(base + "/health").status_code == 200  # liveness needs no token
        async with mcp_http_client(base + "/mcp", token=TOKEN) as client:
            assert "generate_image" in await tool_names(client)
    with http_server(["--sandbox", "--transport", "sse"], env) as (_, base):
        assert httpx.get(base + "/sse", timeout=5).status_code == 401
        async with mcp_sse_client(base + "/sse", token=TOKEN) as client:
            assert "generate_image" in await tool_names(client)


async def test_foreign_host_and_origin_are_rejected():
    with http_server(["--sandbox", "--transport", "http"], server_env()) as (_, base):
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        assert httpx.post(base + "/mcp", json=body, headers={"Host": "evil.example"}).status_code == 421
        assert (
            httpx.post(base + "/mcp", json=body, headers={"Origin": "https://evil.example"}).status_code
            == 403
        )
        assert httpx.get(base + "/health", headers={"Host": "attacker.example:8080"}).status_code == 421


async def test_allowed_origins_get_cors_with_the_session_header():
    env = server_env({"FAL_MCP_ALLOWED_ORIGINS": "https://app.example"})
    with http_server(["--sandbox", "--transport", "http"], env) as (_, base):
        preflight = httpx.options(
            base + "/mcp",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,mcp-session-id",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        answer = httpx.post(
            base + "/mcp",
            json=INITIALIZE,
            headers={"Origin": "https://app.example", "Accept": "application/json, text/event-stream"},
        )
        assert answer.status_code == 200
        assert "mcp-session-id" in answer.headers["access-control-expose-headers"].lower()
        other = httpx.options(
            base + "/mcp",
            headers={"Origin": "https://other.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


async def test_oversized_body_is_refused():
    env = server_env({"FAL_MCP_MAX_BODY_MB": "0.01"})
    with http_server(["--sandbox", "--transport", "http"], env) as (_, base):
        big = httpx.post(base + "/mcp", content=b"x" * 20000, headers={"Content-Type": "application/json"})
        assert big.status_code == 413


def test_non_loopback_without_token_refuses_to_start():
    import subprocess

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fal_mcp.cli",
            "serve",
            "--transport",
            "http",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=30,
    )
    assert done.returncode == 2
    assert "FAL_MCP_AUTH_TOKEN" in done.stderr and "0.0.0.0" in done.stderr


async def test_health_lists_active_packs():
    with http_server(["--sandbox", "--transport", "http"], server_env({"FAL_MCP_PLUGINS": "image"})) as (
        _,
        base,
    ):
        health = httpx.get(base + "/health").json()
    assert health["status"] == "ok" and [p["name"] for p in health["packs"]] == ["core", "image"]
    assert health["tools"] >= 1


async def test_cancel_over_http_cancels_the_fal_request(thread_sandbox):
    thread_sandbox.state.reset()
    thread_sandbox.state.add_fault(outcome="never_finish")
    env = server_env(dict(thread_sandbox.env()))
    with http_server(["--transport", "http"], env) as (_, base):
        async with mcp_http_client(base + "/mcp") as client:
            running = anyio.Event()

            async def on_progress(progress, total, message):
                if message and message.startswith("Running"):
                    running.set()

            async with anyio.create_task_group() as group:
                group.start_soon(
                    lambda: client.call_tool(
                        "generate_image", {"prompt": "never"}, progress_callback=on_progress
                    )
                )
                with anyio.fail_after(60):  # a hang guard, not a timing assertion
                    await running.wait()
                group.cancel_scope.cancel()
            with anyio.fail_after(60):  # a hang guard, not a timing assertion
                while not thread_sandbox.state.cancels:
                    await anyio.sleep(0.05)
    assert thread_sandbox.state.cancels == [thread_sandbox.state.submissions[-1]["request_id"]]


async def test_two_stateless_replicas_serve_one_client_alternately(thread_sandbox):
    import httpx2

    thread_sandbox.state.reset()
    env = server_env(dict(thread_sandbox.env()))
    with (
        http_server(["--transport", "http", "--stateless"], env) as (first, base_a),
        http_server(["--transport", "http", "--stateless"], env) as (second, base_b),
    ):
        ports = [int(base_a.rsplit(":", 1)[1]), int(base_b.rsplit(":", 1)[1])]
        served: list[int] = []

        class RoundRobin(httpx2.AsyncHTTPTransport):
            """What a load balancer does: each request to the next replica."""

            async def handle_async_request(self, request):
                port = ports[len(served) % 2]
                served.append(port)
                request.url = request.url.copy_with(port=port)
                return await super().handle_async_request(request)

        async with mcp_http_client(base_a + "/mcp", transport=RoundRobin()) as client:
            for index in range(4):
                result = await client.call_tool("generate_image", {"prompt": f"replica {index}"})
                assert not result.is_error, result.content[0].text
    assert set(served) == set(ports) and len(thread_sandbox.state.submissions) == 4


@pytest.mark.parametrize("stateless", [False, True])
async def test_client_disconnect_cancels_the_fal_request(thread_sandbox, stateless):
    thread_sandbox.state.reset()
    thread_sandbox.state.add_fault(outcome="never_finish")
    env = server_env(dict(thread_sandbox.env()))
    with http_server(["--transport", "http"] + (["--stateless"] if stateless else []), env) as (_, base):
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        async with httpx.AsyncClient(timeout=30) as http:
            init = await http.post(
                base + "/mcp",
                headers=headers,
                json=INITIALIZE,
            )
            if not stateless:
                headers.update(
                    {"Mcp-Session-Id": init.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
                )
                await http.post(
                    base + "/mcp",
                    headers=headers,
                    json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                )
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "generate_image", "arguments": {"prompt": "x"}, "_meta": {"progressToken": 1}},
        }
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("POST", base + "/mcp", headers=headers, json=call) as response:
                async for line in response.aiter_lines():
                    if "Running" in line:
                        break  # leave mid-job: the connection closes
        with anyio.fail_after(60):  # a hang guard, not a timing assertion
            while not thread_sandbox.state.cancels:
                await anyio.sleep(0.05)
    assert thread_sandbox.state.cancels == [thread_sandbox.state.submissions[-1]["request_id"]]
