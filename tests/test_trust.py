"""Trust nobody (docs/security.md): client roots, other clients, job ids, budgets, saved outputs,
tried as an attacker would. Each test checks that nothing leaked and that the server still serves."""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading

import anyio
import httpx
import pytest

from .conftest import count_routes, http_server, listed_outputs, server_env, tool_table_for
from .test_media import png_bytes

pytestmark = pytest.mark.anyio
CANARY = "canary-" + secrets.token_hex(16)  # in every test server's environment: must never reach a client
TOKEN = "trust-token-" + secrets.token_hex(16)


def canary_env(extra: dict | None = None) -> dict[str, str]:
    return server_env({"CANARY_VARIABLE": CANARY, **(extra or {})})


def stored_bytes(sandbox) -> list[bytes]:
    return [stored.data for stored in sandbox.state.storage._files.values()]


def assert_no_canary(sandbox, *texts) -> None:
    for text in texts:
        assert CANARY not in text
    assert not any(CANARY.encode() in data for data in stored_bytes(sandbox)), (
        "the canary reached fal storage"
    )


def dump(result) -> str:
    return json.dumps(result.model_dump(mode="json"))


@pytest.fixture
def files(tmp_path):
    """allowed/ (the operator's directory) with sub/, beside a secret outside it."""
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "top.png").write_bytes(png_bytes((10, 10)))
    (allowed / "sub" / "inner.png").write_bytes(png_bytes((12, 12)))
    (tmp_path / "secret.txt").write_text(CANARY)
    return tmp_path


def roots_callback(*paths):
    from mcp import types

    async def list_roots(context):
        return types.ListRootsResult(
            roots=[types.Root(uri=path if isinstance(path, str) else path.as_uri()) for path in paths]
        )

    return list_roots


# -- local files: roots only narrow what the operator allows -------------------------------------


async def check_roots(client, files, sandbox) -> None:
    """With the operator allowing allowed/ and the client declaring the root file:///."""
    seen = []
    for path, expected in [
        ("/proc/self/environ", "system file"),
        ("/proc/self/cmdline", "system file"),
        (str(files / "secret.txt"), "outside the allowed directories"),
        ("/etc/hostname", "outside the allowed directories"),
    ]:
        result = await client.call_tool("upload_file", {"file_path": path})
        seen.append(dump(result))
        assert result.is_error and expected in result.content[0].text, result.content[0].text
    inside = await client.call_tool("upload_file", {"file_path": str(files / "allowed" / "top.png")})
    assert not inside.is_error, inside.content[0].text
    assert_no_canary(sandbox, *seen)


async def test_roots_only_narrow_the_operator_dirs_over_stdio(files, thread_sandbox):
    from mcp import Client, StdioServerParameters

    thread_sandbox.state.reset()
    env = canary_env({**thread_sandbox.env(), "FAL_MCP_ALLOWED_DIRS": str(files / "allowed")})
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "fal_mcp.cli", "serve"], env=env, cwd="/"
    )
    async with Client(params, mode="legacy", list_roots_callback=roots_callback("file:///")) as client:
        await check_roots(client, files, thread_sandbox)
    # a root inside the allowed directory narrows it further
    async with Client(
        params, mode="legacy", list_roots_callback=roots_callback(files / "allowed" / "sub")
    ) as client:
        outside_root = await client.call_tool(
            "upload_file", {"file_path": str(files / "allowed" / "top.png")}
        )
        assert outside_root.is_error and "outside the allowed directories" in outside_root.content[0].text
        inner = await client.call_tool(
            "upload_file", {"file_path": str(files / "allowed" / "sub" / "inner.png")}
        )
        assert not inner.is_error, inner.content[0].text


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_roots_only_narrow_the_operator_dirs_over_http(files, thread_sandbox, transport):
    import httpx2
    from mcp import Client
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client

    thread_sandbox.state.reset()
    env = canary_env({**thread_sandbox.env(), "FAL_MCP_ALLOWED_DIRS": str(files / "allowed")})
    with http_server(["--transport", transport], env) as (_, base):
        if transport == "http":
            connection = streamable_http_client(base + "/mcp", http_client=httpx2.AsyncClient(timeout=60))
        else:
            connection = sse_client(base + "/sse")
        async with Client(
            connection, mode="legacy", list_roots_callback=roots_callback("file:///")
        ) as client:
            await check_roots(client, files, thread_sandbox)
            assert (await client.list_tools()).tools  # still serving


async def test_a_server_started_in_the_root_directory_reads_no_files(thread_sandbox):
    """Claude Desktop starts stdio servers in /: that must not open the whole machine, roots or not."""
    from mcp import Client, StdioServerParameters

    thread_sandbox.state.reset()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "fal_mcp.cli", "serve"],
        env=canary_env(dict(thread_sandbox.env())),
        cwd="/",
    )
    for roots in (None, roots_callback("file:///")):
        async with Client(params, mode="legacy", list_roots_callback=roots) as client:
            for path in ("/etc/hostname", "etc/hostname", "/proc/self/environ", "~/.bashrc"):
                result = await client.call_tool("upload_file", {"file_path": path})
                assert result.is_error, result.content[0].text
                assert "FAL_MCP_ALLOWED_DIRS" in result.content[0].text
            assert not (await client.call_tool("list_models", {"limit": 1})).is_error
    assert count_routes(thread_sandbox, "upload") == 0


async def test_submit_job_reads_local_files_within_the_clients_roots(sandbox, registry, files):
    async def roots():
        return [str(files / "allowed" / "sub")]

    async with tool_table_for(sandbox, registry, FAL_MCP_ALLOWED_DIRS=str(files / "allowed")) as table:
        arguments = {
            "tool": "generate_video_from_image",
            "arguments": {"prompt": "move", "image_url": str(files / "allowed" / "top.png")},
        }
        refused = await table.call("submit_job", arguments, allowed_dirs=roots)
        assert refused.is_error and "outside the allowed directories" in refused.content[0].text
        assert sandbox.state.submissions == []
        arguments["arguments"]["image_url"] = str(files / "allowed" / "sub" / "inner.png")
        submitted = await table.call("submit_job", arguments, allowed_dirs=roots)
        assert not submitted.is_error, submitted.content[0].text
        assert len(sandbox.state.submissions) == 1


async def test_a_symlink_swapped_while_calls_run_never_escapes(sandbox, registry, files):
    """A bounded loop flips allowed/flip.png (and a directory on its path) between real files and links
    to the secret outside, while uploads of that path run: the secret never reaches fal storage."""
    allowed = files / "allowed"
    outside = files / "outside"
    outside.mkdir()
    (outside / "flip.png").write_text(CANARY)
    (allowed / "real").mkdir()
    (allowed / "real" / "flip.png").write_bytes(png_bytes((8, 8)))
    stop = threading.Event()
    flips = []

    def flipper():
        real_dir, target = allowed / "real", allowed / "real" / "flip.png"
        while not stop.is_set() and len(flips) < 100_000:
            # every step is an atomic rename, so the path always exists: a link, a file, a linked directory
            os.symlink(files / "secret.txt", files / "new-link")
            os.replace(files / "new-link", target)
            (files / "new-file").write_bytes(png_bytes((8, 8)))
            os.replace(files / "new-file", target)
            os.rename(real_dir, files / "real-away")
            os.symlink(outside, real_dir)
            os.unlink(real_dir)
            os.rename(files / "real-away", real_dir)
            flips.append(1)

    async with tool_table_for(sandbox, registry, FAL_MCP_ALLOWED_DIRS=str(allowed)) as table:
        thread = threading.Thread(target=flipper, daemon=True)
        thread.start()
        try:
            outcomes = {"ok": 0, "refused": 0}
            for _ in range(150):
                result = await table.call("upload_file", {"file_path": str(allowed / "real" / "flip.png")})
                outcomes["refused" if result.is_error else "ok"] += 1
                assert "Internal error" not in result.content[0].text, result.content[0].text
                assert CANARY not in dump(result)
        finally:
            stop.set()
            thread.join()
        assert flips, "the flipper never ran: the race was not tried"
        assert_no_canary(sandbox)
        assert not (await table.call("list_models", {"limit": 1})).is_error


async def test_proc_fifo_and_device_paths_are_refused(sandbox, registry, files):
    allowed = files / "allowed"
    os.mkfifo(allowed / "pipe.png")  # opening a FIFO for reading blocks until a writer comes: must not hang
    os.symlink("/proc/self/environ", allowed / "environ.png")
    os.symlink("/dev/zero", allowed / "zero.png")
    import socket

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(allowed / "socket.png"))
    cases = {
        "pipe.png": "not a file",
        "environ.png": "system file",
        "zero.png": "system file",
        "socket.png": "cannot be read",
        "/proc/self/environ": "system file",
        "/proc/self/mem": "system file",
        "/sys/kernel/notes": "system file",
        "/dev/stdin": "system file",
        "/dev/fd/1": "system file",
        "/proc/self/root/etc/hostname": "system file",
    }
    try:
        async with tool_table_for(sandbox, registry, FAL_MCP_ALLOWED_DIRS=str(allowed)) as table:
            for path, reason in cases.items():
                with anyio.fail_after(60):  # a hang guard, not a timing assertion
                    result = await table.call("upload_file", {"file_path": path})
                assert result.is_error and reason in result.content[0].text, (path, result.content[0].text)
                assert_no_canary(sandbox, dump(result))
            assert not (await table.call("upload_file", {"file_path": "top.png"})).is_error
    finally:
        listener.close()
    assert count_routes(sandbox, "upload") == 1


def test_the_size_limit_holds_on_bytes_read(tmp_path):
    """A file that claims one size and holds more (procfs files claim 0) is cut at the limit."""
    from fal_mcp.media import MediaError, read_local_file

    (tmp_path / "big.bin").write_bytes(b"x" * 5000)
    with pytest.raises(MediaError, match="more than the limit"):
        read_local_file(str(tmp_path / "big.bin"), [str(tmp_path)], False, 4096)
    assert read_local_file(str(tmp_path / "big.bin"), [str(tmp_path)], False, 5000).data == b"x" * 5000


def test_roots_narrow_and_never_widen():
    from fal_mcp.media import narrow

    assert narrow(["/"], ["/srv/media"]) == ["/srv/media"]
    assert narrow(["/srv/media/a", "/elsewhere"], ["/srv/media"]) == ["/srv/media/a"]
    assert narrow(["/srv/media-evil"], ["/srv/media"]) == []
    assert narrow(None, ["/srv/media"]) == ["/srv/media"]
    assert narrow(["/srv"], []) == []


def test_broad_working_directories_are_not_allowed_implicitly(monkeypatch, tmp_path):
    from fal_mcp.config import ConfigError, Settings
    from fal_mcp.media import operator_dirs

    settings = Settings.from_env({})
    for broad in ("/", os.path.expanduser("~"), "/usr", "/etc", "/proc"):
        if os.path.isdir(broad):
            monkeypatch.chdir(broad)
            assert operator_dirs(settings) == [], broad
    monkeypatch.chdir(tmp_path)
    assert operator_dirs(settings) == [os.path.realpath(tmp_path)]
    with pytest.raises(ConfigError, match="system tree"):
        Settings.from_env({"FAL_MCP_ALLOWED_DIRS": "/proc"})


# -- principals: other clients of one HTTP server are strangers ----------------------------------


def http_client(base: str, token: str | None = None):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else None
    return Client(
        streamable_http_client(base + "/mcp", http_client=httpx2.AsyncClient(headers=headers, timeout=60)),
        mode="legacy",
    )


def sse_client(base: str):
    from mcp import Client
    from mcp.client.sse import sse_client as connect

    return Client(connect(base + "/sse"), mode="legacy")


async def make_job_and_output(client) -> tuple[str, str]:
    made = await client.call_tool("generate_image", {"prompt": "mine alone"})
    assert not made.is_error, made.content[0].text
    job = await client.call_tool(
        "submit_job", {"tool": "generate_music", "arguments": {"prompt": "mine", "duration_seconds": 10}}
    )
    assert not job.is_error, job.content[0].text
    return f"fal-mcp://outputs/{made.structured_content['request_id']}/0", job.structured_content["job_id"]


async def assert_stranger_sees_nothing(stranger, uri: str, job_id: str, sandbox) -> None:
    from mcp.shared.exceptions import MCPError

    assert listed_outputs(await stranger.list_resources()) == []
    with pytest.raises(MCPError):
        await stranger.read_resource(uri)
    listed = await stranger.call_tool("list_jobs", {})
    assert listed.structured_content["jobs"] == []
    cancels_before = len(sandbox.state.cancels)
    for tool in ("check_job", "cancel_job"):
        result = await stranger.call_tool(tool, {"job_id": job_id})
        assert result.is_error and "no such job" in result.content[0].text, result.content[0].text
    assert len(sandbox.state.cancels) == cancels_before, "a stranger cancelled the job"


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_two_clients_of_one_server_are_strangers(thread_sandbox, transport):
    thread_sandbox.state.reset()
    env = canary_env(dict(thread_sandbox.env()))
    connect = http_client if transport == "http" else sse_client
    with http_server(["--transport", transport], env) as (_, base):
        async with connect(base) as owner, connect(base) as stranger:
            uri, job_id = await make_job_and_output(owner)
            assert [str(r.uri) for r in listed_outputs(await owner.list_resources())] == [uri]
            # both the generation and the submitted job are the owner's jobs
            assert len((await owner.call_tool("list_jobs", {})).structured_content["jobs"]) == 2
            await assert_stranger_sees_nothing(stranger, uri, job_id, thread_sandbox)
            mine = await owner.call_tool("check_job", {"job_id": job_id})
            assert not mine.is_error, mine.content[0].text
            assert CANARY not in dump(mine)


async def test_stateless_clients_without_a_token_are_anonymous(thread_sandbox):
    """Without sessions or a token no caller can be recognised again: nothing is listed to anyone, and a
    job is reachable only through its id, which only its submitter was given."""
    thread_sandbox.state.reset()
    with http_server(["--transport", "http", "--stateless"], canary_env(dict(thread_sandbox.env()))) as (
        _,
        base,
    ):
        async with http_client(base) as first, http_client(base) as second:
            uri, job_id = await make_job_and_output(first)
            for client in (first, second):
                assert listed_outputs(await client.list_resources()) == []
                assert (await client.call_tool("list_jobs", {})).structured_content["jobs"] == []
            assert not (await first.call_tool("check_job", {"job_id": job_id})).is_error


async def test_a_tokens_holder_is_one_owner_across_stateless_requests(thread_sandbox):
    thread_sandbox.state.reset()
    env = canary_env({**thread_sandbox.env(), "FAL_MCP_AUTH_TOKEN": TOKEN})
    with http_server(["--transport", "http", "--stateless"], env) as (_, base):
        async with http_client(base, TOKEN) as first:
            uri, job_id = await make_job_and_output(first)
        async with http_client(base, TOKEN) as again:
            assert [str(r.uri) for r in listed_outputs(await again.list_resources())] == [uri]
            listed = (await again.call_tool("list_jobs", {})).structured_content["jobs"]
            assert len(listed) == 2 and listed[0]["job_id"] == job_id  # newest first
        async with httpx.AsyncClient() as http:
            refused = await http.post(
                base + "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"Authorization": "Bearer " + TOKEN[:-1]},
            )
        assert refused.status_code == 401 and CANARY not in refused.text


async def test_stateless_cancel_notification_cancels_the_fal_request(thread_sandbox):
    thread_sandbox.state.reset()
    thread_sandbox.state.add_fault(outcome="never_finish")
    env = canary_env({**thread_sandbox.env(), "FAL_MCP_AUTH_TOKEN": TOKEN})
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {TOKEN}",
        "Mcp-Protocol-Version": "2025-11-25",
    }
    call = {
        "jsonrpc": "2.0",
        "id": 41,
        "method": "tools/call",
        "params": {"name": "generate_image", "arguments": {"prompt": "x"}, "_meta": {"progressToken": 1}},
    }

    def cancelled(request_id):
        return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}

    with http_server(["--transport", "http", "--stateless"], env) as (_, base):
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream("POST", base + "/mcp", headers=headers, json=call) as response:
                async for line in response.aiter_lines():
                    if "Running" in line:
                        # another request id, then a stranger without the token: neither cancels anything
                        assert (
                            await http.post(base + "/mcp", headers=headers, json=cancelled(40))
                        ).status_code == 202
                        stranger = {k: v for k, v in headers.items() if k != "Authorization"}
                        assert (
                            await http.post(base + "/mcp", headers=stranger, json=cancelled(41))
                        ).status_code == 401
                        assert thread_sandbox.state.cancels == []
                        answer = await http.post(base + "/mcp", headers=headers, json=cancelled(41))
                        assert answer.status_code == 202
                        break
            with anyio.fail_after(30):
                while not thread_sandbox.state.cancels:
                    await anyio.sleep(0.05)
            health = (await http.get(base + "/health")).json()
            assert health["status"] == "ok"
    assert thread_sandbox.state.cancels == [thread_sandbox.state.submissions[-1]["request_id"]]


# -- budget: the whole call is estimated ------------------------------------------------------------


async def published_price(table, endpoint_id: str) -> tuple[float, str]:
    answer = await table.gateway.platform("GET", "/models/pricing", params=[("endpoint_id", endpoint_id)])
    return answer["prices"][0]["unit_price"], answer["prices"][0]["unit"]


def units(unit: str, size: dict) -> float:
    """What a call of `size` (count, width and height of each output, seconds) is in fal's `unit`, by hand."""
    if unit == "megapixel":
        return size.get("count", 1) * size["width"] * size["height"] / 1e6
    if unit == "second":
        return size["seconds"]
    return size.get("count", 1)  # image, video, request


IMAGE = "IMAGE"  # replaced by a 300x300 PNG data: URI
BUDGET_CASES = {
    # tool, endpoint, (small arguments, its size), (big arguments, its size): big is 2-4x small
    "images": (
        "generate_image",
        "fal-ai/flux/schnell",
        ({"prompt": "x", "num_images": 1}, {"count": 1, "width": 1024, "height": 576}),
        ({"prompt": "x", "num_images": 4}, {"count": 4, "width": 1024, "height": 576}),
    ),
    "music": (
        "generate_music",
        "CassetteAI/music-generator",
        ({"prompt": "x", "duration_seconds": 30}, {"seconds": 30}),
        ({"prompt": "x", "duration_seconds": 180}, {"seconds": 180}),
    ),
    "video": (
        "generate_video",
        "fal-ai/kling-video/v2.1/master/text-to-video",
        ({"prompt": "x", "model": "kling.t2v", "duration": 5}, {"seconds": 5}),
        ({"prompt": "x", "model": "kling.t2v", "duration": 10}, {"seconds": 10}),
    ),
    "upscale": (
        "upscale_image",
        "fal-ai/clarity-upscaler",
        ({"image_url": IMAGE, "scale": 2}, {"width": 600, "height": 600}),
        ({"image_url": IMAGE, "scale": 4}, {"width": 1200, "height": 1200}),
    ),
    "any model": (
        "run_model",
        "fal-ai/flux/dev",
        (
            {"model": "fal-ai/flux/dev", "input": {"prompt": "x", "image_size": "square_hd"}},
            {"count": 1, "width": 1024, "height": 1024},
        ),
        (
            {
                "model": "fal-ai/flux/dev",
                "input": {"prompt": "x", "image_size": "square_hd", "num_images": 3},
            },
            {"count": 3, "width": 1024, "height": 1024},
        ),
    ),
}


@pytest.mark.parametrize("case", list(BUDGET_CASES))
@pytest.mark.parametrize("as_job", [False, True], ids=["direct", "submit_job"])
async def test_the_budget_guard_estimates_the_whole_call(sandbox, registry, case, as_job):
    import base64

    tool, endpoint, (small, small_size), (big, big_size) = BUDGET_CASES[case]
    image = "data:image/png;base64," + base64.b64encode(png_bytes((300, 300))).decode()
    async with tool_table_for(sandbox, registry) as probe:
        price, unit = await published_price(probe, endpoint)
    small_cost, big_cost = price * units(unit, small_size), price * units(unit, big_size)
    limit = (small_cost + big_cost) / 2  # the small call fits; the big one would pass a per-unit guess
    assert big_cost > 1.3 * limit
    async with tool_table_for(sandbox, registry, FAL_MCP_MAX_COST_PER_CALL=limit) as table:

        def call(arguments):
            arguments = {k: (image if v == IMAGE else v) for k, v in arguments.items()}
            if as_job:
                return table.call("submit_job", {"tool": tool, "arguments": arguments})
            return table.call(tool, arguments)

        refused = await call(big)
        text = refused.content[0].text
        assert refused.is_error and "FAL_MCP_MAX_COST_PER_CALL" in text and f"{big_cost:.4f}" in text, text
        assert sandbox.state.submissions == []
        allowed = await call(small)
        assert not allowed.is_error, allowed.content[0].text
        assert len(sandbox.state.submissions) == 1 and sandbox.state.submissions[0]["endpoint_id"] == endpoint


async def test_an_unknown_size_is_refused_when_a_limit_is_set(sandbox, registry):
    """Priced by the second of an input whose length cannot be told, or by the megapixel of an input that
    is not an image: refused, saying why (fail closed)."""
    from fal_mcp_sandbox import Endpoint

    # A speech-to-text endpoint priced by the second of its input (no installed pack registers one).
    sandbox.state.endpoints["fal-ai/whisper"] = Endpoint(
        "fal-ai/whisper",
        {"type": "object", "properties": {"audio_url": {"type": "string"}}, "required": ["audio_url"]},
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        unit_price=0.00125,
        unit="second",
        kind="audio",
    )
    async with tool_table_for(sandbox, registry, FAL_MCP_MAX_COST_PER_CALL=100) as table:
        speech = await table.call(
            "run_model", {"model": "fal-ai/whisper", "input": {"audio_url": "https://example.com/talk.mp3"}}
        )
        assert speech.is_error and "could not be estimated" in speech.content[0].text
        assert "no length" in speech.content[0].text, speech.content[0].text
        upscale = await table.call(
            "run_model",
            {
                "model": "fal-ai/clarity-upscaler",
                "input": {"image_url": "data:image/png;base64,bm90IGFuIGltYWdl"},
            },
        )
        assert upscale.is_error and "could not be estimated" in upscale.content[0].text, upscale.content[
            0
        ].text
    assert sandbox.state.submissions == []


async def test_units_are_read_from_the_input():
    from fal_mcp.budget import EstimateError, units_for

    assert (await units_for("images", {"num_images": 3}))[0] == 3
    assert (await units_for("megapixels", {"image_size": {"width": 2000, "height": 1000}}))[0] == 2
    assert (await units_for("seconds", {"duration": "10"}))[0] == 10
    assert (await units_for("seconds", {"num_frames": 81, "frames_per_second": 16}))[0] == 81 / 16
    assert (await units_for("minutes", {"seconds_total": 90}))[0] == 1.5
    assert (await units_for("video", {}))[0] == 1
    with pytest.raises(EstimateError, match="cannot count"):
        await units_for("1k tokens", {"prompt": "x"})


# -- outputs saved once, uploads coalesced, state bounded ------------------------------------------


async def test_a_saved_output_is_written_once_however_often_it_is_asked_for(sandbox, registry, tmp_path):
    from fal_mcp.delivery import save

    out = tmp_path / "out"
    async with tool_table_for(sandbox, registry, FAL_MCP_OUTPUT_DIR=str(out)) as table:
        job = await table.call(
            "submit_job", {"tool": "generate_image", "arguments": {"prompt": "x", "num_images": 2}}
        )
        job_id = job.structured_content["job_id"]
        done = []
        with anyio.fail_after(60):
            while len(done) < 3:
                checked = await table.call("check_job", {"job_id": job_id})
                assert not checked.is_error, checked.content[0].text
                if checked.content[0].text.startswith("Job done"):
                    done.append(checked)
                else:
                    await anyio.sleep(0.05)
        assert sorted(p.name for p in out.iterdir()) == sorted({p.name for p in out.iterdir()})
        assert len(list(out.iterdir())) == 2
        assert {f["local_path"] for c in done for f in c.structured_content["files"]} == {
            str(p) for p in out.iterdir()
        }
        # concurrent saves of one output: one file, none deleted, nothing partial left
        url = done[0].structured_content["files"][0]["url"]
        target = tmp_path / "again" / "one.png"
        target.parent.mkdir()
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(lambda: save(url, target, trusted_urls=list(table.settings.urls.values())))
        assert [p.name for p in target.parent.iterdir()] == ["one.png"] and target.stat().st_size > 0


async def test_concurrent_uploads_of_one_file_are_one_upload(sandbox, registry, files):
    async with tool_table_for(sandbox, registry, FAL_MCP_ALLOWED_DIRS=str(files / "allowed")) as table:
        urls = []

        async def upload():
            result = await table.call("upload_file", {"file_path": "top.png"})
            urls.append(result.structured_content["url"])

        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(upload)
    assert len(set(urls)) == 1 and count_routes(sandbox, "upload") == 1


async def test_what_grows_with_use_is_bounded(tool_table, monkeypatch):
    from fal_mcp import gateway as gateway_module
    from fal_mcp.outputs import GenerationOutput, OutputFile
    from fal_mcp.owners import STDIO
    from fal_mcp.server import Outputs

    monkeypatch.setattr(Outputs, "LIMIT", 5)
    outputs = Outputs()
    for index in range(12):
        outputs.record(
            GenerationOutput(
                files=[OutputFile(url=f"https://x/{index}")], endpoint="a/b", request_id=f"r{index}"
            ),
            STDIO,
        )
    assert len(outputs.files) == 5 and outputs.file("fal-mcp://outputs/r11/0", STDIO) is not None
    monkeypatch.setattr(gateway_module, "UPLOADS_KEPT", 3)
    for index in range(6):
        await tool_table.gateway.upload_once(f"content {index}".encode(), "text/plain")
    assert len(tool_table.gateway._uploaded) == 3


# -- secrets ----------------------------------------------------------------------------------------


def test_every_form_of_a_secret_is_scrubbed():
    from urllib.parse import quote

    from fal_mcp.errors import scrub

    key = "0f1e2d3c-aaaa:9b8c7d6e5f4a3b2c/1d0e"
    key_id, key_secret = key.split(":")
    text = f"{key} | {key_id} | {key_secret} | {quote(key, safe='')} | {quote(key_secret, safe='')} | tiny"
    clean = scrub(text, [key])
    for form in (key, key_id, key_secret, quote(key, safe=""), quote(key_secret, safe="")):
        assert form not in clean
    assert clean.endswith("| tiny")


async def test_a_huge_value_is_never_echoed_whole(tool_table):
    huge = "Z" * 200_000
    for tool, arguments in [
        ("check_job", {"job_id": "job_" + huge}),
        ("upload_file", {"file_path": huge[:4000]}),
        ("generate_image", {"prompt": "x", "image_size": huge}),
        ("no_such_tool_" + huge[:100], {}),
    ]:
        result = await tool_table.call(tool, arguments)
        assert result.is_error and len(result.content[0].text) < 2000, (tool, len(result.content[0].text))
