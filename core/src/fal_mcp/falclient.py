"""The one adaptation of fal_client's internals.

fal_client 1.0.x has no setting for its hosts: they are module constants of
`fal_client.client`, read at call time. Pointing it at another deployment
(the offline sandbox, a proxy) means setting them here. It also retries on
its own, ignoring Retry-After; the gateway owns retries, so that is turned
off. `tests/test_falclient_adapter.py` fails if fal_client changes under this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Constant name in fal_client.client -> (our URL kind, trailing slash wanted)
HOST_CONSTANTS = {
    "RUN_URL_FORMAT": ("run", True),
    "QUEUE_URL_FORMAT": ("queue", True),
    "REST_URL": ("rest", False),
    "CDN_URL": ("cdn", False),
}


def configure(urls: Mapping[str, str]) -> None:
    """Point fal_client at `urls` (kinds run/queue/rest/cdn) and disable its own retries."""
    import fal_client.client as client

    missing = [name for name in (*HOST_CONSTANTS, "MAX_ATTEMPTS") if not hasattr(client, name)]
    if missing:
        raise RuntimeError(
            f"fal_client {client_version()} lacks {', '.join(missing)}: "
            "this fal-mcp release does not support it"
        )
    for constant, (kind, slash) in HOST_CONSTANTS.items():
        setattr(client, constant, urls[kind].rstrip("/") + ("/" if slash else ""))
    client.MAX_ATTEMPTS = 1


def client_version() -> str:
    from importlib.metadata import version

    return version("fal-client")


async def fetch_result(handle) -> dict:
    """GET a completed job's output from the handle's response_url, in one request.

    (`AsyncRequestHandle.get()` would poll the status once more first.)
    """
    from fal_client.client import QUEUE_POLL_TIMEOUT, _async_request

    response = await _async_request(handle.client, "GET", handle.response_url, timeout=QUEUE_POLL_TIMEOUT)
    return response.json()


# Connections kept to fal, idle, per client (that is per fal key) and host: a call in flight holds at most
# one connection to fal at a time (submit, then its status stream, then its result), so the pool grows to
# the calls in flight (which admission control bounds) and keeps this many of them when they end.
POOL_CONNECTIONS = 32
# fal sends a comment line every 15 s on a status stream; silence for longer means a dead connection.
STREAM_READ_TIMEOUT = 60.0
# fal ends a status stream right after its COMPLETED event; reading to that end keeps the connection for
# the next request. An end slower than this is not waited for: the connection is closed instead.
STREAM_DRAIN_TIMEOUT = 2.0


def _lean_pool_class():
    """httpcore's connection pool, finding a kept connection in O(1).

    httpcore 1.0's pool rescans every connection (a syscall for each idle one, and a count of all of them
    for each idle one) whenever a request starts or a response closes: with tens of connections that costs
    more than the request. This one keeps each host's idle connections in a stack: a request takes the
    most recently used one (checking that one alone for a server-side close), a closed response puts its
    connection back if it can be reused, keeping at most max_keepalive_connections idle per host. The
    connections themselves are httpcore's (h11, TLS, timeouts, proxies as before)."""
    global _LeanPool
    if _LeanPool is not None:
        return _LeanPool
    import time

    import httpcore
    from httpcore._synchronization import AsyncShieldCancellation

    class LeanPool(httpcore.AsyncConnectionPool):
        _idle: dict
        _open: set
        _sweep_at: float
        _shut: bool

        def _lean_init(self) -> None:
            self._idle, self._open, self._sweep_at, self._shut = {}, set(), 0.0, False

        @property
        def connections(self) -> list:
            return list(self._open)

        async def handle_async_request(self, request):
            scheme = request.url.scheme
            if scheme not in (b"http", b"https"):
                raise httpcore.UnsupportedProtocol(
                    f"Request URL has an unsupported protocol '{scheme.decode() or 'none'}://'."
                )
            if self._shut:
                raise RuntimeError("the connection pool is closed")
            origin = request.url.origin
            where = (origin.scheme, origin.host, origin.port)  # (httpcore's Origin is not hashable)
            idle = self._idle.get(where)
            for _ in range(3):  # ConnectionNotAvailable: taken as idle, then not; another one
                connection = None
                while idle:
                    candidate = idle.pop()
                    if not candidate.is_closed() and candidate.is_idle() and not candidate.has_expired():
                        connection = candidate
                        break
                    await self._drop(candidate)
                if connection is None:
                    connection = self.create_connection(origin)
                    self._open.add(connection)
                try:
                    response = await connection.handle_async_request(request)
                except httpcore.ConnectionNotAvailable:
                    await self._drop(connection)
                    continue
                except BaseException:
                    await self._release(connection, where)
                    raise
                return httpcore.Response(
                    status=response.status,
                    headers=response.headers,
                    content=_Released(response.stream, connection, self, where),
                    extensions=response.extensions,
                )
            raise httpcore.ConnectionNotAvailable("no connection could take the request")

        async def _drop(self, connection) -> None:
            self._open.discard(connection)
            if not connection.is_closed():
                with AsyncShieldCancellation():
                    await connection.aclose()

        async def _release(self, connection, where: tuple) -> None:
            """A response is closed (or its request failed): keep its connection if it can be reused."""
            if self._shut or connection.is_closed() or not connection.is_idle():
                await self._drop(connection)
                return
            idle = self._idle.setdefault(where, [])
            if len(idle) >= self._max_keepalive_connections:
                await self._drop(connection)
            else:
                idle.append(connection)
            now = time.monotonic()
            if now >= self._sweep_at:  # now and then: close what expired at the bottom of the stacks
                self._sweep_at = now + max(self._keepalive_expiry or 5.0, 1.0)
                expired = []
                for stack in self._idle.values():  # taken off every stack before any await
                    kept = [c for c in stack if not (c.is_closed() or c.has_expired())]
                    if len(kept) < len(stack):
                        expired += [c for c in stack if c not in kept]
                        stack[:] = kept
                for candidate in expired:
                    await self._drop(candidate)

        async def aclose(self) -> None:
            self._shut = True
            connections, self._open, self._idle = list(self._open), set(), {}
            for connection in connections:
                with AsyncShieldCancellation():
                    await connection.aclose()

    class _Released:
        """A response body that hands its connection back to the pool when closed."""

        def __init__(self, stream, connection, pool, where: tuple) -> None:
            self._stream, self._connection, self._pool, self._where = stream, connection, pool, where
            self._closed = False

        async def __aiter__(self):
            try:
                async for part in self._stream:
                    yield part
            except BaseException:
                await self.aclose()
                raise

        async def aclose(self) -> None:
            if self._closed:
                return
            self._closed = True
            with AsyncShieldCancellation():
                if hasattr(self._stream, "aclose"):
                    await self._stream.aclose()
                await self._pool._release(self._connection, self._where)

    _LeanPool = LeanPool
    return LeanPool


_LeanPool: Any = None


def http_client(*, keep_alive: int = POOL_CONNECTIONS, fal_hosts: bool = False, **options):
    """An httpx.AsyncClient as lean as httpx allows: the pool above (no bound on connections in use: the
    calls in flight bound them; `keep_alive` idle ones kept per host) and no cookie jar (fal sets no
    cookies we need; parsing Set-Cookie on every response costs). `fal_hosts`: fal_client's fallback to
    its backup domains when fal's own cannot be connected to. `options` go to httpx.AsyncClient."""
    import httpcore
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=keep_alive)
    transport = httpx.AsyncHTTPTransport(limits=limits)
    if type(transport._pool) is httpcore.AsyncConnectionPool:  # (always, without a proxy argument)
        pool: Any = transport._pool
        pool.__class__ = _lean_pool_class()
        pool._lean_init()
    client = _lean_client_class()(transport=_BackupDomains(transport) if fal_hosts else transport, **options)
    client._cookies = _no_cookies()
    return client


def _lean_client_class():
    """httpx.AsyncClient whose responses are no reference cycles once closed.

    httpx binds every response's body to the response (`response.stream` refers back to it), so each
    response, its request, headers and connection stream become garbage only the cycle collector frees:
    about a third of what a tool call left for it, and a collector pass over a busy server's garbage
    holds the interpreter (and /health) for tens of milliseconds. Here a read response's body is let go
    at once, and a streamed one's when it is closed."""
    global _LeanClient
    if _LeanClient is not None:
        return _LeanClient
    import httpx

    closed = httpx.ByteStream(b"")

    class Unbound(httpx.AsyncByteStream):
        """A streamed response's body: on close, the response lets go of it (and so of the cycle)."""

        def __init__(self, response: httpx.Response) -> None:
            self._response: httpx.Response | None = response
            self._bound = response.stream

        async def __aiter__(self):
            async for part in self._bound:  # type: ignore[union-attr]
                yield part

        async def aclose(self) -> None:
            try:
                await self._bound.aclose()  # type: ignore[union-attr]
            finally:
                if self._response is not None:
                    self._response.stream, self._response = closed, None

    class LeanClient(httpx.AsyncClient):
        async def send(self, request, **kwargs):
            response = await super().send(request, **kwargs)
            response.stream = closed if response.is_closed else Unbound(response)
            return response

    _LeanClient = LeanClient
    return LeanClient


_LeanClient: Any = None


def _no_cookies():
    """A cookie jar that keeps nothing: httpx's client asks it to extract every response's cookies."""
    import httpx

    class NoCookies(httpx.Cookies):
        def extract_cookies(self, response) -> None:
            pass

    return NoCookies()


def _backup_domains_class():
    global _BackupDomainsClass
    if _BackupDomainsClass is not None:
        return _BackupDomainsClass
    import httpx
    from fal_client import client as fal

    class BackupDomains(httpx.AsyncBaseTransport):
        """fal_client's AsyncBackupDomainTransport (its own functions: the connect timeout capped on fal's
        domains, the request redone on the backup domain when fal.run or queue.fal.run cannot be
        connected to) over our transport, without the second httpx client it sends through."""

        def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
            self._transport = transport
            self._hosts = {*fal._BACKUP_DOMAINS, *fal._BACKUP_DOMAINS.values()}

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.host not in self._hosts:  # elsewhere (a sandbox, a proxy): nothing to do
                return await self._transport.handle_async_request(request)
            fal._limit_connect_timeout(request)
            try:
                return await self._transport.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if fal._fallback_url(request.url) is None:
                    raise
                backup = fal._backup_request(request)
                fal._log_backup(request.url, backup.url.host, exc)
                try:
                    return await self._transport.handle_async_request(backup)
                except (httpx.ConnectError, httpx.ConnectTimeout):
                    raise exc from None

        async def aclose(self) -> None:
            await self._transport.aclose()

    _BackupDomainsClass = BackupDomains
    return BackupDomains


_BackupDomainsClass: Any = None


def _BackupDomains(transport):
    return _backup_domains_class()(transport)


def make_client(key: str | None):
    """fal_client's AsyncClient whose requests (fal_client's own and ours: status streams, results) all go
    through one lean httpx client (`http_client`) with the key's credentials."""
    import asyncio

    import fal_client
    import fal_client.client as client_module

    class PooledAsyncClient(fal_client.AsyncClient):
        @property
        def _client(self):
            # Shadows fal_client's lazily cached httpx client: an awaitable of one shared client.
            made = self.__dict__.get("_pooled")
            if made is None:
                made = self.__dict__["_pooled"] = asyncio.ensure_future(self._make_http_client())
            # Shielded: a task cancelled while it awaits the shared client must not cancel the client's
            # making for every later request. (Once made, shield returns the finished future itself.)
            return asyncio.shield(made)

        async def _make_http_client(self):
            auth = await self._auth
            return http_client(
                fal_hosts=True,
                timeout=self.default_timeout,
                headers={"Authorization": auth.header_value, "User-Agent": client_module.USER_AGENT},
            )

    return PooledAsyncClient(key=key)


async def close(client) -> None:
    """Close the httpx client `make_client`'s client made, if it made it."""
    made = client.__dict__.get("_pooled")
    if made is None or made.cancelled():
        return
    try:
        http = await made
    except Exception:  # making it failed (e.g. no key): nothing to close
        return
    await http.aclose()


class StreamUnsupported(Exception):
    """The queue answered the status stream with 404/405/501: follow the job by polling instead."""


async def stream_status(client, handle):
    """fal's status stream (GET {status_url}/stream?logs=1, server-sent events): yields fal_client
    Status objects until COMPLETED, the same objects `handle.status()` returns.

    COMPLETED is yielded last, once the stream has been read to its end (fal ends it right after) and
    the response closed: its connection then goes back to the pool for the result's request instead of
    being closed. Iterate it inside `contextlib.aclosing`, so a stream abandoned early is closed at once."""
    import json

    import anyio
    import httpx
    from fal_client import Completed
    from fal_client.client import _raise_for_status

    http = await client._client
    timeout = httpx.Timeout(30.0, read=STREAM_READ_TIMEOUT)
    completed = None
    async with http.stream(
        "GET", handle.status_url + "/stream", params={"logs": 1}, timeout=timeout
    ) as response:
        no_route = response.status_code == 404 and "x-fal-request-id" not in response.headers
        if no_route or response.status_code in (405, 501):
            raise StreamUnsupported(response.status_code)
        if response.status_code >= 400:
            await response.aread()
            _raise_for_status(response)
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data:"):
                status = handle._parse_status(json.loads(line[5:]))
                if isinstance(status, Completed):
                    completed = status
                    break
                yield status
        if completed is not None:
            with anyio.move_on_after(STREAM_DRAIN_TIMEOUT):
                async for _ in lines:
                    pass
    if completed is not None:
        yield completed


async def request_json(client, method: str, url: str, **kwargs) -> dict:
    """A request to another fal API (the platform API) with the client's credentials.

    Errors are raised as fal_client's FalClientHTTPError, so one retry policy and one
    error mapping serve every fal API; the platform's `{"error": {"message"}}` body is
    unwrapped into its message.
    """
    from fal_client.client import FalClientHTTPError

    http = await client._client
    response = await http.request(method, url, **kwargs)
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message, error_type = error.get("message") or response.text, error.get("type")
        else:
            message = body.get("detail", response.text) if isinstance(body, dict) else response.text
            error_type = None
        raise FalClientHTTPError(
            message, response.status_code, dict(response.headers), response=response, error_type=error_type
        )
    return response.json()
