"""HTTP transports: MCP streamable HTTP at /mcp, the older HTTP+SSE at /sse and /messages/,
and /health. Every transport serves the same ToolTable, so the same tools.

Secure by default: loopback only; Host and Origin checked against allow lists (DNS
rebinding); a bearer token when FAL_MCP_AUTH_TOKEN is set, OAuth access tokens when
FAL_MCP_OAUTH_ISSUER is (oauth.py), one of the two required for any non-loopback address; a
request body limit; CORS only for configured origins. Slow or idle clients are bounded per
connection: request headers and bodies must arrive in time, and at the connection cap the
longest-waiting idle connection makes room for a new one.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import ConfigError, number_setting, url_setting

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MCP_HEADERS = [
    "Authorization",
    "Content-Type",
    "Mcp-Session-Id",
    "Mcp-Protocol-Version",
    "Last-Event-ID",
    "X-Fal-Key",  # a user's own fal key (FAL_MCP_KEY_MODE=header, fal_keys.py)
]


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
    header_timeout: float = 10.0  # seconds from a connection (or a request's first byte) to its full headers
    body_timeout: float = 30.0  # seconds from a request's headers to the end of its body
    max_connections: int = 1000
    # OAuth (oauth.py): the authorization server whose JWTs are accepted, this server's resource URL
    # (the tokens' audience), the scopes a token must carry.
    oauth_issuer: str | None = None
    oauth_audience: str | None = None
    oauth_scopes: tuple[str, ...] = ()

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
        raw_max = env.get("FAL_MCP_MAX_CONNECTIONS", "").strip() or "1000"
        if not raw_max.isdigit() or int(raw_max) < 1:
            raise ConfigError(f"FAL_MCP_MAX_CONNECTIONS={raw_max!r} must be a whole number, at least 1")
        issuer = env.get("FAL_MCP_OAUTH_ISSUER", "").strip() or None
        audience = env.get("FAL_MCP_OAUTH_AUDIENCE", "").strip() or None
        raw_scopes = env.get("FAL_MCP_OAUTH_SCOPES", "").strip()
        scopes: tuple[str, ...] = ()
        if issuer or audience or raw_scopes:
            from .oauth import parse_scopes

            if not (issuer and audience):
                raise ConfigError(
                    "OAuth needs both FAL_MCP_OAUTH_ISSUER (the authorization server's issuer URL) and "
                    "FAL_MCP_OAUTH_AUDIENCE (this server's public URL, e.g. https://mcp.example.com/mcp)"
                )
            issuer = url_setting("FAL_MCP_OAUTH_ISSUER", issuer)
            audience = url_setting("FAL_MCP_OAUTH_AUDIENCE", audience)
            scopes = parse_scopes(raw_scopes)
            bad = [s for s in scopes if any(c in s for c in '"\\') or not s.isprintable() or not s.isascii()]
            if bad:
                raise ConfigError(f"FAL_MCP_OAUTH_SCOPES: {bad[0]!r} is not a valid scope")
        values: dict[str, Any] = dict(
            host=env.get("FAL_MCP_HOST", "").strip() or "127.0.0.1",
            port=int(raw_port),
            token=env.get("FAL_MCP_AUTH_TOKEN", "").strip() or None,
            allowed_hosts=listed("FAL_MCP_ALLOWED_HOSTS"),
            allowed_origins=listed("FAL_MCP_ALLOWED_ORIGINS"),
            stateless=env.get("FAL_MCP_STATELESS", "").strip().lower() in ("1", "true", "yes"),
            max_body_bytes=max_body,
            max_connections=int(raw_max),
            # at least a millisecond: 0 would close every connection at once
            header_timeout=number_setting(env, "FAL_MCP_HEADER_TIMEOUT", 10.0, 0.001),
            body_timeout=number_setting(env, "FAL_MCP_BODY_TIMEOUT", 30.0, 0.001),
            oauth_issuer=issuer,
            oauth_audience=audience,
            oauth_scopes=scopes,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check_exposure(self) -> None:
        """Refuse to serve beyond this machine without a token or OAuth."""
        if not is_loopback(self.host) and not self.token and not self.oauth_issuer:
            raise ConfigError(
                f"refusing to listen on {self.host} without FAL_MCP_AUTH_TOKEN or FAL_MCP_OAUTH_ISSUER: anyone "
                "who can reach that address could use your fal key and spend its credit. Set FAL_MCP_AUTH_TOKEN "
                "to a long random secret, or sign users in with OAuth, or listen on 127.0.0.1."
            )

    def metadata_paths(self) -> tuple[str, ...]:
        """Where the OAuth protected resource metadata (RFC 9728) is served: the well-known path, and the
        same followed by the resource URL's path (/mcp), which clients derive from the URL they use."""
        if not self.oauth_audience:
            return ()
        from urllib.parse import urlsplit

        base = "/.well-known/oauth-protected-resource"
        path = urlsplit(self.oauth_audience).path.rstrip("/")
        return tuple(dict.fromkeys([base + path, base, base + "/mcp"]))

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
    """ASGI middleware: Host/Origin allow lists, bearer token or OAuth access token, body limit.
    /health and the OAuth metadata need no token. Websocket requests get the same checks, then are
    refused: no route serves websockets.

    With OAuth, a request passes with the static token (if set) or a valid access token; the token's
    identity is left in the ASGI scope as the SDK's AuthenticatedUser (scope["user"], scope["auth"]),
    where principal_resolver and the SDK's session binding find it. Refusals follow RFC 6750 and the
    MCP authorization spec: 401 with `WWW-Authenticate: Bearer resource_metadata="..."` (and
    error="invalid_token" when a token was sent), 403 error="insufficient_scope" with the scopes
    needed."""

    def __init__(self, app, settings: HttpSettings, open_paths: tuple[str, ...] = ("/health",)) -> None:
        self.app = app
        self.settings = settings
        self.hosts = settings.host_patterns()
        self.origins = settings.origin_patterns()
        self.metadata_paths = settings.metadata_paths()
        self.open_paths = open_paths + self.metadata_paths
        self.verifier = None
        self.resource_metadata = ""
        if settings.oauth_issuer and settings.oauth_audience:
            from mcp.server.auth.routes import build_resource_metadata_url
            from pydantic import AnyHttpUrl

            from .oauth import JwtVerifier

            self.verifier = JwtVerifier(settings.oauth_issuer, settings.oauth_audience)
            self.resource_metadata = str(build_resource_metadata_url(AnyHttpUrl(settings.oauth_audience)))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] not in ("http", "websocket"):
            return  # an ASGI scope this server does not know: serve nothing
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = await self._refusal(scope, headers)
        if scope["type"] == "websocket":
            return await self._refuse_websocket(
                scope, send, refusal or (403, "WebSockets are not served", [])
            )
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message, extra = refusal
        await send_json(send, status, {"error": message}, extra)

    @staticmethod
    async def _refuse_websocket(scope, send, refusal) -> None:
        status, message, extra = refusal
        if "websocket.http.response" not in scope.get("extensions", {}):
            # without the denial-response extension, a close before accept is answered 403 by the server
            await send({"type": "websocket.close", "code": 1008, "reason": message})
            return
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        await send({"type": "websocket.http.response.body", "body": json.dumps({"error": message}).encode()})

    async def _refusal(self, scope, headers):
        if not _matches(headers.get("host", ""), self.hosts):
            return 421, "Invalid Host header", []
        origin = headers.get("origin")
        # The OAuth metadata is a public document for browser-based clients too (the SDK's route
        # answers CORS for any origin): no Origin check there.
        if origin and not _matches(origin, self.origins) and scope["path"] not in self.metadata_paths:
            return 403, "Origin not allowed", []
        if scope["path"] not in self.open_paths:
            refusal = await self._unauthorized(scope, headers)
            if refusal is not None:
                return refusal
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.max_body_bytes:
            return 413, f"Request body larger than {self.settings.max_body_bytes} bytes", []
        return None

    async def _unauthorized(self, scope, headers):
        """None when the request carries the static token or a valid OAuth access token (then left
        in the scope), else the refusal."""
        token = self.settings.token
        if not token and self.verifier is None:
            return None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else ""
        if token and given and hmac.compare_digest(given.encode(), token.encode()):
            return None
        if self.verifier is None:
            return 401, "Missing or wrong bearer token", [(b"www-authenticate", b'Bearer realm="fal-mcp"')]
        from .oauth import TokenRefused

        needed = self.settings.oauth_scopes
        params = f'resource_metadata="{self.resource_metadata}"'
        if needed:  # the MCP spec: a 401 names the scopes to ask for too
            params = f'scope="{" ".join(needed)}", {params}'
        if not given:
            return 401, "Sign-in required", [(b"www-authenticate", f"Bearer {params}".encode())]
        try:
            access = await self.verifier.check(given)
        except TokenRefused as refused:
            log.debug("access token refused: %s", refused)
            challenge = f'Bearer error="invalid_token", error_description="{refused}", {params}'
            return 401, f"Invalid access token: {refused}", [(b"www-authenticate", challenge.encode())]
        if any(name not in access.scopes for name in needed):
            challenge = f'Bearer error="insufficient_scope", {params}'
            return (
                403,
                f"The access token lacks a scope: {' '.join(needed)} needed",
                [(b"www-authenticate", challenge.encode())],
            )
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from starlette.authentication import AuthCredentials

        scope["user"] = AuthenticatedUser(access)
        scope["auth"] = AuthCredentials(access.scopes)
        return None


class CancelOnDisconnect:
    """ASGI wrapper for /mcp: when a client drops a POST before its answer was sent, cancel the
    calls it carried (the SDK keeps a stateful session's handlers running, and without an event
    store nobody could ever receive their results). Without sessions (stateless), a
    `notifications/cancelled` arrives on a connection of its own, which the SDK cannot match to
    the call: it is matched here, by the caller Guard authenticated (the static token's holder or
    the OAuth user) and the request id."""

    def __init__(self, app, in_flight: dict, owner_of: Callable[[Any], str | None] | None = None) -> None:
        self.app = app
        self.in_flight = in_flight
        # the key a request's calls are registered under without a session, from its ASGI scope
        self.owner_of = owner_of or (lambda scope: None)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body = bytearray()
        answered = False

        async def tracked_receive():
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    self._cancel(scope, bytes(body), notified=True)
            elif message["type"] == "http.disconnect" and not answered:
                self._cancel(scope, bytes(body), notified=False)
            return message

        async def tracked_send(message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        await self.app(scope, tracked_receive, tracked_send)

    def _cancel(self, scope, body: bytes, *, notified: bool) -> None:
        """notified=False: cancel the requests this body carried (its client left); True: cancel the
        requests named by the `notifications/cancelled` it carries, when the SDK cannot (no session)."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        session_id = headers.get("mcp-session-id")
        # A session's own cancels reach its calls through the SDK; a stateless client that leaves
        # has its request's handler cancelled by the SDK too.
        owner = (
            self.owner_of(scope)
            if notified and session_id is None and b"cancelled" in body
            else session_id
            if not notified
            else None
        )
        if owner is None:
            return
        try:
            messages = json.loads(body)
        except ValueError:
            return
        for message in messages if isinstance(messages, list) else [messages]:
            if not isinstance(message, dict):
                continue
            if notified:
                params = message.get("params")
                if message.get("method") != "notifications/cancelled" or not isinstance(params, dict):
                    continue
                request_id = params.get("requestId")
            else:
                request_id = message.get("id")
            for cancel_scope in list(self.in_flight.get((owner, str(request_id)), ())):
                log.info("cancelling request %s (%s)", request_id, "cancelled" if notified else "client left")
                cancel_scope.cancel()


def principal_resolver(settings: HttpSettings):
    """`principal_of(ctx)` for HTTP: the OAuth user whose access token Guard validated (its subject),
    else the static token's holder when a token is required (Guard has checked it), else the session
    (one per SSE connection or streamable HTTP session); without a token in stateless mode a caller
    cannot be recognised again: anonymous. Also `owner_of(scope)`: the key of the first two, from an
    ASGI scope (None for a caller without a token)."""
    import weakref

    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

    from .owners import ANONYMOUS, Principal, oauth_principal, session_principal, token_principal

    token_owner = token_principal(settings.token) if settings.token else None
    by_session: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def authenticated(scope) -> Principal | None:
        user = scope.get("user")
        if isinstance(user, AuthenticatedUser) and settings.oauth_issuer and user.access_token.subject:
            return oauth_principal(settings.oauth_issuer, user.access_token.subject)
        return token_owner

    def owner_of(scope) -> str | None:
        known = authenticated(scope)
        return known.key if known is not None else None

    def principal_of(ctx):
        scope = getattr(ctx.request, "scope", None)
        known = authenticated(scope) if scope is not None else token_owner
        if known is not None:
            return known
        url = getattr(ctx.request, "url", None)
        if settings.stateless and url is not None and url.path.rstrip("/") == "/mcp":
            return ANONYMOUS
        # The SDK makes a ServerSession per request; its Connection is what lives as long as the client's
        # SSE connection or streamable HTTP session (the SDK offers no public accessor for it).
        connection = getattr(ctx.session, "_connection", ctx.session)
        owner = by_session.get(connection)
        if owner is None:
            owner = by_session[connection] = session_principal()
        return owner

    return principal_of, owner_of


def worker_identity() -> dict[str, int] | None:
    """This process's place among `fal-mcp serve --workers N` (set by the supervisor, cli.py), else None."""
    import os

    index, count = os.environ.get("FAL_MCP_WORKER_INDEX", ""), os.environ.get("FAL_MCP_WORKER_COUNT", "")
    if not (index.isdigit() and count.isdigit()):
        return None
    return {"index": int(index), "of": int(count), "pid": os.getpid()}


async def send_json(send, status: int, payload: Any, headers=(), *, head: bool = False) -> None:
    """Answer an ASGI HTTP request with `payload` as JSON (no body for a HEAD request: `head`)."""
    body = json.dumps(payload).encode()
    content = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": content})
    await send({"type": "http.response.body", "body": b"" if head else body})


def health_payload(table, settings: HttpSettings, transports: tuple[str, ...]) -> dict:
    """What GET /health answers (both by FastHealth and by the app's own route)."""
    import os

    packs = [
        {"name": p.name, "distribution": p.distribution, "version": p.version}
        for p in table.registry.packs
        if p.status == "active"
    ]
    admission = getattr(getattr(table, "runner", None), "admission", None)
    payload = {
        "status": "ok",
        "packs": packs,
        "tools": len(table.registry.tools),
        "transports": list(transports),
        "stateless": settings.stateless,
        "calls_in_flight": table.calls_in_flight,
        "worker": worker_identity() or {"index": 0, "of": 1, "pid": os.getpid()},
    }
    if admission is not None:
        payload["fal_calls_in_flight"] = admission.in_flight
        payload["max_calls_in_flight"] = admission.limit
        payload["refused_busy"] = admission.refused
    return payload


class FastHealth:
    """ASGI wrapper answering GET /health before any other middleware or routing (no body to read, no
    token needed, the same Host check as Guard), so a busy server still answers it at once. A request
    with an Origin header (CORS, and Guard's Origin check) takes the ordinary path."""

    def __init__(self, app, table, settings: HttpSettings, transports: tuple[str, ...]) -> None:
        self.app = app
        self.table = table
        self.settings = settings
        self.transports = transports
        self.hosts = settings.host_patterns()
        worker = worker_identity()
        # With --workers, every answer names the worker that gave it (X-Fal-Mcp-Worker: its index)
        self.worker = (b"x-fal-mcp-worker", str(worker["index"]).encode()) if worker else None

    async def __call__(self, scope, receive, send) -> None:
        if self.worker is not None and scope["type"] == "http":
            original, worker = send, self.worker

            async def send(message) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", ()), worker]}
                await original(message)

        if scope["type"] == "http" and scope["path"] == "/health" and scope["method"] in ("GET", "HEAD"):
            host = origin = None
            for key, value in scope["headers"]:
                if key == b"host":
                    host = value.decode("latin-1")
                elif key == b"origin":
                    origin = value
            if origin is None and host is not None and _matches(host, self.hosts):
                payload = health_payload(self.table, self.settings, self.transports)
                await send_json(send, 200, payload, head=scope["method"] == "HEAD")
                return
        await self.app(scope, receive, send)


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
    principal_of, owner_of = principal_resolver(settings)
    server = build_server(table, in_flight, principal_of)
    # Host and Origin are checked once, by Guard, for every route.
    no_rebinding_check = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    routes: list = []

    async def health(request):
        return JSONResponse(health_payload(table, settings, transports))

    routes.append(Route("/health", health, methods=["GET"]))
    if settings.oauth_issuer:
        routes += protected_resource_routes(settings)
    manager = None
    if "http" in transports:
        manager = StreamableHTTPSessionManager(
            app=server,
            stateless=settings.stateless,
            security_settings=no_rebinding_check,
            max_request_body_size=settings.max_body_bytes,
        )
        routes.append(
            Route("/mcp", endpoint=CancelOnDisconnect(StreamableHTTPASGIApp(manager), in_flight, owner_of))
        )
    if "sse" in transports:
        sse = SseServerTransport(
            "/messages/", security_settings=no_rebinding_check, max_request_body_size=settings.max_body_bytes
        )

        async def sse_endpoint(request):
            async with sse.connect_sse(request.scope, request.receive, request._send) as (reader, writer):
                await server.run(reader, writer, server.create_initialization_options())
            return Response()

        routes += [
            Route("/sse", sse_endpoint, methods=["GET"]),
            Mount("/messages/", app=sse.handle_post_message),
        ]

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
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.allowed_origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=MCP_HEADERS,
                expose_headers=["Mcp-Session-Id"],
            ),
        )
    webhooks = table.webhooks
    if webhooks is not None:  # POST /fal/webhook: fal's signature is its only check (webhook_jobs.py)
        from .webhook_jobs import WebhookRoute

        middleware.insert(0, Middleware(WebhookRoute, webhooks=webhooks))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def protected_resource_routes(settings: HttpSettings) -> list:
    """The OAuth protected resource metadata (RFC 9728), with the mcp SDK's model and handler, at each
    of settings.metadata_paths(). The URLs are kept as the operator wrote them (the SDK's
    create_protected_resource_routes would add a slash to a path-less issuer, which then no longer
    equals the `issuer` of the authorization server's own metadata)."""
    from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
    from mcp.server.auth.routes import cors_middleware
    from mcp.shared.auth import ProtectedResourceMetadata
    from starlette.routing import Route

    metadata = ProtectedResourceMetadata.model_validate(
        {
            "resource": settings.oauth_audience,
            "authorization_servers": [settings.oauth_issuer],
            "scopes_supported": list(settings.oauth_scopes) or None,
            "resource_name": "fal-mcp",
        }
    )
    endpoint = cors_middleware(ProtectedResourceMetadataHandler(metadata).handle, ["GET", "OPTIONS"])
    return [Route(path, endpoint=endpoint, methods=["GET", "OPTIONS"]) for path in settings.metadata_paths()]


def bounded_protocol(settings: HttpSettings, parser: str = "auto"):
    """uvicorn's HTTP protocol (`parser`: "httptools", "h11", or "auto": httptools where installed, as
    uvicorn's standard extras bring it, h11 otherwise) with per-connection bounds, for one server:

    - a request's headers must arrive within header_timeout of the connection (or, on a kept-alive
      connection, of the request's first byte), else the connection is closed;
    - its body must arrive within body_timeout of its headers, else the client is answered 408 (if
      nothing was answered yet) and the connection closed; the app sees a disconnect;
    - above max_connections, a new connection closes the one that has waited longest with no
      request in progress (headers not complete yet, or idle between requests) if that one has waited
      at least `evict_after` (1 s, or a tenth of header_timeout if less), so connections that never
      send a request cannot lock others out; otherwise (a burst of new clients, or every connection
      busy) the new connection's request is answered 503 with Retry-After and the connection closed;
      beyond max_connections plus a margin (admission.overflow_for) a new connection is closed at
      once, so a flood cannot take the descriptors calls in flight need.
    """
    from .admission import overflow_for

    waiting: dict = {}  # connections with no request in progress -> since when, longest-waiting first
    evict_after = min(1.0, settings.header_timeout / 10)
    hard_cap = settings.max_connections + overflow_for(settings.max_connections)  # at the budgeted limit
    retry_after = b"1"

    async def busy(scope, receive, send) -> None:
        # the request's (small, bounded) body is read first: closing with unread bytes would reset the
        # connection, and the client could lose the 503 with it
        while (await receive()).get("more_body", False):
            pass
        refusal = {"error": "The server is at its connection limit: retry in a moment"}
        await send_json(send, 503, refusal, [(b"retry-after", retry_after), (b"connection", b"close")])

    class Bounded:
        """The bounds, over either parser's protocol. `_reading()` says where the client is: "idle" (no
        request, or its headers not complete yet), "body" (headers read, body not yet) or "busy" (a
        whole request read, its answer not finished); `_write_408` answers through the parser's state."""

        app: Any
        loop: asyncio.AbstractEventLoop
        transport: asyncio.Transport
        connections: set
        cycle: Any
        _reading: Callable[[], str]  # given by the parser's class below
        _write_408: Callable[[list[tuple[bytes, bytes]], bytes], None]

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._phase: tuple[object, object] | None = None  # (where the client is, request cycle)
            self._deadline: asyncio.TimerHandle | None = None
            self._upgraded = False

        def connection_made(self, transport) -> None:
            super().connection_made(transport)  # type: ignore[misc]
            count = len(self.connections)
            if count > hard_cap:
                log.debug("connection limit and its margin reached: closing a new connection at once")
                self._upgraded = True  # no deadlines: it is gone
                self.transport.abort()
                return
            self._watch(headers_due=True)
            if count > settings.max_connections:
                oldest = next(iter(waiting), self)
                if oldest is not self and self.loop.time() - waiting[oldest] >= evict_after:
                    log.debug(
                        "connection limit reached: closing the longest-waiting connection without a request"
                    )
                    oldest._close()
                else:
                    log.debug("connection limit reached: answering 503 to a new connection")
                    waiting.pop(self, None)  # never closed to make room: it is answered and closed
                    self.app = busy

        def data_received(self, data: bytes) -> None:
            super().data_received(data)  # type: ignore[misc]
            self._watch(headers_due=True)

        def on_response_complete(self) -> None:
            super().on_response_complete()  # type: ignore[misc]
            self._watch(headers_due=False)  # idle until a next request: uvicorn's keep-alive timeout applies

        def handle_websocket_upgrade(self, *args) -> None:
            self._stop()  # the websocket protocol owns the connection from here
            self._upgraded = True
            super().handle_websocket_upgrade(*args)  # type: ignore[misc]

        def connection_lost(self, exc) -> None:
            self._stop()
            super().connection_lost(exc)  # type: ignore[misc]

        def _watch(self, headers_due: bool) -> None:
            if self._upgraded:
                return
            reading = self._reading()
            if (reading, self.cycle) != self._phase:  # a new phase of the connection: a new deadline
                self._stop()
                self._phase = (reading, self.cycle)
                if reading == "idle" and self.app is not busy:
                    waiting[self] = self.loop.time()
            if self._deadline is None:
                if reading == "body":
                    self._deadline = self.loop.call_later(settings.body_timeout, self._expired)
                elif reading == "idle" and headers_due:
                    self._deadline = self.loop.call_later(settings.header_timeout, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if self._reading() == "body" and cycle is not None and not cycle.response_started:
                log.debug("request body not received in time: answering 408")
                cycle.disconnected = True  # the app's receive() sees a disconnect, what it sends is dropped
                cycle.message_event.set()
                body = json.dumps({"error": f"Request body not received within {settings.body_timeout:g} s"})
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]
                self._write_408(headers, body.encode())
            else:
                log.debug("request headers not received in time: closing the connection")
            self._close()

        def _stop(self) -> None:
            waiting.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _close(self) -> None:
            self._stop()
            self.transport.abort()  # not close(): that waits for a client that may never read

    if parser == "h11":
        return _bounded_h11(Bounded)
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools: h11's pure-Python parser
        if parser == "httptools":
            raise
        return _bounded_h11(Bounded)

    class BoundedHttpToolsProtocol(Bounded, HttpToolsProtocol):
        # Requests whose headers, whole message and answer are done, counted: pipelined requests are
        # parsed while an earlier one is answered.
        _headers_read = _requests_read = _answered = 0

        def _reading(self) -> str:
            if self._requests_read > self._answered:
                return "busy"
            return "body" if self._headers_read > self._requests_read else "idle"

        def on_headers_complete(self) -> None:
            self._headers_read += 1
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._requests_read = self._headers_read
            super().on_message_complete()

        def on_response_complete(self) -> None:
            self._answered += 1
            super().on_response_complete()

        def _write_408(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
            head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\n" + head + b"\r\n" + body)

    return BoundedHttpToolsProtocol


def _bounded_h11(bounded):
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11Protocol(bounded, H11Protocol):  # type: ignore[misc,valid-type]
        def _reading(self) -> str:
            state = self.conn.their_state
            return "idle" if state is h11.IDLE else "body" if state is h11.SEND_BODY else "busy"

        def _write_408(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
            try:
                self.transport.write(
                    self.conn.send(h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"))
                    + self.conn.send(h11.Data(data=body))
                    + self.conn.send(h11.EndOfMessage())
                )
            except h11.LocalProtocolError:
                pass

    return BoundedH11Protocol


def raise_open_files_limit(wanted: int = 65536) -> int | None:
    """Raise this process's soft limit on open files to its hard limit (at most `wanted`): with a
    common default of 1024, a burst of connections makes accepts fail. Returns the soft limit,
    None if unlimited or where there is no such limit."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft == resource.RLIM_INFINITY:
        return None
    if soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as error:  # macOS, for one, caps it below an unlimited hard limit
        log.warning("could not raise the open files limit from %d to %d: %s", soft, target, error)
        return soft
    log.info("raised the open files limit from %d to %d", soft, target)
    return target


LISTEN_FD_VARIABLE = "FAL_MCP_LISTEN_FD"  # a listening socket inherited from the supervisor (cli.py)


def listen_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def paths_of(transports: tuple[str, ...]) -> str:
    return ", ".join({"http": "/mcp", "sse": "/sse"}[t] for t in transports) + ", /health"


def listening_socket(host: str, port: int):
    """A TCP socket bound to (host, port) and listening (the supervisor's, shared by its workers)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (else Nagle
    # and delayed ACKs add ~40 ms to every small response)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)  # the kernel caps it at net.core.somaxconn
    return sock


def inherited_socket():
    """The listening socket a supervisor handed this worker (FAL_MCP_LISTEN_FD), else None."""
    import os
    import socket

    raw = os.environ.get(LISTEN_FD_VARIABLE, "").strip()
    if not raw.isdigit():
        return None
    sock = socket.socket(fileno=int(raw))
    sock.setblocking(False)
    return sock


class _AcceptLoop:
    """Accepts connections from `sock` one at a time, each handed to a protocol made by `factory`; while
    `limit` connections are open it stops accepting, and new ones wait in the kernel's backlog (not reset,
    not taking descriptors). One accept per turn of the event loop: a burst of connections cannot hold the
    loop (and /health) for a thousand accepts at once. It stands in for the asyncio Server uvicorn makes:
    close() and wait_closed()."""

    def __init__(self, sock, factory, connections, limit: int, health: _HealthLane | None = None) -> None:
        import asyncio

        sock.setblocking(False)  # sock_accept needs it (asyncio's create_server did this itself)
        self.sock, self.factory, self.connections, self.limit = sock, factory, connections, limit
        self.health = health
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        import asyncio
        import errno

        loop = asyncio.get_running_loop()
        short_of_files = 0.0
        while True:
            while len(self.connections) >= self.limit:
                await asyncio.sleep(0.005)
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:  # out of descriptors (or the like): let connections close, then again
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if loop.time() - short_of_files > 10:
                        log.warning("accepting connections failed (%s): pausing accepts", exc)
                        short_of_files = loop.time()
                    await asyncio.sleep(0.1)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            if self.health is not None:
                taken = self.health.take(conn)
                if taken is None:  # nothing arrived yet: decided when its first bytes do
                    asyncio.ensure_future(self._route_later(conn))
                    continue
                if taken:
                    continue
            await self._connect(conn)

    async def _connect(self, conn) -> None:
        import asyncio

        try:
            await asyncio.get_running_loop().connect_accepted_socket(self.factory, conn)
        except OSError as exc:
            log.debug("an accepted connection failed at once: %s", exc)
            conn.close()

    async def _route_later(self, conn, wait: float = 0.05) -> None:
        """A connection whose client had sent nothing yet when it was accepted: to the /health lane if its
        first bytes (within `wait` seconds) are a GET /health, else to the HTTP server."""
        import asyncio

        loop = asyncio.get_running_loop()
        readable = loop.create_future()

        def arrived() -> None:
            if not readable.done():
                readable.set_result(None)

        try:
            loop.add_reader(conn.fileno(), arrived)
        except (OSError, ValueError, NotImplementedError):
            return await self._connect(conn)
        try:
            await asyncio.wait_for(readable, wait)
        except asyncio.TimeoutError:
            pass
        finally:
            loop.remove_reader(conn.fileno())
        if self.health is not None and self.health.take(conn):
            return
        await self._connect(conn)

    def close(self) -> None:
        self.task.cancel()

    async def wait_closed(self) -> None:
        import asyncio

        await asyncio.gather(self.task, return_exceptions=True)


class _HealthLane:
    """GET /health answered by threads of their own, so it is answered at once however busy the event
    loop is (a thread gets the interpreter within its switch interval, 5 ms). A new connection whose
    first bytes, already arrived, read `GET /health ` is served here, request after request, as long as
    each is a plain GET /health (a Host the allow list accepts, no Origin, no body); the first other
    request hands the connection, unread, to the event loop's HTTP server. At most MAX_THREADS such
    connections at once; others take the ordinary path (FastHealth)."""

    MAX_THREADS = 8
    MAX_HEAD = 16384

    def __init__(self, loop, factory, payload, hosts: tuple[str, ...], idle_timeout: float) -> None:
        import threading

        self.loop, self.factory, self.payload, self.hosts = loop, factory, payload, hosts
        self.idle_timeout = idle_timeout
        self.lock = threading.Lock()
        self.threads = 0

    def take(self, conn) -> bool | None:
        """Whether `conn` (just accepted, non-blocking) was taken: its first request is GET /health. None:
        nothing has arrived on it yet."""
        import socket
        import threading

        try:
            head = conn.recv(12, socket.MSG_PEEK)
        except BlockingIOError:
            return None
        except OSError:
            return False
        if head != b"GET /health "[: len(head)] or len(head) < 12:
            return False
        with self.lock:
            if self.threads >= self.MAX_THREADS:
                return False
            self.threads += 1
        log.debug("/health: a connection served by a thread of its own")
        threading.Thread(target=self._serve, args=(conn,), name="fal-mcp /health", daemon=True).start()
        return True

    def _serve(self, conn) -> None:
        import socket
        import time

        handed_back = False
        try:
            conn.setblocking(True)
            conn.settimeout(self.idle_timeout)
            partial_since = None
            while True:
                data = conn.recv(self.MAX_HEAD, socket.MSG_PEEK)
                if not data:
                    return
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    now = time.monotonic()
                    partial_since = partial_since or now
                    if len(data) >= self.MAX_HEAD or now - partial_since > self.idle_timeout:
                        return
                    time.sleep(0.001)  # the rest of the head is on its way
                    continue
                partial_since = None
                close = self._plain_health(data[: end + 4])
                if close is None:  # anything else: the event loop's HTTP server reads it
                    conn.setblocking(False)
                    self.loop.call_soon_threadsafe(self._hand_back, conn)
                    handed_back = True
                    return
                conn.recv(end + 4)  # consume exactly this request
                body = json.dumps(self.payload()).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
                    % (len(body), b"connection: close\r\n" if close else b"", body)
                )
                if close:
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self.threads -= 1
            if not handed_back:
                conn.close()

    def _plain_health(self, head: bytes) -> bool | None:
        """None unless `head` is a GET /health this lane may answer; else whether to close after it."""
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target, _, version = rest.partition(" ")
        if method != "GET" or target != "/health" or version not in ("HTTP/1.1", "HTTP/1.0"):
            return None
        fields: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, colon, value = line.partition(":")
            if not colon or name != name.strip():
                return None
            fields[name.lower()] = value.strip()
        if any(
            name in fields for name in ("origin", "content-length", "transfer-encoding", "upgrade", "expect")
        ):
            return None  # CORS, a body, a websocket: the ordinary path
        if not _matches(fields.get("host", ""), self.hosts):
            return None
        connection = fields.get("connection", "").lower()
        return version == "HTTP/1.0" or "close" in connection

    def _hand_back(self, conn) -> None:
        import asyncio

        async def connect() -> None:
            try:
                await self.loop.connect_accepted_socket(self.factory, conn)
            except OSError:
                conn.close()

        asyncio.ensure_future(connect())


def bounded_server(config, settings: HttpSettings, health_payload=None):
    """A uvicorn Server whose listening socket is served by _AcceptLoop (at most max_connections and its
    overflow open) instead of an asyncio Server accepting everything the kernel queued."""
    import asyncio
    import sys

    import uvicorn

    from .admission import overflow_for

    class BoundedServer(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await self.lifespan.startup()
            if self.lifespan.should_exit:
                sys.exit(3)  # uvicorn's STARTUP_FAILURE
            config = self.config

            def create_protocol(_loop=None):
                return config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
                )

            limit = settings.max_connections + overflow_for(settings.max_connections)
            health = None
            if health_payload is not None:
                health = _HealthLane(
                    asyncio.get_running_loop(),
                    create_protocol,
                    health_payload,
                    settings.host_patterns(),
                    max(settings.header_timeout, 5.0),
                )
            # uvicorn calls only close() and wait_closed() on these
            self.servers = [
                _AcceptLoop(sock, create_protocol, self.server_state.connections, limit, health)  # type: ignore[misc]
                for sock in sockets or ()
            ]
            self.started = True

    return BoundedServer(config)


def tell_supervisor_ready() -> None:
    """A worker (cli.py --workers) tells its supervisor it serves: a byte on FAL_MCP_READY_FD."""
    import os

    raw = os.environ.pop("FAL_MCP_READY_FD", "").strip()
    if raw.isdigit():
        try:
            os.write(int(raw), b"r")
            os.close(int(raw))
        except OSError:
            pass


async def serve_http(
    table, settings: HttpSettings, transports: tuple[str, ...] = ("http", "sse"), ready=None
) -> None:
    """Serve until cancelled. `ready`, if given, is called with the bound port once listening."""
    import asyncio
    import sys

    import anyio
    import uvicorn

    settings.check_exposure()
    from dataclasses import replace

    from .admission import budget, configured_calls, open_files_limit, set_inbound_connections

    raise_open_files_limit()
    # The descriptors this process may open are split once: inbound connections, calls in flight
    # (admission.py), a reserve. A connection cap the limit cannot hold is lowered, with a warning.
    split = budget(open_files_limit(), settings.max_connections, configured_calls())
    if split.wanted_connections is not None:
        log.warning(
            "FAL_MCP_MAX_CONNECTIONS=%d is more than the open files limit (%d) allows beside the calls "
            "in flight: at most %d connections are held",
            split.wanted_connections,
            split.files,
            split.max_connections,
        )
        settings = replace(settings, max_connections=split.max_connections)
    set_inbound_connections(settings.max_connections)
    app = FastHealth(build_app(table, settings, transports), table, settings, transports)
    sock = inherited_socket()
    if sock is None:
        sock = listening_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    # No uvicorn limit_concurrency: bounded_protocol answers 503 (with Retry-After) itself, per new
    # connection, and only when no idle connection can make room.
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
        http=bounded_protocol(settings),
        limit_concurrency=None,
    )
    server = bounded_server(config, settings, lambda: health_payload(table, settings, transports))
    # the CLI owns signals (and stdio, in dual mode); a deliberate attribute: older uvicorn called this
    # method, the uvicorn required now (>= 0.54) has none and captures signals in Server.capture_signals
    server.install_signal_handlers = lambda: None
    worker = worker_identity()
    if worker is None:
        print(
            f"fal-mcp: listening on {listen_url(settings.host, port)} ({paths_of(transports)})",
            file=sys.stderr,
        )
    else:  # the supervisor (cli.py) says where it listens
        log.info("worker %d of %d (pid %d) serving", worker["index"], worker["of"], worker["pid"])
    if settings.oauth_issuer:
        print(
            f"fal-mcp: OAuth sign-in: access tokens of {settings.oauth_issuer} for {settings.oauth_audience}",
            file=sys.stderr,
        )
    if ready is not None:
        ready(port)
    if worker is not None:
        tell_supervisor_ready()
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    finally:
        if not task.done():  # we were cancelled: let uvicorn close connections and run the lifespan's end
            table.runner.shutting_down()  # the requests it ends leave their calls' fal jobs running
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await asyncio.shield(task)
            task.cancel()
        sock.close()
