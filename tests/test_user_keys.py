"""Whose fal key pays (FAL_MCP_KEY_MODE, fal_keys.py): each user's own key from the X-Fal-Key header,
or per-subject keys from FAL_MCP_KEYS_FILE; never another user's, never the server's, never written down
or echoed; one fal client per key, in a bounded pool.

The sandbox records the digest of the key every request carried (through the CDN token for uploads), and
is told to accept only the users' keys: a request with the server's own key would fail.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote, quote_plus

import anyio
import pytest

from fal_mcp import fal_keys
from fal_mcp.config import ConfigError
from fal_mcp.fal_keys import FalKey
from fal_mcp.gateway import FalGateway
from fal_mcp.owners import Principal
from fal_mcp.server import ToolTable, build_server
from fal_mcp_sandbox import SANDBOX_KEY
from fal_mcp_sandbox.state import key_digest
from fal_mcp_sandbox.testing import run_cli

from .conftest import sandbox_settings

pytestmark = pytest.mark.anyio

FLUX = "fal-ai/flux/schnell"
SDXL = "fal-ai/fast-sdxl"
TOKEN = "user-keys-token-" + secrets.token_hex(8)
# routes that carry a key: the queue, runs, storage tokens and uploads (through their token), the platform
KEYED = {"submit", "status", "result", "cancel", "run", "token", "upload", "multipart", "platform"}


def new_key(name: str) -> str:
    return f"{name}{secrets.token_hex(8)}:{secrets.token_hex(16)}"  # fal's id:secret shape


KEY_A, KEY_B, KEY_C = new_key("alice"), new_key("bob"), new_key("carol")


def forms(key: str) -> list[str]:
    """Every way a key could show: whole, each half, URL-encoded."""
    parts = [key, *key.split(":")]
    return [f for part in parts for f in {part, quote(part, safe=""), quote_plus(part)}]


def assert_absent(text: str, *keys: str, where: str) -> None:
    for key in keys:
        for form in forms(key):
            assert form not in text, f"a fal key ({form[:6]}...) appears in {where}"


def png_uri(color=(200, 40, 40)) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def dump(result) -> str:
    return result.model_dump_json()


def text(result) -> str:
    return result.content[0].text


def keyed_requests(sandbox) -> list[dict]:
    return [r for r in sandbox.state.requests if r["route"] in KEYED]


def submit_keys(sandbox) -> dict[str, str]:
    """request id -> digest of the key that submitted it."""
    return {r["request_id"]: r["key"] for r in sandbox.state.requests if r["route"] == "submit"}


def assert_each_job_followed_with_its_own_key(sandbox) -> None:
    """Every status poll or stream, result and cancel of a fal request carried the key that submitted it."""
    submitted = submit_keys(sandbox)
    for record in sandbox.state.requests:
        if record["route"] in ("status", "result", "cancel") and record["request_id"] in submitted:
            assert record["key"] == submitted[record["request_id"]], record["path"]


def store_bytes(path: Path) -> bytes:
    """The job store's files, as written on disk (the database and its journals)."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


@asynccontextmanager
async def serving(sandbox, registry, tmp_path, *, transports=("http",), token=None, **env):
    """An HTTP server in this process (so its logs reach caplog), on 127.0.0.1, over the sandbox:
    yields (table, base URL). The job store is a SQLite file in tmp_path."""
    from fal_mcp.http import HttpSettings, serve_http

    settings = sandbox_settings(
        sandbox,
        FAL_MCP_STORE=f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        FAL_MCP_MAX_RETRY_AFTER=0.5,
        **env,
    )
    async with FalGateway(settings) as gateway, ToolTable(registry, settings, gateway) as table:
        ports: list[int] = []
        listening = anyio.Event()

        def ready(port: int) -> None:
            ports.append(port)
            listening.set()

        async with anyio.create_task_group() as group:
            group.start_soon(serve_http, table, HttpSettings(port=0, token=token), transports, ready)
            with anyio.fail_after(30):
                await listening.wait()
            try:
                yield table, f"http://127.0.0.1:{ports[0]}"
            finally:
                group.cancel_scope.cancel()


def client(base: str, key: str | None = None, *, token: str | None = None, transport: str = "http"):
    import httpx2
    from mcp import Client

    headers = {}
    if key is not None:
        headers["X-Fal-Key"] = key
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if transport == "sse":
        from mcp.client.sse import sse_client

        return Client(sse_client(base + "/sse", headers=headers), mode="legacy")
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60))
    return Client(streamable_http_client(base + "/mcp", http_client=http), mode="legacy")


# -- header mode ------------------------------------------------------------------------------------------


async def test_two_users_each_pay_with_their_own_key_and_it_is_never_written_down(
    sandbox, registry, tmp_path, caplog
):
    """Two clients, keys A and B, concurrently: generations, an upload of the same picture, a background
    job followed to its end, a platform call. Every sandbox request of A's calls carried A's key, never
    B's or the server's; and neither key shows in a result, a log line (DEBUG), list_jobs or the store."""
    caplog.set_level(logging.DEBUG)
    sandbox.state.accept_keys(KEY_A, KEY_B)  # the server's own key (FAL_KEY, set) would be refused
    picture = png_uri()  # the same content for both: uploaded once per key, not shared
    results: dict[str, list] = {"A": [], "B": []}
    request_ids: dict[str, set[str]] = {"A": set(), "B": set()}

    async def user(name: str, key: str, platform_call: tuple[str, dict], base: str) -> None:
        async with client(base, key) as session:
            calls = [
                ("generate_image", {"prompt": f"{name}'s fox", "image_size": "square"}),
                ("generate_image_from_image", {"image_url": picture, "prompt": f"{name}'s variation"}),
                platform_call,
            ]
            for tool, arguments in calls:
                result = await session.call_tool(tool, arguments)
                assert not result.is_error, text(result)
                results[name].append(result)
                if isinstance(result.structured_content, dict) and "request_id" in result.structured_content:
                    request_ids[name].add(result.structured_content["request_id"])
            job = await session.call_tool(
                "submit_job", {"tool": "generate_image", "arguments": {"prompt": f"{name}'s job"}}
            )
            assert not job.is_error, text(job)
            request_ids[name].add(job.structured_content["request_id"])
            done = await session.call_tool(
                "check_job", {"job_id": job.structured_content["job_id"], "wait_seconds": 30}
            )
            assert not done.is_error and text(done).startswith("Job done"), text(done)
            listed = await session.call_tool("list_jobs", {})
            assert len(listed.structured_content["jobs"]) == 3  # two generations and the job
            results[name] += [job, done, listed]

    async with serving(sandbox, registry, tmp_path, FAL_MCP_KEY_MODE="header") as (table, base):
        async with anyio.create_task_group() as group:
            group.start_soon(user, "A", KEY_A, ("get_usage", {}), base)
            group.start_soon(user, "B", KEY_B, ("get_pricing", {"models": [SDXL]}), base)

    a, b, server = key_digest(KEY_A), key_digest(KEY_B), key_digest(SANDBOX_KEY)
    records = keyed_requests(sandbox)
    assert records and all(r["key"] in (a, b) for r in records), {r["key"] for r in records} - {a, b}
    assert server not in {r["key"] for r in sandbox.state.requests}
    submitted = submit_keys(sandbox)
    assert {submitted[i] for i in request_ids["A"]} == {a}
    assert {submitted[i] for i in request_ids["B"]} == {b}
    assert_each_job_followed_with_its_own_key(sandbox)
    follows = [r for r in records if r["route"] == "status"]
    assert {r["key"] for r in follows} == {a, b}  # both jobs were followed, each with its own key
    # the picture went to fal storage twice, once with each key; each submission used its own copy
    uploads = {r["file_url"]: r["key"] for r in records if r["route"] == "upload" and r.get("file_url")}
    assert sorted(uploads.values()) == sorted([a, b])
    for submission in sandbox.state.submissions:
        image = submission["input"].get("image_url")
        if image is not None:
            assert uploads[image] == submitted[submission["request_id"]]
    assert {r["key"] for r in records if r["route"] == "token"} == {a, b}
    platform = [r for r in records if r["route"] == "platform"]
    assert {r["key"] for r in platform if r["path"].endswith("/usage")} == {a}
    assert {r["key"] for r in platform if r["endpoint_id"] == SDXL} == {b}  # only B asked for its price
    # never written down, never echoed
    for name in ("A", "B"):
        for result in results[name]:
            assert_absent(dump(result), KEY_A, KEY_B, where=f"a result of {name}'s")
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert logged, "nothing was logged: the test would prove nothing"
    assert_absent(logged, KEY_A, KEY_B, where="the logs")
    assert_absent(
        store_bytes(tmp_path / "jobs.sqlite3").decode("latin-1"), KEY_A, KEY_B, where="the job store"
    )


async def test_a_call_without_the_header_is_refused_before_anything_is_sent(sandbox, registry, tmp_path):
    async with serving(sandbox, registry, tmp_path, FAL_MCP_KEY_MODE="header") as (_, base):
        async with client(base) as session:
            for tool, arguments in (
                ("generate_image", {"prompt": "no key"}),
                ("generate_image_from_image", {"image_url": png_uri(), "prompt": "no key"}),  # no upload
                ("get_pricing", {"models": [FLUX]}),
                ("submit_job", {"tool": "generate_image", "arguments": {"prompt": "no key"}}),
            ):
                result = await session.call_tool(tool, arguments)
                assert result.is_error and "X-Fal-Key" in text(result), text(result)
            listed = await session.call_tool("list_jobs", {})  # the store answers without a key
            assert not listed.is_error and listed.structured_content["jobs"] == []
        async with client(base, "not a key") as session:  # malformed: refused, not echoed
            result = await session.call_tool("generate_image", {"prompt": "bad key"})
            assert result.is_error and "X-Fal-Key" in text(result) and "not a key" not in text(result)
    assert sandbox.state.requests == []  # nothing reached fal: no upload, no price, no submit


async def test_a_key_quoted_back_by_fal_is_scrubbed_from_the_error_and_the_logs(
    sandbox, registry, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    sandbox.state.add_fault(route="submit", status=400, message=f"key {KEY_A} or {quote(KEY_A, safe='')}")
    sandbox.state.add_fault(route="platform", status=500, message=f"{KEY_A.split(':')[1]} failed", times=-1)
    async with serving(sandbox, registry, tmp_path, FAL_MCP_KEY_MODE="header") as (_, base):
        async with client(base, KEY_A) as session:
            refused = await session.call_tool("generate_image", {"prompt": "quoted"})
            failed = await session.call_tool("get_pricing", {"models": [FLUX]})
    assert refused.is_error and "fal" in text(refused) and "***" in text(refused), text(refused)
    assert "***" in text(failed), text(failed)  # prices from the packs' hints, and fal's error scrubbed
    assert_absent(dump(refused) + dump(failed), KEY_A, where="the errors")
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    from fal_mcp.errors import scrub_logs

    assert_absent(logged, KEY_A, where="the logs")
    # and the log filter the CLI installs takes a user's key out of any record that quotes it
    handlers = logging.getLogger().handlers
    before = {handler: list(handler.filters) for handler in handlers}
    scrub_logs(())
    try:
        held = FalKey.of(KEY_B)
        logging.getLogger("fal_mcp.test").warning("upstream said: %s", KEY_B)
        assert caplog.records[-1].getMessage() == "upstream said: ***"
        assert repr(held).startswith("FalKey(digest=") and KEY_B not in repr(held)
    finally:  # the filter would hide a leak from the next tests' checks
        for handler in handlers:
            handler.filters[:] = before.get(handler, [])


async def test_the_header_is_read_from_each_request_over_sse_too(sandbox, registry, tmp_path):
    transport = "sse"
    sandbox.state.accept_keys(KEY_A, KEY_B)
    async with serving(sandbox, registry, tmp_path, transports=(transport,), FAL_MCP_KEY_MODE="header") as (
        _,
        base,
    ):
        async with client(base, KEY_B, transport=transport) as session:
            result = await session.call_tool("generate_image", {"prompt": "over sse"})
    assert not result.is_error, text(result)
    assert {r["key"] for r in keyed_requests(sandbox)} == {key_digest(KEY_B)}


async def test_a_job_left_by_a_restart_is_followed_again_only_with_its_owners_key(
    sandbox, registry, tmp_path
):
    """The store keeps the owner, not the key: after a restart, check_job without the key answers from the
    store and asks for it; a key fal refuses does not fail the job; the owner's key follows it to its end."""
    sandbox.state.accept_keys(KEY_A, KEY_B)
    sandbox.state.add_fault(outcome="hold", endpoint=FLUX)
    async with serving(sandbox, registry, tmp_path, token=TOKEN, FAL_MCP_KEY_MODE="header") as (_, base):
        async with client(base, KEY_A, token=TOKEN) as session:
            job = await session.call_tool(
                "submit_job", {"tool": "generate_image", "arguments": {"prompt": "held"}}
            )
            assert not job.is_error, text(job)
    job_id, request_id = job.structured_content["job_id"], job.structured_content["request_id"]
    before = len(sandbox.state.requests)
    async with serving(sandbox, registry, tmp_path, token=TOKEN, FAL_MCP_KEY_MODE="header") as (_, base):
        async with client(base, token=TOKEN) as session:  # no key
            seen = await session.call_tool("check_job", {"job_id": job_id, "wait_seconds": 1})
            assert not seen.is_error and "X-Fal-Key" in text(seen), text(seen)
            assert seen.structured_content["status"] in ("queued", "running")
            refused = await session.call_tool("cancel_job", {"job_id": job_id})
            assert refused.is_error and "X-Fal-Key" in text(refused), text(refused)
        assert len(sandbox.state.requests) == before  # nothing was asked of fal without the key
        async with client(base, KEY_C, token=TOKEN) as session:  # a key fal refuses (401)
            wrong = await session.call_tool("check_job", {"job_id": job_id, "wait_seconds": 5})
            assert "following it failed" in text(wrong) and "401" in text(wrong), text(wrong)
            assert_absent(dump(wrong), KEY_C, where="the answer")
        sandbox.state.release()
        async with client(base, KEY_A, token=TOKEN) as session:
            done = await session.call_tool("check_job", {"job_id": job_id, "wait_seconds": 30})
            assert text(done).startswith("Job done"), text(done)
    followed = [r for r in sandbox.state.requests if r["request_id"] == request_id and r["route"] != "submit"]
    assert followed and {r["key"] for r in followed if r["status"] == 200} == {key_digest(KEY_A)}
    assert_absent(
        store_bytes(tmp_path / "jobs.sqlite3").decode("latin-1"), KEY_A, KEY_C, where="the job store"
    )


async def test_tasks_are_paid_and_followed_again_only_with_the_callers_key(sandbox, registry, tmp_path):
    """MCP tasks (2025-11-25 era): a task runs with the key of the call that started it; after a restart,
    tasks/get answers from the store without a key, tasks/result and tasks/cancel say the key is needed,
    and the owner's key follows it to its end."""
    import httpx

    from .test_long_jobs import RawHttp

    sandbox.state.accept_keys(KEY_A, KEY_B)
    sandbox.state.add_fault(outcome="hold", endpoint=FLUX)
    call = {"name": "generate_image", "arguments": {"prompt": "a task"}, "task": {"ttl": 60000}}
    async with serving(sandbox, registry, tmp_path, token=TOKEN, FAL_MCP_KEY_MODE="header") as (_, base):
        async with httpx.AsyncClient(timeout=60, headers={"X-Fal-Key": KEY_A}) as http:
            session = RawHttp(http, base, modern=False, token=TOKEN)
            await session.start()
            task_id = (await session.request("tools/call", call))["result"]["task"]["taskId"]
            with anyio.fail_after(10):
                while not sandbox.state.held:
                    await anyio.sleep(0.01)
    request_id = sandbox.state.submissions[-1]["request_id"]
    async with serving(sandbox, registry, tmp_path, token=TOKEN, FAL_MCP_KEY_MODE="header") as (_, base):
        async with httpx.AsyncClient(timeout=60) as http:  # no key
            session = RawHttp(http, base, modern=False, token=TOKEN)
            await session.start()
            got = (await session.request("tasks/get", {"taskId": task_id}))["result"]
            assert got["status"] == "working"
            for method in ("tasks/result", "tasks/cancel"):
                refused = await session.request(method, {"taskId": task_id})
                assert refused["error"]["code"] == -32602 and "X-Fal-Key" in refused["error"]["message"], (
                    refused
                )
        sandbox.state.release()
        async with httpx.AsyncClient(timeout=60, headers={"X-Fal-Key": KEY_A}) as http:
            session = RawHttp(http, base, modern=False, token=TOKEN)
            await session.start()
            answer = (await session.request("tasks/result", {"taskId": task_id}))["result"]
            assert answer["structuredContent"]["files"] and not answer.get("isError"), answer
    assert sandbox.state.cancels == []
    followed = [r for r in sandbox.state.requests if r["request_id"] == request_id]
    assert {r["key"] for r in followed} == {key_digest(KEY_A)}
    assert {r["key"] for r in keyed_requests(sandbox)} == {key_digest(KEY_A)}


def test_header_mode_refuses_to_start_over_stdio():
    for transport in ("stdio", "dual"):
        done = run_cli(
            "serve", "--sandbox", env={"FAL_MCP_KEY_MODE": "header", "FAL_MCP_TRANSPORT": transport}
        )
        assert done.returncode == 2, done.stderr
        assert "X-Fal-Key" in done.stderr and "--transport http" in done.stderr, done.stderr


# -- file mode --------------------------------------------------------------------------------------------


def keys_file(path: Path, mapping: dict[str, str], mode: int = 0o600) -> Path:
    path.write_text(json.dumps(mapping))
    path.chmod(mode)
    return path


@asynccontextmanager
async def file_mode(sandbox, registry, path: Path):
    settings = sandbox_settings(
        sandbox, FAL_MCP_KEY_MODE="file", FAL_MCP_KEYS_FILE=str(path), FAL_MCP_MAX_RETRY_AFTER=0.5
    )
    async with FalGateway(settings) as gateway, ToolTable(registry, settings, gateway) as table:
        yield table


async def call_as(table, principal: Principal, tool: str, arguments: dict):
    """A call through the MCP server's own handler, by `principal` (as an OAuth sign-in would name it)."""
    from mcp import Client

    async with Client(build_server(table, principal_of=lambda ctx: principal)) as session:
        return await session.call_tool(tool, arguments)


ALICE = Principal("oauth:alice", subject="alice")
BOB = Principal("oauth:bob", subject="bob")
CAROL = Principal("oauth:carol", subject="carol")


async def test_file_mode_maps_subjects_to_keys_and_refuses_the_unknown(sandbox, registry, tmp_path):
    sandbox.state.accept_keys(KEY_A, KEY_B, KEY_C)
    path = keys_file(tmp_path / "keys.json", {"alice": KEY_A, "bob": KEY_B})
    async with file_mode(sandbox, registry, path) as table:
        mine = await call_as(table, ALICE, "generate_image", {"prompt": "alice"})
        theirs = await call_as(
            table, BOB, "generate_image_from_image", {"image_url": png_uri(), "prompt": "bob"}
        )
        assert not mine.is_error and not theirs.is_error, (text(mine), text(theirs))
        before = len(sandbox.state.requests)
        refused = await call_as(table, CAROL, "generate_image", {"prompt": "carol"})
        assert refused.is_error and "FAL_MCP_KEYS_FILE" in text(refused), text(refused)
        nobody = await call_as(table, Principal("stdio"), "generate_image", {"prompt": "no subject"})
        assert nobody.is_error and "FAL_MCP_KEYS_FILE" in text(nobody)
        assert len(sandbox.state.requests) == before  # refused before anything was sent
        submitted = submit_keys(sandbox)
        assert submitted[mine.structured_content["request_id"]] == key_digest(KEY_A)
        assert submitted[theirs.structured_content["request_id"]] == key_digest(KEY_B)
        assert_each_job_followed_with_its_own_key(sandbox)
        assert {r["key"] for r in keyed_requests(sandbox)} == {key_digest(KEY_A), key_digest(KEY_B)}

        # rotation without a restart: the file is read again when it changes
        keys_file(path, {"alice": KEY_C, "*": KEY_B})
        os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
        rotated = await call_as(table, ALICE, "generate_image", {"prompt": "alice again"})
        anyone = await call_as(table, CAROL, "generate_image", {"prompt": "carol, by the * entry"})
        submitted = submit_keys(sandbox)
        assert submitted[rotated.structured_content["request_id"]] == key_digest(KEY_C)
        assert submitted[anyone.structured_content["request_id"]] == key_digest(KEY_B)

        # a change that cannot be used (half written, or opened to others) keeps the keys read last
        path.write_text('{"alice": ')
        os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 2 * 10**9))
        kept = await call_as(table, ALICE, "generate_image", {"prompt": "alice, file half written"})
        assert submit_keys(sandbox)[kept.structured_content["request_id"]] == key_digest(KEY_C)
        keys_file(path, {"alice": KEY_A}, mode=0o644)
        kept = await call_as(table, ALICE, "generate_image", {"prompt": "alice, file opened to others"})
        assert submit_keys(sandbox)[kept.structured_content["request_id"]] == key_digest(KEY_C)
        for result in (mine, theirs, refused, rotated, anyone, kept):
            assert_absent(dump(result), KEY_A, KEY_B, KEY_C, where="a result")


@pytest.mark.parametrize(
    ("content", "mode", "expected"),
    [
        ({"alice": KEY_A}, 0o644, "chmod 600"),
        ({"alice": KEY_A}, 0o640, "chmod 600"),
        ({"alice": 42}, 0o600, "'alice' is not a fal key"),
        (["alice"], 0o600, "JSON object"),
    ],
)
async def test_a_keys_file_others_can_read_or_that_is_wrong_stops_the_start(
    sandbox, registry, tmp_path, content, mode, expected
):
    path = keys_file(tmp_path / "keys.json", content, mode)
    with pytest.raises(ConfigError, match=expected) as refused:
        async with file_mode(sandbox, registry, path):
            pass
    assert_absent(str(refused.value), KEY_A, where="the message")


def test_the_server_refuses_to_start_with_a_keys_file_others_can_read(tmp_path):
    path = keys_file(tmp_path / "keys.json", {"alice": KEY_A}, 0o604)
    env = {"FAL_MCP_KEY_MODE": "file", "FAL_MCP_KEYS_FILE": str(path), "FAL_MCP_TRANSPORT": "http"}
    done = run_cli("serve", "--sandbox", env=env)
    assert done.returncode == 2 and "chmod 600" in done.stderr, done.stderr
    assert_absent(done.stderr + done.stdout, KEY_A, where="the output")
    missing = run_cli("serve", "--sandbox", env={**env, "FAL_MCP_KEYS_FILE": str(tmp_path / "none.json")})
    assert missing.returncode == 2 and "cannot be read" in missing.stderr, missing.stderr


# -- the pool of clients ----------------------------------------------------------------------------------


async def http_of(client):
    """The httpx client a fal client made (None: it made none; uploads use fal_client's CDN client)."""
    made = client.__dict__.get("_pooled")
    return None if made is None else await made


async def test_the_pool_keeps_a_bounded_number_of_clients_and_closes_only_idle_ones(sandbox, monkeypatch):
    monkeypatch.setattr(fal_keys, "CLIENTS_KEPT", 3)
    keys = [FalKey.of(new_key(f"user{i}")) for i in range(6)]
    settings = sandbox_settings(sandbox, FAL_MCP_KEY_MODE="header")
    sandbox.state.add_fault(outcome="hold", endpoint=FLUX)
    async with FalGateway(settings) as gateway:
        pool = gateway.pool
        async with anyio.create_task_group() as group:
            # keys[0]'s client is in use for as long as its job runs
            group.start_soon(lambda: gateway.run(FLUX, {"prompt": "long"}, timeout=30, key=keys[0]))
            with anyio.fail_after(10):
                while not sandbox.state.held:
                    await anyio.sleep(0.01)
            busy = pool._clients[keys[0].digest].client
            made = {}
            for key in keys[1:5]:
                await gateway.upload(b"x" + key.digest.encode(), "text/plain", key=key)
                made[key.digest] = pool._clients[key.digest].client
            # the bound holds; the least recently used idle clients were closed, never the busy one
            assert len(pool) == 3 and pool.digests() == [keys[0].digest, keys[3].digest, keys[4].digest]
            assert pool.closed == 2
            for key in keys[1:3]:
                http = await http_of(made[key.digest])
                assert http is None or http.is_closed
            assert not (await http_of(busy)).is_closed
            sandbox.state.release()
        assert not (await http_of(busy)).is_closed  # idle now, and within the bound: kept
        await gateway.upload(b"y", "text/plain", key=keys[5])  # room is made: keys[0]'s is the oldest idle
        assert pool.digests() == [keys[3].digest, keys[4].digest, keys[5].digest]
        assert (await http_of(busy)).is_closed
    assert_each_job_followed_with_its_own_key(sandbox)
    status = [r for r in sandbox.state.requests if r["route"] in ("status", "result")]
    assert status and {r["key"] for r in status} == {key_digest(keys[0].value)}
    assert [r["key"] for r in sandbox.state.requests if r["route"] == "token"] == [
        key_digest(key.value) for key in keys[1:]
    ]


async def test_a_gateway_for_users_keys_never_falls_back_to_the_servers(sandbox):
    from fal_mcp.fal_keys import KeyRefused

    async with FalGateway(sandbox_settings(sandbox, FAL_MCP_KEY_MODE="header")) as gateway:
        with pytest.raises(KeyRefused, match="X-Fal-Key"):
            await gateway.run(FLUX, {"prompt": "x"}, timeout=10)
        with pytest.raises(KeyRefused):
            await gateway.upload(b"x", "text/plain")
        with pytest.raises(KeyRefused):
            await gateway.platform("GET", "/models")
    assert sandbox.state.requests == []


def test_a_user_key_is_scrubbed_while_it_is_held_and_shown_by_digest_only():
    import gc

    from fal_mcp.errors import scrub

    value = new_key("dave")
    key = FalKey.of(value)
    assert FalKey.of(value) is key  # one object per key alive
    message = f"fal said {value}, {value.split(':')[0]}, {quote(value, safe='')}"
    assert scrub(message, ()) == "fal said ***, ***, ***"
    assert value not in repr(key) and value not in repr([key]) and key.digest[:12] in repr(key)
    del key
    gc.collect()
    assert all(value not in form for form in fal_keys.live_forms())  # forgotten with the last holder
