"""HTTP transports under slow and abusive clients: header and body deadlines, the connection cap,
websocket upgrades refused, and the settings that bound them. Servers are `fal-mcp serve`
subprocesses on free loopback ports; nothing here waits on a wall-clock window, only on events
(a socket reaching EOF, a response), with generous guards against hanging."""

from __future__ import annotations

import json
import selectors
import socket
import time
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from fal_mcp.config import ConfigError
from fal_mcp.http import Guard, HttpSettings
from fal_mcp_sandbox.testing import run_cli

from .conftest import INITIALIZE, MCP_HEADERS, http_server, server_env

TOKEN = "test-token-0123456789abcdef"
HALF_OPEN = 1100


@contextmanager
def serving(**env: str):
    """`fal-mcp serve --sandbox --transport http` with these FAL_MCP_* settings; yields (process, base, addr)."""
    with http_server(["--sandbox", "--transport", "http"], server_env(env)) as (process, base):
        host, port = base.removeprefix("http://").rsplit(":", 1)
        yield process, base, (host, int(port))


def assert_serves(base: str) -> None:
    assert httpx.get(base + "/health", timeout=30).status_code == 200


def loop_health(base: str) -> httpx.Response:
    """GET /health as the event loop's HTTP server reads it (with an Origin: a plain GET /health on a new
    connection is answered by a thread of its own, outside the connection cap)."""
    return httpx.get(base + "/health", headers={"Origin": "http://127.0.0.1:1"}, timeout=30)


def open_files_at_least(count: int) -> None:
    """Let this process hold `count` files, or skip if its hard limit does not allow it."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"needs {count} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


@contextmanager
def soft_open_files(limit: int):
    """This process's soft open files limit lowered to `limit` meanwhile (children inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def read_to_eof(sock: socket.socket, guard: float = 60) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    sock.settimeout(guard)  # a guard against hanging, not a measured window
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def wait_all_closed(socks: list[socket.socket], guard: float = 120) -> None:
    """Until the server has closed every one of `socks` (EOF or reset)."""
    with selectors.DefaultSelector() as selector:  # epoll: no FD_SETSIZE limit
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        open_ = len(socks)
        deadline = time.monotonic() + guard
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                try:
                    if key.fileobj.recv(65536):
                        continue  # bytes before the close
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    pass
                selector.unregister(key.fileobj)
                open_ -= 1
    assert open_ == 0, f"{open_} of {len(socks)} connections still open"


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False


def rpc_result(response: httpx.Response) -> dict:
    """The JSON-RPC message of a streamable HTTP answer, JSON or a one-event SSE stream."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads(data[-1])


def server_open_files(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/limits") as limits:
            line = next(line for line in limits if line.startswith("Max open files"))
    except OSError:
        return None
    return int(line.split()[3])


def test_half_open_connections_do_not_starve_health_or_mcp():
    """1,100 connections that never finish their headers: /health and authenticated MCP calls are
    still answered, and the server closes every half-open connection (header deadline, and the
    connection cap closing the longest-waiting ones)."""
    resource = pytest.importorskip("resource")
    open_files_at_least(HALF_OPEN + 300)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    header_timeout = 5
    held: list[socket.socket] = []
    with ExitStack() as stack:
        stack.callback(lambda: [sock.close() for sock in held])
        with soft_open_files(1024):  # the server starts with this common default: it must raise its own
            process, base, addr = stack.enter_context(
                serving(FAL_MCP_AUTH_TOKEN=TOKEN, FAL_MCP_HEADER_TIMEOUT=str(header_timeout))
            )
        files = server_open_files(process.pid)
        if files is not None and (hard == resource.RLIM_INFINITY or hard > 1024):
            assert files > 1024, "the server kept a 1024 open files limit"
        started = time.monotonic()
        for index in range(HALF_OPEN):
            sock = socket.create_connection(addr, timeout=30)
            held.append(sock)
            sock.sendall(
                b"GET /health HTTP/1.1\r\nHost: %s:%d\r\nX-Slow-%d: " % (addr[0].encode(), addr[1], index)
            )
        # At the cap, a new connection closes the longest-waiting one once that has waited a moment (a
        # tenth of the header deadline here); until then it is answered 503 with Retry-After.
        for _ in range(600):
            health = httpx.get(base + "/health", timeout=30)
            if health.status_code != 503:
                break
            assert health.headers["retry-after"] == "1"
            time.sleep(0.05)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        auth = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(timeout=30) as http:
            assert http.post(base + "/mcp", json=INITIALIZE, headers=MCP_HEADERS).status_code == 401
            init = http.post(base + "/mcp", json=INITIALIZE, headers=auth)
            assert init.status_code == 200 and "serverInfo" in rpc_result(init)["result"]
            session = {
                **auth,
                "Mcp-Session-Id": init.headers["mcp-session-id"],
                "Mcp-Protocol-Version": "2025-11-25",
            }
            http.post(
                base + "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
            )
            tools = http.post(
                base + "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session
            )
            assert tools.status_code == 200 and rpc_result(tools)["result"]["tools"]
        held_open = sum(still_open(sock) for sock in held)
        if time.monotonic() - started < header_timeout - 0.5:  # no header deadline can have passed yet, so:
            # all were held while we were served, but the oldest 100 closed by the cap (1000), and
            # one more for each of our own connections
            assert held_open >= 1000 - 5, held_open
        wait_all_closed(held)  # every half-open connection is closed by the server
        assert_serves(base)


def test_slow_body_is_answered_408_and_server_still_serves():
    with serving(FAL_MCP_BODY_TIMEOUT="0.5") as (_, base, addr):
        with socket.create_connection(addr, timeout=30) as sock:
            sock.sendall(
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: application/json, text/event-stream"
                b'\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":' % addr[1]
            )
            reply = read_to_eof(sock)
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        # an app that answers before reading the body: the unread body is bounded too
        with socket.create_connection(addr, timeout=30) as sock:
            sock.sendall(
                b"POST /health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 1000\r\n\r\n0123456789"
                % addr[1]
            )
            reply = read_to_eof(sock)
        # 405 (or 408, were the server too slow to answer first), then closed: read_to_eof returned
        assert reply.startswith((b"HTTP/1.1 405 ", b"HTTP/1.1 408 ")), reply
        assert_serves(base)


def test_idle_connection_at_the_cap_makes_room_for_a_new_one():
    with serving(FAL_MCP_MAX_CONNECTIONS="3", FAL_MCP_HEADER_TIMEOUT="600") as (_, base, addr):
        idle = [socket.create_connection(addr, timeout=30) for _ in range(3)]
        try:
            # idle for more than a second (younger ones may be a burst of real clients: those make a new
            # connection wait with a 503, test_capacity.py)
            time.sleep(1.1)
            # a fourth connection: the longest-waiting idle one is closed for it
            assert loop_health(base).status_code == 200
            wait_all_closed(idle[:1])
            assert still_open(idle[1]) and still_open(idle[2])
            assert_serves(base)
        finally:
            for sock in idle:
                sock.close()


def test_when_every_connection_is_busy_a_new_request_gets_503():
    with serving(FAL_MCP_MAX_CONNECTIONS="2", FAL_MCP_BODY_TIMEOUT="600") as (_, base, addr):
        busy = []
        try:
            for _ in range(2):
                sock = socket.create_connection(addr, timeout=30)
                busy.append(sock)
                sock.sendall(
                    b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: application/json, "
                    b"text/event-stream\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
                    b"Expect: 100-continue\r\n\r\n" % addr[1]
                )
                seen = b""
                while b"\r\n\r\n" not in seen:  # the app is reading the body: a request in progress
                    chunk = sock.recv(1024)
                    assert chunk, f"closed after {seen!r}"
                    seen += chunk
                assert seen.startswith(b"HTTP/1.1 100 "), seen
            refused = loop_health(base)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
            assert "retry in a moment" in refused.text
            assert_serves(base)  # a plain /health still is answered, by its own thread
        finally:
            for sock in busy:
                sock.close()
        deadline = time.monotonic() + 30  # the server notices the closes: then it serves again
        while loop_health(base).status_code != 200:
            assert time.monotonic() < deadline, "still refusing after the busy connections closed"
            time.sleep(0.05)


def websocket_status(addr, path: str, host: str, token: str | None) -> tuple[int, bytes]:
    auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
    with socket.create_connection(addr, timeout=30) as sock:
        sock.sendall(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
            % (path.encode(), host.encode(), auth)
        )
        reply = read_to_eof(sock)
    return int(reply.split(b" ", 2)[1]), reply


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_both_parsers_keep_the_deadlines_and_answer_pipelined_requests(parser):
    """bounded_protocol over either parser (httptools where installed, h11 elsewhere), served in
    process: requests sent in one write are answered in order, a body that stops coming is answered
    408, headers that stop coming get the connection closed."""
    import threading

    import uvicorn

    from fal_mcp.http import bounded_protocol

    async def echo(scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    settings = HttpSettings(header_timeout=0.5, body_timeout=0.5)
    listener = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(echo, http=bounded_protocol(settings, parser), lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    address = listener.getsockname()

    def exchange(data: bytes) -> bytes:
        """Send `data`, then read until the server closes the connection."""
        with socket.create_connection(address, timeout=30) as conn:
            conn.sendall(data)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
        return received

    try:
        deadline = time.monotonic() + 30  # a hang guard, not a timing assertion
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n%s"
        answered = exchange(
            post % b"first" + post % b"secnd" + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answered.count(b"HTTP/1.1 200") == 3, answered
        assert answered.index(b"first") < answered.index(b"secnd")
        slow_body = exchange(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
        assert slow_body.startswith(b"HTTP/1.1 408"), slow_body
        assert b"Request body not received" in slow_body
        assert exchange(b"GET / HTTP/1.1\r\nHost: x\r\n") == b""  # headers never ended: closed
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


def test_websocket_upgrades_are_refused():
    with serving(FAL_MCP_AUTH_TOKEN=TOKEN) as (_, base, addr):
        local = f"127.0.0.1:{addr[1]}"
        for path in ("/mcp", "/health", "/"):
            for host, token, expected in [
                ("evil.example", TOKEN, 421),
                ("evil.example", None, 421),
                (
                    local,
                    None,
                    403 if path == "/health" else 401,
                ),  # /health needs no token, serves no websocket
                (local, "wrong", 403 if path == "/health" else 401),
                (local, TOKEN, 403),
            ]:
                status, reply = websocket_status(addr, path, host, token)
                assert status == expected and b"\r\nupgrade:" not in reply.lower(), (path, host, token, reply)
        assert_serves(base)


@pytest.mark.anyio
async def test_guard_refuses_websockets_without_the_denial_extension_and_passes_lifespan():
    called = []

    async def app(scope, receive, send):
        called.append(scope["type"])

    sent = []

    async def send(message):
        sent.append(message)

    guard = Guard(app, HttpSettings())
    scope = {"type": "websocket", "path": "/mcp", "headers": [(b"host", b"127.0.0.1:1")]}
    await guard(scope, None, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "WebSockets are not served"}]
    await guard({"type": "lifespan"}, None, send)
    await guard({"type": "http", "path": "/health", "headers": [(b"host", b"127.0.0.1:1")]}, None, send)
    assert called == ["lifespan", "http"]


@pytest.mark.parametrize(
    "name, value",
    [
        ("FAL_MCP_HEADER_TIMEOUT", "soon"),
        ("FAL_MCP_HEADER_TIMEOUT", "0"),
        ("FAL_MCP_HEADER_TIMEOUT", "-1"),
        ("FAL_MCP_HEADER_TIMEOUT", "nan"),
        ("FAL_MCP_BODY_TIMEOUT", "inf"),
        ("FAL_MCP_BODY_TIMEOUT", "30s"),
        ("FAL_MCP_MAX_CONNECTIONS", "0"),
        ("FAL_MCP_MAX_CONNECTIONS", "many"),
        ("FAL_MCP_MAX_CONNECTIONS", "1.5"),
    ],
)
def test_bad_limit_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        HttpSettings.from_env({name: value})


def test_limit_settings_are_read_and_a_bad_one_stops_the_cli():
    settings = HttpSettings.from_env(
        {"FAL_MCP_HEADER_TIMEOUT": "2.5", "FAL_MCP_BODY_TIMEOUT": "7", "FAL_MCP_MAX_CONNECTIONS": "50"}
    )
    assert (settings.header_timeout, settings.body_timeout, settings.max_connections) == (2.5, 7.0, 50)
    defaults = HttpSettings.from_env({})
    assert (defaults.header_timeout, defaults.body_timeout, defaults.max_connections) == (10.0, 30.0, 1000)
    done = run_cli("serve", "--transport", "http", "--port", "0", env={"FAL_MCP_HEADER_TIMEOUT": "soon"})
    assert done.returncode == 2 and "FAL_MCP_HEADER_TIMEOUT" in done.stderr
    with serving(FAL_MCP_HEADER_TIMEOUT="0.25") as (_, base, _addr):
        assert_serves(base)
