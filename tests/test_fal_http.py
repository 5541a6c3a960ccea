"""The HTTP client to fal (falclient.http_client): one kept connection per call, no cookie jar, fal's
backup domains."""

from __future__ import annotations

import anyio
import httpx
import pytest

from fal_mcp import falclient
from fal_mcp.media import fetch

pytestmark = pytest.mark.anyio

FLUX = "fal-ai/flux/schnell"
PROMPT = {"prompt": "a cat", "image_size": "square"}


def pool_of(http: httpx.AsyncClient):
    transport = http._transport
    return getattr(transport, "_transport", transport)._pool  # under the backup-domain layer, if any


async def call(gateway, n: int) -> None:
    result = await gateway.run(FLUX, {**PROMPT, "prompt": f"cat {n}"}, timeout=30)
    url = result.data["images"][0]["url"]
    await fetch(url, trusted_urls=list(gateway.settings.urls.values()), http=gateway.downloads())


async def test_calls_one_after_another_keep_one_connection(sandbox, gateway):
    for n in range(4):
        await call(gateway, n)
    # submit, the status stream (read to its end), the result: one connection, kept; the download another
    fal = pool_of(await gateway.client._client)
    assert len(fal.connections) == 1 and fal.connections[0].is_idle()
    assert len(pool_of(gateway.downloads()).connections) == 1
    statuses = [r for r in sandbox.state.requests if r["route"] == "status"]
    assert len(statuses) == 4 and all(r["path"].endswith("/status/stream") for r in statuses)


async def test_concurrent_calls_use_a_connection_each_and_keep_a_bounded_number(sandbox, gateway):
    async with anyio.create_task_group() as group:
        for n in range(8):
            group.start_soon(call, gateway, n)
    fal = pool_of(await gateway.client._client)
    assert 1 <= len(fal.connections) <= 8
    for n in range(3):  # reused, not made again
        await call(gateway, 10 + n)
    assert len(fal.connections) <= 8
    # at most keep_alive idle connections are kept per host
    small = falclient.http_client(keep_alive=2, timeout=30)
    try:
        url = gateway.settings.urls["queue"].rsplit("/", 1)[0] + "/"
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(small.get, url)
        assert len(pool_of(small).connections) <= 2
    finally:
        await small.aclose()
    assert not pool_of(small).connections
    await gateway.aclose()
    assert not fal.connections


async def test_no_cookie_is_kept_or_sent():
    sent = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=abc; Path=/"}, json={})

    http = falclient.http_client()
    http._transport = httpx.MockTransport(answer)
    await http.get("http://fal.example/a")
    await http.get("http://fal.example/b")
    assert sent == [None, None] and len(http.cookies) == 0
    await http.aclose()


async def test_fal_domains_fall_back_to_their_backup_domain():
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.extensions["timeout"]["connect"], request.headers["host"]))
        if request.url.host in ("queue.fal.run", "elsewhere.example"):
            raise httpx.ConnectError("unreachable", request=request)
        return httpx.Response(200, json={"ok": True})

    http = httpx.AsyncClient(transport=falclient._BackupDomains(httpx.MockTransport(answer)), timeout=60)
    response = await http.get("https://queue.fal.run/fal-ai/flux/requests/1/status")
    assert response.json() == {"ok": True}
    # fal_client's policy: connect timeout capped on fal's domains, the request redone on the backup one
    assert seen == [("queue.fal.run", 5.0, "queue.fal.run"), ("queue.falrun.com", 5.0, "queue.falrun.com")]
    seen.clear()
    with pytest.raises(httpx.ConnectError):  # any other host: no fallback, its own timeout
        await http.get("https://elsewhere.example/x")
    assert seen == [("elsewhere.example", 60, "elsewhere.example")]
    await http.aclose()


async def test_responses_are_freed_without_the_cycle_collector():
    """httpx binds a response's body to the response (a reference cycle); ours let go of it once closed,
    so a response is freed when its last reference goes, not by a collector pass that holds the server."""
    import gc
    import weakref

    http = falclient.http_client()
    http._transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"ok": True}))
    enabled = gc.isenabled()
    gc.disable()
    try:
        read = await http.get("http://fal.example/a")
        assert read.json() == {"ok": True}
        read_ref = weakref.ref(read)
        del read
        async with http.stream("GET", "http://fal.example/b") as streamed:
            assert b"".join([part async for part in streamed.aiter_bytes()]) == b'{"ok":true}'
            streamed_ref = weakref.ref(streamed)
        del streamed
        assert read_ref() is None and streamed_ref() is None
    finally:
        if enabled:
            gc.enable()
        await http.aclose()


async def test_a_call_leaves_no_response_or_output_in_reference_cycles(sandbox, gateway):
    import gc

    from fal_mcp.outputs import OutputFile, find_files

    await call(gateway, 0)  # warm: pools and clients made
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for n in range(3):
            await call(gateway, 1 + n)
        assert find_files({"images": [{"url": "https://x/1.png"}, {"a": [{"url": "https://x/2.png"}]}]})
        gc.collect()
        left = [
            type(o).__name__ for o in gc.garbage if isinstance(o, (httpx.Response, httpx.Request, OutputFile))
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
