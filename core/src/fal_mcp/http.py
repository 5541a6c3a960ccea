"""HTTP transports: MCP streamable HTTP at /mcp, the older HTTP+SSE at /sse and /messages/,
and /health. Every transport serves the same ToolTable, so the same tools.

Secure by default: loopback only; Host and Origin checked against allow lists (DNS
rebinding); a bearer token when FAL_MCP_AUTH_TOKEN is set, and required for any
non-loopback address; a request body limit; CORS only for configured origins.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from .config import ConfigError

log = logging.getLogger(__name__)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MCP_HEADERS = ["Authorization", "Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-ID"]


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    stateless: bool = False
    max_body_bytes: int = 4 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides) -> HttpSettings:
        def listed(name: str) -> tuple[str, ...]:
            return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())

        raw_port = env.get("FAL_MCP_PORT", "").strip() or "8080"
        if not raw_port.isdigit() or not 0 <= int(raw_port) <= 65535:
            raise ConfigError(f"FAL_MCP_PORT={raw_port!r} must be a port number (0-65535)")
        raw_body = env.get("FAL_MCP_MAX_BODY_MB", "").strip() or "4"
        try:
            max_body = int(float(raw_body) * 1024 * 1024)
        except ValueError:
            raise ConfigError(f"FAL_MCP_MAX_BODY_MB={raw_body!r} is not a number") from None
        values = dict(host=env.get("FAL_MCP_HOST", "").strip() or "127.0.0.1", port=int(raw_port),
                      token=env.get("FAL_MCP_AUTH_TOKEN", "").strip() or None,
                      allowed_hosts=listed("FAL_MCP_ALLOWED_HOSTS"), allowed_origins=listed("FAL_MCP_ALLOWED_ORIGINS"),
                      stateless=env.get("FAL_MCP_STATELESS", "").strip().lower() in ("1", "true", "yes"),
                      max_body_bytes=max_body)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check_exposure(self) -> None:
        """Refuse to serve beyond this machine without a token."""
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(
                f"refusing to listen on {self.host} without FAL_MCP_AUTH_TOKEN: anyone who can reach that address "
                "could use your fal key and spend its credit. Set FAL_MCP_AUTH_TOKEN to a long random secret, "
                "or listen on 127.0.0.1.")

    def host_patterns(self) -> tuple[str, ...]:
        if self.allowed_hosts:
            return self.allowed_hosts + ("127.0.0.1:*", "localhost:*", "[::1]:*")
        if is_loopback(self.host):
            return ("127.0.0.1:*", "localhost:*", "[::1]:*")
        return ("*",)  # bound to a public address with a required token: any name clients use

    def origin_patterns(self) -> tuple[str, ...]:
        return self.allowed_origins + ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")


def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern == "*" or value == pattern:
            return True
        name, colon, port = value.rpartition(":")
        if pattern.endswith(":*") and colon and name == pattern[:-2] and port.isdigit():  # host:* is any port
            return True
    return False


class Guard:
    """ASGI middleware: Host/Origin allow lists, bearer token, body limit. /health needs no token."""

    def __init__(self, app, settings: HttpSettings, open_paths: tuple[str, ...] = ("/health",)) -> None:
        self.app = app
        self.settings = settings
        self.hosts = settings.host_patterns()
        self.origins = settings.origin_patterns()
        self.open_paths = open_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message, extra = refusal
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *extra]})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope, headers):
        if not _matches(headers.get("host", ""), self.hosts):
            return 421, "Invalid Host header", []
        origin = headers.get("origin")
        if origin and not _matches(origin, self.origins):
            return 403, "Origin not allowed", []
        token = self.settings.token
        if token and scope["path"] not in self.open_paths:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return 401, "Missing or wrong bearer token", [(b"www-authenticate", b'Bearer realm="fal-mcp"')]
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.max_body_bytes:
            return 413, f"Request body larger than {self.settings.max_body_bytes} bytes", []
        return None


class CancelOnDisconnect:
    """ASGI wrapper for /mcp: when a client drops a POST before its answer was sent, cancel the
    calls it carried (the SDK keeps a stateful session's handlers running, and without an event
    store nobody could ever receive their results)."""

    def __init__(self, app, in_flight: dict) -> None:
        self.app = app
        self.in_flight = in_flight

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body = bytearray()
        answered = False

        async def tracked_receive():
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            elif message["type"] == "http.disconnect" and not answered:
                self._cancel(scope, bytes(body))
            return message

        async def tracked_send(message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        await self.app(scope, tracked_receive, tracked_send)

    def _cancel(self, scope, body: bytes) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        session_id = headers.get("mcp-session-id")
        try:
            messages = json.loads(body)
        except ValueError:
            return
        for message in messages if isinstance(messages, list) else [messages]:
            if isinstance(message, dict) and "id" in message:
                cancel_scope = self.in_flight.get((session_id, str(message["id"])))
                if cancel_scope is not None:
                    log.info("client disconnected: cancelling request %s", message["id"])
                    cancel_scope.cancel()


def build_app(table, settings: HttpSettings, transports: tuple[str, ...] = ("http", "sse")):
    """A Starlette app serving `table` over the given HTTP transports, plus /health."""
    import contextlib

    from mcp.server.sse import SseServerTransport
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route

    from .server import build_server

    in_flight: dict = {}
    server = build_server(table, in_flight)
    # Host and Origin are checked once, by Guard, for every route.
    no_rebinding_check = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    routes: list = []

    async def health(request):
        packs = [{"name": p.name, "distribution": p.distribution, "version": p.version}
                 for p in table.registry.packs if p.status == "active"]
        return JSONResponse({"status": "ok", "packs": packs, "tools": len(table.registry.tools),
                             "transports": list(transports), "stateless": settings.stateless,
                             "calls_in_flight": table.calls_in_flight})

    routes.append(Route("/health", health, methods=["GET"]))
    manager = None
    if "http" in transports:
        manager = StreamableHTTPSessionManager(app=server, stateless=settings.stateless,
                                               security_settings=no_rebinding_check,
                                               max_request_body_size=settings.max_body_bytes)
        routes.append(Route("/mcp", endpoint=CancelOnDisconnect(StreamableHTTPASGIApp(manager), in_flight)))
    if "sse" in transports:
        sse = SseServerTransport("/messages/", security_settings=no_rebinding_check,
                                 max_request_body_size=settings.max_body_bytes)

        async def sse_endpoint(request):
            async with sse.connect_sse(request.scope, request.receive, request._send) as (reader, writer):
                await server.run(reader, writer, server.create_initialization_options())
            return Response()

        routes += [Route("/sse", sse_endpoint, methods=["GET"]), Mount("/messages/", app=sse.handle_post_message)]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # A mounted app's lifespan never runs: the session manager is run here.
        if manager is None:
            yield
            return
        async with manager.run():
            yield

    middleware = [Middleware(Guard, settings=settings)]
    if settings.allowed_origins:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(settings.allowed_origins),
                                        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                                        allow_headers=MCP_HEADERS, expose_headers=["Mcp-Session-Id"]))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


async def serve_http(table, settings: HttpSettings, transports: tuple[str, ...] = ("http", "sse"),
                     ready=None) -> None:
    """Serve until cancelled. `ready`, if given, is called with the bound port once listening."""
    import asyncio
    import socket
    import sys

    import anyio
    import uvicorn

    settings.check_exposure()
    app = build_app(table, settings, transports)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (else Nagle
    # and delayed ACKs add ~40 ms to every small response)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    port = sock.getsockname()[1]
    sock.listen(1024)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # the CLI owns signals (and stdio, in dual mode)
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    paths = ", ".join({"http": "/mcp", "sse": "/sse"}[t] for t in transports)
    print(f"fal-mcp: listening on http://{shown}:{port} ({paths}, /health)", file=sys.stderr)
    if ready is not None:
        ready(port)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    finally:
        if not task.done():  # we were cancelled: let uvicorn close connections and run the lifespan's end
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await asyncio.shield(task)
            task.cancel()
        sock.close()
