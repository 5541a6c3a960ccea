"""The one adaptation of fal_client's internals.

fal_client 1.0.x has no setting for its hosts: they are module constants of
`fal_client.client`, read at call time. Pointing it at another deployment
(the offline sandbox, a proxy) means setting them here. It also retries on
its own, ignoring Retry-After; the gateway owns retries, so that is turned
off. `tests/test_falclient_adapter.py` fails if fal_client changes under this.
"""

from __future__ import annotations

from collections.abc import Mapping

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


# Connections kept to fal. fal_client's default pool keeps only 20 alive, so hundreds of polling
# jobs keep reconnecting; and httpcore scans every pooled connection (a syscall each) per request,
# so the pool must not grow with the number of jobs either: the gateway caps requests in flight
# at MAX_IN_FLIGHT, below this.
POOL_CONNECTIONS = 20
MAX_IN_FLIGHT = 16
STREAM_KEEP_ALIVE = 8
# fal sends a comment line every 15 s on a status stream; silence for longer means a dead connection.
STREAM_READ_TIMEOUT = 60.0


def make_client(key: str | None):
    """fal_client's AsyncClient, with a connection pool sized for many concurrent jobs."""
    import asyncio

    import fal_client
    import fal_client.client as client_module
    import httpx

    class PooledAsyncClient(fal_client.AsyncClient):
        @property
        def _client(self):
            # Shadows fal_client's lazily cached httpx client: an awaitable of one shared client.
            made = self.__dict__.get("_pooled")
            if made is None:
                made = self.__dict__["_pooled"] = asyncio.ensure_future(self._make_http_client())
            # Shielded: a task cancelled while it awaits the shared client must not cancel the client's
            # making for every later request.
            return asyncio.shield(made)

        async def _make_http_client(
            self, connections: int | None = POOL_CONNECTIONS, keep_alive: int = POOL_CONNECTIONS
        ) -> httpx.AsyncClient:
            auth = await self._auth
            limits = httpx.Limits(max_connections=connections, max_keepalive_connections=keep_alive)
            transport = client_module.AsyncBackupDomainTransport(
                transport=httpx.AsyncHTTPTransport(limits=limits)
            )
            return httpx.AsyncClient(
                transport=transport,
                timeout=self.default_timeout,
                headers={"Authorization": auth.header_value, "User-Agent": client_module.USER_AGENT},
            )

        @property
        def streams(self):
            """A second client for status streams: each holds a connection for a whole job, so they get
            their own pool, unbounded, instead of starving short requests."""
            made = self.__dict__.get("_streams")
            if made is None:
                made = self.__dict__["_streams"] = asyncio.ensure_future(
                    self._make_http_client(connections=None, keep_alive=STREAM_KEEP_ALIVE)
                )
            return asyncio.shield(made)  # as _client

    return PooledAsyncClient(key=key)


async def close(client) -> None:
    """Close the httpx clients `make_client`'s client made, if it made them."""
    for name in ("_pooled", "_streams"):
        made = client.__dict__.get(name)
        if made is None or made.cancelled():
            continue
        try:
            http = await made
        except Exception:  # making it failed (e.g. no key): nothing to close
            continue
        await http.aclose()


class StreamUnsupported(Exception):
    """The queue answered the status stream with 404/405/501: follow the job by polling instead."""


async def stream_status(client, handle):
    """fal's status stream (GET {status_url}/stream?logs=1, server-sent events): yields fal_client
    Status objects until COMPLETED, the same objects `handle.status()` returns."""
    import json

    import httpx
    from fal_client.client import _raise_for_status

    http = await client.streams
    timeout = httpx.Timeout(30.0, read=STREAM_READ_TIMEOUT)
    async with http.stream(
        "GET", handle.status_url + "/stream", params={"logs": 1}, timeout=timeout
    ) as response:
        no_route = response.status_code == 404 and "x-fal-request-id" not in response.headers
        if no_route or response.status_code in (405, 501):
            raise StreamUnsupported(response.status_code)
        if response.status_code >= 400:
            await response.aread()
            _raise_for_status(response)
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                yield handle._parse_status(json.loads(line[5:]))


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
