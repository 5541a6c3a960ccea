"""Jobs that outlive the call: hand-off before the client gives up, heartbeats, cancel before the
hand-off, a server killed mid-job, two servers on one Redis. The sandbox holds jobs ("hold") until a
test releases them, so nothing here depends on how long anything takes."""

from __future__ import annotations

import json
import sys

import anyio
import httpx
import pytest

from .conftest import http_server, server_env, tool_table_for

pytestmark = pytest.mark.anyio
TOKEN = "long-jobs-token-0123456789abcdef"
VIDEO = {"prompt": "a slow pan over mountains", "model": "kling.t2v", "duration": 10}


async def held(state, count: int = 1) -> None:
    """Until `count` jobs are held by the sandbox."""
    with anyio.fail_after(60):  # a hang guard, not a timing assertion
        while len(state.held) < count:
            await anyio.sleep(0.02)


async def test_a_call_past_the_hand_off_returns_its_job_and_the_job_finishes(sandbox, registry, tmp_path):
    out = tmp_path / "out"
    sandbox.state.add_fault(outcome="hold")
    async with tool_table_for(
        sandbox, registry, FAL_MCP_HANDOFF_AFTER=0.2, FAL_MCP_OUTPUT_DIR=str(out)
    ) as table:
        handed = await table.call("generate_video", VIDEO)
        assert not handed.is_error, handed.content[0].text
        job = handed.structured_content["job"]
        assert handed.structured_content["files"] == [] and job["job_id"].startswith("job_")
        assert "check_job" in handed.content[0].text and job["job_id"] in handed.content[0].text
        assert sandbox.state.cancels == [] and list(out.iterdir()) == []
        sandbox.state.release()
        done = await table.call("check_job", {"job_id": job["job_id"], "wait_seconds": 60})
        assert not done.is_error and done.content[0].text.startswith("Job done"), done.content[0].text
        video = done.structured_content["files"][0]
        assert video["content_type"] == "video/mp4" and video["local_path"].startswith(str(out))
        listed = await table.call("list_jobs", {})
        assert [(j["job_id"], j["status"]) for j in listed.structured_content["jobs"]] == [
            (job["job_id"], "done")
        ]
    assert sandbox.state.cancels == [] and len(sandbox.state.submissions) == 1


async def test_hand_off_off_waits_for_the_job(sandbox, registry):
    async with tool_table_for(sandbox, registry, FAL_MCP_HANDOFF_AFTER="off") as table:
        result = await table.call("generate_image", {"prompt": "x"})
    assert (
        not result.is_error
        and result.structured_content["files"]
        and result.structured_content["job"] is None
    )


async def test_heartbeats_keep_coming_while_a_call_waits(sandbox, registry):
    sandbox.state.add_fault(outcome="hold")
    beats: list[tuple[float, str]] = []
    enough = anyio.Event()

    async def on_progress(progress, total, message):
        beats.append((progress, message))
        if sum(1 for _, m in beats if m.endswith(" s)")) >= 4:
            enough.set()

    async with tool_table_for(sandbox, registry, FAL_MCP_HEARTBEAT=0.1, FAL_MCP_HANDOFF_AFTER="off") as table:
        results = []

        async def run_call():
            results.append(await table.call("generate_video", VIDEO, report_progress=on_progress))

        async with anyio.create_task_group() as group:
            group.start_soon(run_call)
            with anyio.fail_after(60):
                await enough.wait()
            sandbox.state.release()
    assert not results[0].is_error, results[0].content[0].text
    heartbeats = [m for _, m in beats if m.endswith(" s)")]
    assert len(heartbeats) >= 4 and all(
        m.startswith(("Running", "In queue", "Starting", "Saving")) for m in heartbeats
    )
    assert [p for p, _ in beats] == sorted(p for p, _ in beats) and len({p for p, _ in beats}) == len(beats)
    assert beats[-1][1] == "Done"


async def test_an_explicit_cancel_before_the_hand_off_cancels_the_fal_request(sandbox, registry):
    sandbox.state.add_fault(outcome="hold")
    async with tool_table_for(sandbox, registry, FAL_MCP_HANDOFF_AFTER="off") as table:
        async with anyio.create_task_group() as group:
            group.start_soon(table.call, "generate_video", VIDEO)
            await held(sandbox.state)
            group.cancel_scope.cancel()
        with anyio.fail_after(30):
            while not sandbox.state.cancels:
                await anyio.sleep(0.02)
        request_id = sandbox.state.submissions[-1]["request_id"]
        assert sandbox.state.cancels == [request_id]
        jobs = (await table.call("list_jobs", {})).structured_content["jobs"]
        assert [j["status"] for j in jobs] == ["cancelled"]


async def test_a_cancel_while_the_job_is_being_recorded_waits_for_the_record(sandbox, registry):
    """The cancel arrives after fal took the job and while the server records it: the record is made
    (the submit and its recording are shielded), then the job is cancelled on fal and marked so. A
    cancelled task used to break through the shield and lose the paid job's record."""
    sandbox.state.add_fault(outcome="hold")
    async with tool_table_for(sandbox, registry, FAL_MCP_HANDOFF_AFTER="off") as table:
        recording, release = anyio.Event(), anyio.Event()
        add = table.store.add

        async def slow_add(record):
            recording.set()
            await release.wait()
            await add(record)

        table.store.add = slow_add
        async with anyio.create_task_group() as group:
            group.start_soon(table.call, "generate_video", VIDEO)
            await recording.wait()
            group.cancel_scope.cancel()
            release.set()
        with anyio.fail_after(30):  # a hang guard: the cancel reaches fal after the record
            while not sandbox.state.cancels:
                await anyio.sleep(0.02)
        jobs = (await table.call("list_jobs", {})).structured_content["jobs"]
        assert [(j["status"], j["request_id"]) for j in jobs] == [("cancelled", sandbox.state.cancels[0])]


async def test_a_client_with_a_shorter_timeout_gets_the_job_and_its_result_over_stdio(
    thread_sandbox, tmp_path
):
    from mcp import Client, StdioServerParameters

    state = thread_sandbox.state
    state.reset()
    state.add_fault(outcome="hold")
    out = tmp_path / "out"
    env = server_env({**thread_sandbox.env(), "FAL_MCP_HANDOFF_AFTER": "1", "FAL_MCP_OUTPUT_DIR": str(out)})
    params = StdioServerParameters(command=sys.executable, args=["-m", "fal_mcp.cli", "serve"], env=env)
    try:
        async with Client(params, mode="legacy") as client:
            # the client gives a call 20 s; the job runs until released, far longer
            handed = await client.call_tool("generate_video", VIDEO, read_timeout_seconds=20)
            assert not handed.is_error, handed.content[0].text
            job_id = handed.structured_content["job"]["job_id"]
            state.release()
            done = await client.call_tool(
                "check_job", {"job_id": job_id, "wait_seconds": 15}, read_timeout_seconds=20
            )
            assert done.content[0].text.startswith("Job done"), done.content[0].text
            assert done.structured_content["files"][0]["local_path"].startswith(str(out))
        assert state.cancels == [] and len(list(out.iterdir())) == 1
    finally:
        state.reset()


# -- tasks ---------------------------------------------------------------------------------------------


class RawHttp:
    """A raw JSON-RPC client over streamable HTTP, for either protocol era."""

    def __init__(
        self, http: httpx.AsyncClient, base: str, modern: bool, tasks: bool = True, token: str | None = TOKEN
    ) -> None:
        self.http, self.base, self.modern, self.tasks, self.token = http, base, modern, tasks, token
        self.session: str | None = None
        self.next_id = 0

    def envelope(self) -> dict:
        extensions = {"io.modelcontextprotocol/tasks": {}} if self.tasks else {}
        return {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"extensions": extensions},
        }

    async def start(self) -> None:
        if self.modern:
            return
        answer = await self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        )
        assert "capabilities" in answer["result"], answer
        await self.post(
            {"jsonrpc": "2.0", "method": "notifications/initialized"}, "notifications/initialized"
        )

    async def post(self, body: dict, method: str, name: str | None = None) -> httpx.Response:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.modern:
            headers.update({"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method})
            if name is not None:
                headers["Mcp-Name"] = name
        elif self.session:
            headers.update({"Mcp-Session-Id": self.session, "MCP-Protocol-Version": "2025-11-25"})
        response = await self.http.post(self.base + "/mcp", headers=headers, json=body)
        if "mcp-session-id" in response.headers:
            self.session = response.headers["mcp-session-id"]
        return response

    async def request(self, method: str, params: dict, name: str | None = None) -> dict:
        self.next_id += 1
        if self.modern:
            params = {**params, "_meta": self.envelope()}
        response = await self.post(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}, method, name
        )
        text = response.text
        if text.startswith("{"):
            return json.loads(text)
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])


@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
async def test_tasks_in_both_eras_create_get_result_list_cancel(thread_sandbox, era):
    state = thread_sandbox.state
    state.reset()
    env = server_env({**thread_sandbox.env(), "FAL_MCP_AUTH_TOKEN": TOKEN})
    modern = era == "2026-07-28"
    try:
        with http_server(["--transport", "http"], env) as (_, base):
            async with httpx.AsyncClient(timeout=60) as http:
                client = RawHttp(http, base, modern)
                await client.start()
                state.add_fault(outcome="hold")
                call = {"name": "generate_video", "arguments": VIDEO}
                if not modern:
                    call["task"] = {"ttl": 60000}
                created = (await client.request("tools/call", call, "generate_video"))["result"]
                task = created if modern else created["task"]
                assert (created.get("resultType") == "task") == modern
                task_id = task["taskId"]
                assert task["status"] == "working" and task_id.startswith("job_")
                await held(state)
                got = (await client.request("tasks/get", {"taskId": task_id}, task_id))["result"]
                assert got["status"] == "working" and got["taskId"] == task_id
                if not modern:
                    listed = (await client.request("tasks/list", {}))["result"]["tasks"]
                    assert [t["taskId"] for t in listed] == [task_id]
                state.release()
                if modern:
                    with anyio.fail_after(60):
                        while got["status"] == "working":
                            await anyio.sleep(0.05)
                            got = (await client.request("tasks/get", {"taskId": task_id}, task_id))["result"]
                    result = got["result"]
                    missing = await client.request("tasks/result", {"taskId": task_id}, task_id)
                    assert missing["error"]["code"] == -32601
                else:
                    answer = (await client.request("tasks/result", {"taskId": task_id}))["result"]  # waits
                    assert answer["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
                    result = answer
                assert result["structuredContent"]["files"][0]["content_type"] == "video/mp4"
                assert not result.get("isError")
                # cancel: a second task, cancelled while running
                state.add_fault(outcome="hold")
                second = (await client.request("tools/call", call, "generate_video"))["result"]
                second_id = second["taskId"] if modern else second["task"]["taskId"]
                await held(state)
                cancelled = await client.request("tasks/cancel", {"taskId": second_id}, second_id)
                assert "error" not in cancelled, cancelled
                after = (await client.request("tasks/get", {"taskId": second_id}, second_id))["result"]
                assert after["status"] == "cancelled"
                with anyio.fail_after(60):  # the cancel reaches fal after the answer: a hang guard only
                    while not state.cancels:
                        await anyio.sleep(0.02)
                assert state.cancels == [state.submissions[-1]["request_id"]]
                unknown = await client.request("tasks/get", {"taskId": "job_unknown"}, "job_unknown")
                assert unknown["error"]["code"] == -32602
    finally:
        state.reset()


async def test_a_2026_client_without_the_extension_gets_plain_results(thread_sandbox):
    thread_sandbox.state.reset()
    env = server_env({**thread_sandbox.env(), "FAL_MCP_AUTH_TOKEN": TOKEN})
    with http_server(["--transport", "http"], env) as (_, base):
        async with httpx.AsyncClient(timeout=60) as http:
            client = RawHttp(http, base, modern=True, tasks=False)
            result = (
                await client.request(
                    "tools/call", {"name": "generate_image", "arguments": {"prompt": "x"}}, "generate_image"
                )
            )["result"]
            assert result["structuredContent"]["files"] and result.get("resultType") != "task"
            refused = await client.request("tasks/get", {"taskId": "job_x"}, "job_x")
            assert refused["error"]["code"] == -32021


async def test_another_clients_task_is_no_task(thread_sandbox):
    state = thread_sandbox.state
    state.reset()
    try:
        with http_server(["--transport", "http"], server_env(dict(thread_sandbox.env()))) as (_, base):
            async with httpx.AsyncClient(timeout=60) as http:
                owner, stranger = (
                    RawHttp(http, base, False, token=None),
                    RawHttp(http, base, False, token=None),
                )
                await owner.start()
                await stranger.start()
                state.add_fault(outcome="hold")
                created = (
                    await owner.request(
                        "tools/call",
                        {"name": "generate_image", "arguments": {"prompt": "x"}, "task": {"ttl": 1000}},
                    )
                )["result"]
                task_id = created["task"]["taskId"]
                await held(state)
                for method in ("tasks/get", "tasks/cancel", "tasks/result"):
                    refused = await stranger.request(method, {"taskId": task_id})
                    assert refused["error"]["code"] == -32602, refused
                assert (await stranger.request("tasks/list", {}))["result"]["tasks"] == []
                assert state.cancels == []
                state.release()
                done = (await owner.request("tasks/result", {"taskId": task_id}))["result"]
                assert done["structuredContent"]["files"]
    finally:
        state.reset()


# -- never lose a paid result ------------------------------------------------------------------------------


def mcp_client(base: str):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    return Client(streamable_http_client(base + "/mcp", http_client=http), mode="legacy")


async def test_a_server_killed_mid_job_loses_nothing(thread_sandbox, tmp_path):
    state = thread_sandbox.state
    state.reset()
    out = tmp_path / "out"
    env = server_env(
        {
            **thread_sandbox.env(),
            "FAL_MCP_AUTH_TOKEN": TOKEN,
            "FAL_MCP_OUTPUT_DIR": str(out),
            "FAL_MCP_STORE": f"sqlite:///{tmp_path}/jobs.sqlite3",
            "FAL_MCP_LEASE_TTL": "1",  # the killed server's lease lapses soon: its job is taken over
        }
    )
    try:
        state.add_fault(outcome="hold")
        with http_server(["--transport", "http"], env) as (process, base):
            async with mcp_client(base) as client:
                submitted = await client.call_tool(
                    "submit_job", {"tool": "generate_video", "arguments": VIDEO}
                )
                job_id = submitted.structured_content["job_id"]
                await held(state)
            process.kill()  # kill -9: no shutdown of any kind
            process.wait()
        state.release()
        with http_server(["--transport", "http"], env) as (_, base):
            async with mcp_client(base) as client:
                done = await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 30})
                assert done.content[0].text.startswith("Job done"), done.content[0].text
                assert done.structured_content["files"][0]["local_path"].startswith(str(out))
                listed = await client.call_tool("list_jobs", {})
                assert [j["status"] for j in listed.structured_content["jobs"]] == ["done"]
        assert state.cancels == [] and len(state.submissions) == 1 and len(list(out.iterdir())) == 1
    finally:
        state.reset()


async def test_a_restarted_server_follows_its_unfinished_jobs_at_once(thread_sandbox, tmp_path):
    """Nobody asks: the job finishes and its result is recorded by the server that started again."""
    state = thread_sandbox.state
    state.reset()
    store = f"sqlite:///{tmp_path}/jobs.sqlite3"
    out = tmp_path / "out"
    env = server_env(
        {
            **thread_sandbox.env(),
            "FAL_MCP_AUTH_TOKEN": TOKEN,
            "FAL_MCP_STORE": store,
            "FAL_MCP_OUTPUT_DIR": str(out),
            "FAL_MCP_LEASE_TTL": "1",  # the killed server's lease lapses soon: its job is taken over
            "FAL_MCP_SWEEP_INTERVAL": "0.2",
        }
    )
    try:
        state.add_fault(outcome="hold")
        with http_server(["--transport", "http"], env) as (process, base):
            async with mcp_client(base) as client:
                await client.call_tool("submit_job", {"tool": "generate_music", "arguments": {"prompt": "x"}})
                await held(state)
            process.kill()
            process.wait()
        with http_server(["--transport", "http"], env):
            state.release()
            with anyio.fail_after(60):
                while not out.exists() or not list(out.iterdir()):
                    await anyio.sleep(0.05)
    finally:
        state.reset()


async def test_two_servers_on_one_redis_share_jobs_and_tasks(thread_sandbox, redis_url):
    state = thread_sandbox.state
    state.reset()
    env = server_env({**thread_sandbox.env(), "FAL_MCP_AUTH_TOKEN": TOKEN, "FAL_MCP_STORE": redis_url})
    try:
        with (
            http_server(["--transport", "http"], env) as (_, first),
            http_server(["--transport", "http"], env) as (_, second),
        ):
            state.add_fault(outcome="hold")
            async with mcp_client(first) as one:
                submitted = await one.call_tool("submit_job", {"tool": "generate_video", "arguments": VIDEO})
                job_id = submitted.structured_content["job_id"]
            await held(state)
            async with httpx.AsyncClient(timeout=60) as http:
                raw = RawHttp(http, second, modern=False)
                await raw.start()
                task = (await raw.request("tasks/get", {"taskId": job_id}))["result"]
                assert task["taskId"] == job_id and task["status"] == "working"
            async with mcp_client(second) as two:
                listed = await two.call_tool("list_jobs", {})
                assert [j["job_id"] for j in listed.structured_content["jobs"]] == [job_id]
                state.release()
                done = await two.call_tool("check_job", {"job_id": job_id, "wait_seconds": 30})
                assert done.content[0].text.startswith("Job done"), done.content[0].text
    finally:
        state.reset()
