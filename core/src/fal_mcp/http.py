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

from .config import ConfigError, number_setting

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
            from .oauth import check_url, parse_scopes

            if not (issuer and audience):
                raise ConfigError(
                    "OAuth needs both FAL_MCP_OAUTH_ISSUER (the authorization server's issuer URL) and "
                    "FAL_MCP_OAUTH_AUDIENCE (this server's public URL, e.g. https://mcp.example.com/mcp)"
                )
            issuer = check_url("FAL_MCP_OAUTH_ISSUER", issuer)
            audience = check_url("FAL_MCP_OAUTH_AUDIENCE", audience)
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
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})

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
        packs = [
            {"name": p.name, "distribution": p.distribution, "version": p.version}
            for p in table.registry.packs
            if p.status == "active"
        ]
        return JSONResponse(
            {
                "status": "ok",
                "packs": packs,
                "tools": len(table.registry.tools),
                "transports": list(transports),
                "stateless": settings.stateless,
                "calls_in_flight": table.calls_in_flight,
            }
        )

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


def bounded_protocol(settings: HttpSettings):
    """uvicorn's h11 protocol with per-connection bounds, for one server:

    - a request's headers must arrive within header_timeout of the connection (or, on a kept-alive
      connection, of the request's first byte), else the connection is closed;
    - its body must arrive within body_timeout of its headers, else the client is answered 408 (if
      nothing was answered yet) and the connection closed; the app sees a disconnect;
    - above max_connections, a new connection closes the one that has waited longest with no
      request in progress (headers not complete yet, or idle between requests), so connections
      that never send a request cannot lock others out. When every connection has a request in
      progress, uvicorn's limit_concurrency answers the new request 503.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    waiting: dict = {}  # connections with no request in progress, longest-waiting first

    class BoundedH11Protocol(H11Protocol):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            # (client's h11 state, request cycle) the deadline is for
            self._phase: tuple[object, object] | None = None
            self._deadline: asyncio.TimerHandle | None = None
            self._upgraded = False

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._watch(headers_due=True)
            if len(self.connections) > settings.max_connections:
                oldest = next(iter(waiting), self)
                if oldest is not self:
                    log.debug(
                        "connection limit reached: closing the longest-waiting connection without a request"
                    )
                    oldest._close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch(headers_due=True)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch(headers_due=False)  # idle until a next request: uvicorn's keep-alive timeout applies

        def handle_websocket_upgrade(self, event) -> None:
            self._stop()  # the websocket protocol owns the connection from here
            self._upgraded = True
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc) -> None:
            self._stop()
            super().connection_lost(exc)

        def _watch(self, headers_due: bool) -> None:
            if self._upgraded:
                return
            state = self.conn.their_state
            if (state, self.cycle) != self._phase:  # a new phase of the connection: a new deadline
                self._stop()
                self._phase = (state, self.cycle)
                if state is h11.IDLE:
                    waiting[self] = None
            if self._deadline is None:
                if state is h11.SEND_BODY:
                    self._deadline = self.loop.call_later(settings.body_timeout, self._expired)
                elif state is h11.IDLE and headers_due:
                    self._deadline = self.loop.call_later(settings.header_timeout, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if self.conn.their_state is h11.SEND_BODY and cycle is not None and not cycle.response_started:
                log.debug("request body not received in time: answering 408")
                cycle.disconnected = True  # the app's receive() sees a disconnect, what it sends is dropped
                cycle.message_event.set()
                body = json.dumps({"error": f"Request body not received within {settings.body_timeout:g} s"})
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]
                try:
                    self.transport.write(
                        self.conn.send(
                            h11.Response(status_code=408, headers=headers, reason=b"Request Timeout")
                        )
                        + self.conn.send(h11.Data(data=body.encode()))
                        + self.conn.send(h11.EndOfMessage())
                    )
                except h11.LocalProtocolError:
                    pass
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


async def serve_http(
    table, settings: HttpSettings, transports: tuple[str, ...] = ("http", "sse"), ready=None
) -> None:
    """Serve until cancelled. `ready`, if given, is called with the bound port once listening."""
    import asyncio
    import socket
    import sys

    import anyio
    import uvicorn

    settings.check_exposure()
    files = raise_open_files_limit()
    if files is not None and files < settings.max_connections + 100:
        log.warning(
            "FAL_MCP_MAX_CONNECTIONS=%d is near the open files limit (%d): accepting connections "
            "may fail before the limit is reached",
            settings.max_connections,
            files,
        )
    app = build_app(table, settings, transports)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (else Nagle
    # and delayed ACKs add ~40 ms to every small response)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    port = sock.getsockname()[1]
    sock.listen(1024)
    # limit_concurrency is one above the cap: bounded_protocol keeps connections at the cap by
    # closing idle ones, so uvicorn's 503 comes only when every connection has a request in progress
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
        http=bounded_protocol(settings),
        limit_concurrency=settings.max_connections + 1,
    )
    server = uvicorn.Server(config)
    # the CLI owns signals (and stdio, in dual mode); a deliberate attribute: older uvicorn called this
    # method, the uvicorn required now (>= 0.54) has none and captures signals in Server.capture_signals
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    paths = ", ".join({"http": "/mcp", "sse": "/sse"}[t] for t in transports)
    print(f"fal-mcp: listening on http://{shown}:{port} ({paths}, /health)", file=sys.stderr)
    if settings.oauth_issuer:
        print(
            f"fal-mcp: OAuth sign-in: access tokens of {settings.oauth_issuer} for {settings.oauth_audience}",
            file=sys.stderr,
        )
    if ready is not None:
        ready(port)
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
