"""Capacity (issue 20): admission before payment (a call that cannot be followed is refused before
anything reaches fal), the open-files budget, `--workers N` sharing one port and one job store (503
with Retry-After beyond the connection cap: test_http_limits.py). The sandbox holds jobs ("hold") until a test releases
them: nothing here depends on how long anything takes."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from fal_mcp.admission import FDS_PER_CALL, RESERVE_FDS, budget, overflow_for

from .conftest import http_server, server_env, tool_table_for

pytestmark = pytest.mark.anyio
TOKEN = "capacity-token-0123456789abcdef"
VIDEO = {"prompt": "a slow pan over mountains", "model": "kling.t2v", "duration": 10}


async def held(state, count: int = 1) -> None:
    with anyio.fail_after(60):  # a hang guard, not a timing assertion
        while len(state.held) < count:
            await anyio.sleep(0.02)


async def test_a_call_beyond_the_cap_is_refused_before_anything_is_submitted(sandbox, registry, monkeypatch):
    monkeypatch.setenv("FAL_MCP_MAX_CALLS_IN_FLIGHT", "1")
    sandbox.state.add_fault(outcome="hold")
    async with tool_table_for(sandbox, registry, FAL_MCP_HANDOFF_AFTER=0.2) as table:
        first = await table.call("generate_video", VIDEO)  # handed off: its job still runs here
        assert not first.is_error, first.content[0].text
        await held(sandbox.state)
        assert len(sandbox.state.submissions) == 1
        refused = await table.call("generate_image", {"prompt": "one too many"})
        assert refused.is_error
        text = refused.content[0].text
        assert "busy" in text and "retry in a moment" in text and "Nothing was submitted" in text, text
        assert len(sandbox.state.submissions) == 1  # the refused call sent nothing to fal
        health_admission = table.runner.admission
        assert (health_admission.in_flight, health_admission.limit, health_admission.refused) == (1, 1, 1)
        sandbox.state.release()
        job = first.structured_content["job"]["job_id"]
        done = await table.call("check_job", {"job_id": job, "wait_seconds": 60})
        assert done.content[0].text.startswith("Job done"), done.content[0].text
        with anyio.fail_after(60):  # the finished call gives its place back
            while health_admission.in_flight:
                await anyio.sleep(0.02)
        again = await table.call("generate_image", {"prompt": "now there is room"})
        assert not again.is_error, again.content[0].text
    assert len(sandbox.state.submissions) == 2 and sandbox.state.cancels == []


async def test_a_refused_call_leaves_no_reference_cycle(sandbox, registry, monkeypatch):
    """A refused call is freed when it ends: kept in a cycle (its error's frames held the call), a burst
    of refusals left a collector pass of a quarter second's work, holding the server and /health."""
    import gc

    from fal_mcp.runner import Call

    monkeypatch.setenv("FAL_MCP_MAX_CALLS_IN_FLIGHT", "1")
    sandbox.state.add_fault(outcome="hold")
    async with tool_table_for(sandbox, registry, FAL_MCP_HANDOFF_AFTER=0.2) as table:
        first = await table.call("generate_video", VIDEO)  # handed off, held: the one place is taken
        await held(sandbox.state)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            refused = [await table.call("generate_image", {"prompt": f"too many {n}"}) for n in range(3)]
            gc.collect()
            left = sorted({type(o).__name__ for o in gc.garbage if isinstance(o, (Call, BaseException))})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert all(r.is_error and "busy" in r.content[0].text for r in refused)
        assert left == []
        sandbox.state.release()
        job = first.structured_content["job"]["job_id"]
        done = await table.call("check_job", {"job_id": job, "wait_seconds": 60})
        assert done.content[0].text.startswith("Job done"), done.content[0].text


def test_the_open_files_budget_leaves_each_call_its_descriptors():
    # a common LimitNOFILE=1024: the connection cap is lowered so the calls in flight keep their share
    split = budget(1024, 1000, None)
    used = RESERVE_FDS + split.max_connections + overflow_for(split.max_connections, 1024)
    assert split.max_connections < 1000 and split.wanted_connections == 1000
    assert used + FDS_PER_CALL * split.max_calls <= 1024 and split.max_calls >= 100
    # plenty of descriptors: the configured caps stand, a lower FAL_MCP_MAX_CALLS_IN_FLIGHT wins
    roomy = budget(65536, 1000, 50)
    assert (roomy.max_connections, roomy.max_calls, roomy.wanted_connections) == (1000, 50, None)
    # asking for more calls than the descriptors can follow: the descriptors win
    tight = budget(1024, 1000, 5000)
    assert tight.max_calls < 5000 and tight.wanted_calls == 5000
    assert budget(2048, None, None).max_calls == (2048 - RESERVE_FDS) // FDS_PER_CALL  # stdio


async def rpc(http: httpx.AsyncClient, base: str, request_id: int, method: str, params: dict):
    """One stateless 2025-11-25 request on a connection of its own; (worker index, result)."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {TOKEN}",
        "MCP-Protocol-Version": "2025-11-25",
        "Connection": "close",
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    response = await http.post(base + "/mcp", headers=headers, json=body)
    assert response.status_code == 200, response.text
    text = response.text
    if not text.startswith("{"):
        text = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")][-1]
    return response.headers["x-fal-mcp-worker"], json.loads(text)["result"]


async def test_two_workers_share_one_port_and_their_jobs(thread_sandbox, tmp_path):
    """A job submitted through one worker is followed to its end, and answered by the other."""
    state = thread_sandbox.state
    state.reset()
    env = server_env(
        {
            **thread_sandbox.env(),
            "FAL_MCP_AUTH_TOKEN": TOKEN,
            "FAL_MCP_STORE": f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        }
    )
    try:
        with http_server(["--transport", "http", "--workers", "2"], env) as (process, base):
            async with httpx.AsyncClient(timeout=60) as http:
                seen = set()
                with anyio.fail_after(60):  # both workers answer /health on the one port
                    while len(seen) < 2:
                        health = (await http.get(base + "/health", headers={"Connection": "close"})).json()
                        assert health["worker"]["of"] == 2 and health["stateless"] is True
                        seen.add(health["worker"]["index"])
                state.add_fault(outcome="hold")
                call = {"name": "submit_job", "arguments": {"tool": "generate_video", "arguments": VIDEO}}
                submitter, started = await rpc(http, base, 1, "tools/call", call)
                assert not started.get("isError"), started
                job = started["structuredContent"]["job_id"]
                await held(state)
                state.release()
                request_id, other = 1, None
                with anyio.fail_after(60):  # until a request lands on the other worker (the kernel picks)
                    while other is None:
                        request_id += 1
                        worker, answer = await rpc(
                            http,
                            base,
                            request_id,
                            "tools/call",
                            {"name": "check_job", "arguments": {"job_id": job, "wait_seconds": 30}},
                        )
                        if worker != submitter:
                            other = answer
                text = other["content"][0]["text"]
                assert not other.get("isError") and text.startswith("Job done"), text
                assert other["structuredContent"]["files"][0]["content_type"] == "video/mp4"
        assert len(state.submissions) == 1 and state.cancels == []
    finally:
        state.reset()
