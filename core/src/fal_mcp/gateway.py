"""The one place that talks to fal: queue jobs, uploads, retries, timeouts, cancels.

Every model call goes through the queue (submit, follow status, fetch the
result) so that a call can report progress and be cancelled. No paid job
is left running behind an abandoned call: on timeout, client cancel or
disconnect, or a status that can no longer be followed, the fal request is
cancelled before the error propagates.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from . import falclient
from .config import Settings
from .errors import ModelFailedError, ToolError, describe, scrub
from .fal_keys import ClientPool, FalKey, KeyRefused, missing_key_message

if TYPE_CHECKING:
    import httpx

    from .uploads import OpenFile, Source

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]
# How long a cancel may take before we give up on it (it runs shielded from cancellation).
CANCEL_TIMEOUT = 10.0
# The longest a submit (shielded from cancellation, with its retries) may take.
SUBMIT_TIMEOUT = 120.0
# Bounds on what the gateway remembers: uploaded contents' URLs, cached platform answers.
UPLOADS_KEPT = 4096
CACHE_KEPT = 512


class NotSubmitted(ToolError):
    """fal did not take the job: it refused the submit (4xx, or 502-504 after the retries), or could not
    be reached.
    Any other failure of a submit (a timeout, a connection lost after sending) may have left a job
    running on fal, paid for."""


def _refused_before_taking(exc: BaseException) -> bool:
    import httpx
    from fal_client.client import FalClientHTTPError

    if isinstance(exc, FalClientHTTPError):  # as in the retry policy: 502-504 were not acted on
        return 400 <= exc.status_code < 500 or exc.status_code in (502, 503, 504)
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))


@dataclass(frozen=True)
class FalResult:
    endpoint_id: str
    request_id: str
    data: dict[str, Any]
    logs: tuple[str, ...] = ()


@dataclass
class GatewayStats:
    """Counts of what the gateway asked of fal, for tests and benchmarks."""

    requests: dict[str, int] = field(default_factory=dict)
    retries: int = 0

    def count(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1


class _Reporter:
    """Turns job statuses into progress messages, sending each change once."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.last: str | None = None
        self.logs: tuple[str, ...] = ()
        self.finished = False  # the job completed (successfully or not): there is nothing to cancel

    async def report(self, status) -> None:
        from fal_client import InProgress, Queued

        if isinstance(status, Queued):
            message = f"In queue, position {status.position}"
        elif isinstance(status, InProgress) and status.logs:
            message = f"Running: {status.logs[-1].get('message', '')}"
        else:
            message = "Running"
        if self.progress is not None and message != self.last:
            await self.progress(message)
        self.last = message


def _retry_delay(attempt: int, retry_after: str | None, cap: float) -> float:
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), cap)
        except ValueError:
            pass  # an HTTP date: fall back to backoff
    return min(0.25 * 2**attempt, cap) * random.uniform(0.75, 1.25)


class FalGateway:
    """One per server run. Use as `async with FalGateway(settings) as gateway:`.

    Every method that reaches fal takes the call's `key` (fal_keys.py): None is the server's own key,
    which a server in FAL_MCP_KEY_MODE header or file never uses (KeyRefused instead). Each user key has
    its fal client in a bounded pool, leased for the length of each operation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = GatewayStats()
        self._client = None
        self.pool = ClientPool(self._make_client, falclient.close)
        # (key digest, sha256 of content) -> fal URL (or the upload in progress), the most recent UPLOADS_KEPT
        self._uploaded: OrderedDict[tuple[str, str], Any] = OrderedDict()
        # platform API answers by key digest and request, with expiry, the most recent CACHE_KEPT
        self._cached: OrderedDict[tuple, tuple[float, Any]] = OrderedDict()
        self._downloads: httpx.AsyncClient | None = None
        self._streams_supported = True
        # Jobs followed by fal's webhooks (webhook_jobs.WebhookJobs), set by the ToolTable when
        # FAL_MCP_PUBLIC_URL is; None: each job is followed by a status stream.
        self.webhooks: Any = None

    async def __aenter__(self) -> FalGateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await falclient.close(client)
        await self.pool.aclose()
        downloads, self._downloads = self._downloads, None
        if downloads is not None:
            await downloads.aclose()

    def downloads(self) -> httpx.AsyncClient:
        """One httpx client for downloading media (previews, local image work, saved outputs).
        It never follows redirects by itself: media.download checks every hop."""
        if self._downloads is None:
            # falclient's lean client (a pool without per-request rescans, no cookie jar), no credentials
            self._downloads = falclient.http_client(follow_redirects=False, timeout=60)
        return self._downloads

    @property
    def client(self):
        """fal_client's AsyncClient with the server's key, made on first use: importing fal_client costs
        startup time."""
        if self._client is None:
            falclient.configure(self.settings.urls)
            self._client = falclient.make_client(self.settings.fal_key)
        return self._client

    def _make_client(self, key: str):
        falclient.configure(self.settings.urls)
        return falclient.make_client(key)

    @asynccontextmanager
    async def leased(self, key: FalKey | None) -> AsyncIterator[Any]:
        """The fal client for `key`, not closed while the block runs (None: the server's key, in
        FAL_MCP_KEY_MODE=server only)."""
        if key is None:
            if self.settings.key_mode != "server":  # fail closed: never the server's key for a user
                raise KeyRefused(missing_key_message(self.settings))
            yield self.client
            return
        client = self.pool.acquire(key)
        try:
            yield client
        finally:
            await self.pool.release(key)

    # -- retries -----------------------------------------------------------------

    async def _call(self, kind: str, operation: Callable[[], Awaitable[Any]], *, idempotent: bool) -> Any:
        """Run one fal request with our retry policy.

        429 and 502-504 are retried for every request (the request was not
        acted on); other 5xx and dropped connections only where repeating is
        harmless (status, result, cancel). Retry-After is honoured, capped.
        """
        import httpx
        from fal_client.client import FalClientHTTPError

        for attempt in range(self.settings.max_retries + 1):
            self.stats.count(kind)
            try:
                return await operation()
            except FalClientHTTPError as exc:
                status = exc.status_code
                retryable = status in (429, 502, 503, 504) or (idempotent and status >= 500)
                if not retryable or attempt == self.settings.max_retries:
                    # deliberate: _error reads it back (getattr) to say how many attempts were made
                    exc.retries = attempt  # type: ignore[attr-defined]
                    raise
                headers = {k.lower(): v for k, v in (exc.response_headers or {}).items()}
                delay = _retry_delay(attempt, headers.get("retry-after"), self.settings.max_retry_after)
            except (httpx.TransportError, ConnectionResetError) as exc:
                before_sending = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if not (idempotent or before_sending) or attempt == self.settings.max_retries:
                    # deliberate: _error reads it back (getattr) to say how many attempts were made
                    exc.retries = attempt  # type: ignore[union-attr]
                    raise
                delay = _retry_delay(attempt, None, self.settings.max_retry_after)
            self.stats.retries += 1
            log.info("fal %s failed (attempt %d); retrying in %.2fs", kind, attempt + 1, delay)
            await anyio.sleep(delay)
        raise AssertionError("unreachable")

    def _error(self, exc: BaseException, endpoint_id: str) -> ToolError:
        """A failure talking to fal as a ToolError (of kind "failed" unless it was one already), with the
        HTTP status fal answered, if it did."""
        from fal_client.client import FalClientHTTPError

        message = scrub(
            describe(exc, endpoint_id=endpoint_id, retries=getattr(exc, "retries", 0)),
            self.settings.secrets(),
        )
        if isinstance(exc, ToolError):
            return ToolError(message, kind=exc.kind, status=exc.status)
        return ToolError(message, status=exc.status_code if isinstance(exc, FalClientHTTPError) else None)

    # -- queue jobs ----------------------------------------------------------------

    async def run(
        self,
        endpoint_id: str,
        arguments: dict[str, Any],
        *,
        timeout: float,
        progress: Progress | None = None,
        on_submit: Callable[[str], Awaitable[None]] | None = None,
        cancel_when_cancelled: Callable[[], bool] | None = None,
        key: FalKey | None = None,
    ) -> FalResult:
        """Submit `arguments` to `endpoint_id`, wait for it, return its output.

        `on_submit(request_id)` runs once fal has accepted the job (to record it). If this task is
        cancelled, the fal request is cancelled too unless `cancel_when_cancelled()` says no (a server
        shutting down leaves its jobs to be resumed). Raises ToolError with a readable message for
        every failure. `key`: whose fal key (see the class's doc).
        """
        async with self.leased(key) as client:
            return await self._run(
                client, endpoint_id, arguments, timeout, progress, on_submit, cancel_when_cancelled, key
            )

    async def _run(
        self,
        client,
        endpoint_id: str,
        arguments: dict[str, Any],
        timeout: float,
        progress: Progress | None,
        on_submit: Callable[[str], Awaitable[None]] | None,
        cancel_when_cancelled: Callable[[], bool] | None,
        key: FalKey | None,
    ) -> FalResult:
        handle, reporter = None, _Reporter(progress)
        try:
            with anyio.fail_after(timeout):
                # Shielded: a cancel arriving while fal takes the job waits until its request id is known
                # and recorded, so the job can then be cancelled instead of running on unseen.
                with anyio.CancelScope(shield=True), anyio.fail_after(min(timeout, SUBMIT_TIMEOUT)):
                    webhooks = self.webhooks  # FAL_MCP_PUBLIC_URL: fal pushes the outcome (webhook_jobs.py)
                    submitted = await self._call(
                        "submit",
                        lambda: client.submit(
                            endpoint_id, arguments, webhook_url=webhooks.url if webhooks else None
                        ),
                        idempotent=False,
                    )
                    handle = submitted
                    if on_submit is not None:
                        await on_submit(submitted.request_id)
                if webhooks is not None:  # no connection held while it runs
                    data, logs = await webhooks.wait(self, submitted, reporter)
                else:
                    logs = await self._follow(client, submitted, reporter)
                    data = await self._call(
                        "result", lambda: falclient.fetch_result(submitted), idempotent=True
                    )
            return FalResult(endpoint_id, submitted.request_id, data, logs)
        except TimeoutError:
            cancelled = ""
            if handle is not None:
                cancelled = " The fal request was cancelled."
                if not await self.cancel(endpoint_id, handle.request_id, key=key):
                    cancelled = " Cancelling the fal request failed (it may have finished, or may still run)."
            raise ToolError(
                f"{endpoint_id} did not finish within {timeout:g} s.{cancelled} "
                "Raise FAL_MCP_TIMEOUT (or FAL_MCP_TIMEOUT_<CATEGORY>) for longer jobs.",
                kind="timeout",
            ) from None
        except anyio.get_cancelled_exc_class():
            wanted = cancel_when_cancelled() if cancel_when_cancelled is not None else True
            if handle is not None and not reporter.finished and wanted:  # the MCP client cancelled
                await self.cancel(endpoint_id, handle.request_id, key=key)
            raise
        except Exception as exc:
            error = exc if isinstance(exc, ToolError) else self._error(exc, endpoint_id)
            if handle is not None and not reporter.finished:  # it can no longer be followed: stop it
                was_cancelled = await self.cancel(endpoint_id, handle.request_id, key=key)
                error = ToolError(
                    f"{error} "
                    + (
                        "The fal request was cancelled."
                        if was_cancelled
                        else "Cancelling the fal request failed (it may still run)."
                    ),
                    kind=error.kind,
                    status=error.status,
                )
            elif handle is None and _refused_before_taking(exc):
                error = NotSubmitted(str(error), kind=error.kind, status=error.status)
            raise error from None

    async def follow(
        self,
        endpoint_id: str,
        request_id: str,
        *,
        timeout: float,
        progress: Progress | None = None,
        key: FalKey | None = None,
    ) -> FalResult:
        """Follow a job submitted earlier (by this process before a restart, or by another replica) to its
        end and return its output; it is never cancelled from here. ToolError on failure or timeout."""
        async with self.leased(key) as client:
            return await self._follow_again(client, endpoint_id, request_id, timeout, progress)

    async def _follow_again(
        self, client, endpoint_id: str, request_id: str, timeout: float, progress: Progress | None
    ) -> FalResult:
        reporter = _Reporter(progress)
        try:
            handle = await client.get_handle(endpoint_id, request_id)
            with anyio.fail_after(timeout):
                if self.webhooks is not None:  # submitted with a webhook: its outcome, no connection held
                    data, logs = await self.webhooks.wait(self, handle, reporter)
                else:
                    logs = await self._follow(client, handle, reporter)
                    data = await self._call("result", lambda: falclient.fetch_result(handle), idempotent=True)
        except TimeoutError:
            raise ToolError(
                f"{endpoint_id} did not finish within {timeout:g} s of following it again", kind="timeout"
            ) from None
        except ToolError:
            raise
        except Exception as exc:
            raise self._error(exc, endpoint_id) from None
        return FalResult(endpoint_id, request_id, data, logs)

    # -- jobs by request id (any replica can follow them) ------------------------------------------

    async def status(self, endpoint_id: str, request_id: str, *, key: FalKey | None = None):
        """fal_client's Queued / InProgress / Completed for a request; a failed job raises ToolError."""
        from fal_client import Completed

        try:
            async with self.leased(key) as client:
                handle = await client.get_handle(endpoint_id, request_id)
                status = await self._call("status", lambda: handle.status(with_logs=True), idempotent=True)
                if isinstance(status, Completed) and status.error:
                    await self._raise_failure(handle, status)
            return status
        except ToolError:
            raise
        except Exception as exc:
            raise self._error(exc, endpoint_id) from None

    async def result(self, endpoint_id: str, request_id: str, *, key: FalKey | None = None) -> FalResult:
        try:
            async with self.leased(key) as client:
                handle = await client.get_handle(endpoint_id, request_id)
                data = await self._call("result", lambda: falclient.fetch_result(handle), idempotent=True)
        except Exception as exc:
            raise self._error(exc, endpoint_id) from None
        return FalResult(endpoint_id, request_id, data)

    async def image_size(self, url: str) -> tuple[int, int]:
        """Width and height of the image at `url` (for estimates priced by the megapixel), read from its
        header; EstimateError if it cannot be read."""
        import io

        from PIL import Image

        from .budget import EstimateError
        from .media import IMAGE_FORMATS, MediaError, fetch

        try:
            fetched = await fetch(url, trusted_urls=list(self.settings.urls.values()), http=self.downloads())
            with Image.open(io.BytesIO(fetched.data), formats=IMAGE_FORMATS) as image:  # the header only
                return image.size
        except MediaError as exc:
            raise EstimateError(f"its input image could not be read to size the output ({exc})") from None
        except Exception:
            raise EstimateError(
                "its input image could not be read to size the output (not an image)"
            ) from None

    async def _follow(self, client, handle, reporter: _Reporter) -> tuple[str, ...]:
        """Follow the job until it completes, reporting each change of its status.

        fal's status stream pushes every change as it happens: one request per job, and completion
        seen at once. Where the queue has no stream (a proxy, an older deployment), poll instead,
        every poll_interval (so completion is seen within ~100 ms, like fal_client's own polling).
        """
        if self._streams_supported:
            try:
                return await self._call(
                    "status",
                    lambda: self._follow_stream(client, handle, reporter),
                    idempotent=True,
                )
            except falclient.StreamUnsupported:
                self._streams_supported = False
                log.info("fal's queue has no status stream here; polling instead")
        while True:
            status = await self._call("status", lambda: handle.status(with_logs=True), idempotent=True)
            if await self._completed(handle, status, reporter):
                return reporter.logs
            await anyio.sleep(self.settings.poll_interval)

    async def _follow_stream(self, client, handle, reporter: _Reporter) -> tuple[str, ...]:
        from contextlib import aclosing

        async with aclosing(falclient.stream_status(client, handle)) as statuses:
            async for status in statuses:
                if await self._completed(handle, status, reporter):
                    return reporter.logs
        raise ConnectionResetError("fal's status stream ended before the job completed")

    async def _completed(self, handle, status, reporter: _Reporter) -> bool:
        """Report a status; True once the job is done (a failed job raises)."""
        from fal_client import Completed

        if isinstance(status, Completed):
            reporter.finished = True
            if status.error:
                await self._raise_failure(handle, status)
            reporter.logs = tuple(entry.get("message", "") for entry in status.logs or ())
            return True
        await reporter.report(status)
        return False

    async def _raise_failure(self, handle, status) -> None:
        """A job that completed with an error: its result carries the details (e.g. 422 with each
        field), so raise that; fall back to the status's own error message."""
        from fal_client.client import FalClientHTTPError

        from .errors import detail_text

        self.stats.count("result")
        try:
            await falclient.fetch_result(handle)
        except FalClientHTTPError as exc:
            if exc.status_code == 422:
                raise
            raise ModelFailedError(
                detail_text(exc.message) or status.error, exc.error_type or status.error_type
            ) from None
        except Exception:
            pass  # the status's own message will do
        raise ModelFailedError(status.error, status.error_type)

    async def cancel(self, endpoint_id: str, request_id: str, *, key: FalKey | None = None) -> bool:
        """Cancel a fal request; shielded, so it runs even while our own task is being cancelled."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_TIMEOUT):
            try:
                async with self.leased(key) as client:
                    await self._call(
                        "cancel", lambda: client.cancel(endpoint_id, request_id), idempotent=True
                    )
                return True
            except Exception as exc:
                log.warning(
                    "could not cancel fal request %s: %s",
                    request_id,
                    scrub(describe(exc, endpoint_id=endpoint_id), self.settings.secrets()),
                )
        return False

    # -- storage -----------------------------------------------------------------------

    async def upload(
        self, data: bytes, content_type: str, file_name: str | None = None, *, key: FalKey | None = None
    ) -> str:
        """Store `data` on fal's CDN; return its URL. fal_client's protocol (uploads.py), with bodies that
        hold no reference to `data` once sent (fal_client's keep it until the cycle collector runs)."""
        from . import memory, uploads

        source = uploads.InMemory(file_name, data)
        try:
            async with self.leased(key) as client:
                return await self._call(
                    "upload", lambda: uploads.upload_file(client, source, content_type), idempotent=True
                )
        except KeyRefused:
            raise
        except Exception as exc:
            raise self._error(exc, "fal storage") from None
        finally:
            memory.large_work_done(len(data))

    async def upload_file(self, file: Source, content_type: str, *, key: FalKey | None = None) -> str:
        """Store an opened local file on fal's CDN, streamed from disk a chunk or part at a time
        (uploads.py: never the whole file in memory); return its URL. MediaError if the file shrank."""
        from . import memory, uploads
        from .media import MediaError

        try:
            async with self.leased(key) as client:
                return await self._call(
                    "upload", lambda: uploads.upload_file(client, file, content_type), idempotent=True
                )
        except (KeyRefused, MediaError):
            raise
        except Exception as exc:
            raise self._error(exc, "fal storage") from None
        finally:
            memory.large_work_done(file.size)

    async def upload_once(
        self, data: bytes, content_type: str, file_name: str | None = None, *, key: FalKey | None = None
    ) -> str:
        """`upload`, but the same content is stored only once per run and key; concurrent uploads of the
        same content wait for the first instead of uploading it again."""
        import hashlib

        if len(data) > 1024 * 1024:  # hashing megabytes: off the event loop (hashlib lets go of the GIL)
            hashed = (await anyio.to_thread.run_sync(hashlib.sha256, data)).hexdigest()
        else:
            hashed = hashlib.sha256(data).hexdigest()
        digest = (key.digest if key is not None else "", hashed)
        return await self._once(digest, lambda: self.upload(data, content_type, file_name, key=key))

    async def upload_file_once(self, file: OpenFile, content_type: str, *, key: FalKey | None = None) -> str:
        """`upload_file`, once per content and key as `upload_once` (the file hashed from disk first, in a
        worker thread)."""
        digest = (key.digest if key is not None else "", await anyio.to_thread.run_sync(file.sha256))
        return await self._once(digest, lambda: self.upload_file(file, content_type, key=key))

    async def _once(self, digest: tuple[str, str], upload: Callable[[], Awaitable[str]]) -> str:
        known = self._uploaded.get(digest)
        if isinstance(known, str):
            self._uploaded.move_to_end(digest)
            return known
        if known is not None:  # an upload of this content is under way: wait for its outcome
            await known.wait()
            return await self._once(digest, upload)
        done = anyio.Event()
        self._uploaded[digest] = done
        try:
            url = await upload()
        except BaseException:
            del self._uploaded[digest]  # the waiters try again themselves
            raise
        finally:
            done.set()
        self._uploaded[digest] = url
        while len(self._uploaded) > UPLOADS_KEPT:
            self._uploaded.popitem(last=False)
        return url

    # -- platform API (models, pricing, usage) -------------------------------------------

    async def platform(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, Any]] | None = None,
        json: Any = None,
        ttl: float = 0,
        key: FalKey | None = None,
    ) -> Any:
        """Call fal's platform API (FAL_MCP_PLATFORM_URL + path) with `key`; GET answers cached for `ttl`
        seconds, per key. Raises ToolError with a readable message."""
        import json as jsonlib
        import time

        cache_key = (
            key.digest if key is not None else "",
            method,
            path,
            tuple(params or ()),
            jsonlib.dumps(json, sort_keys=True),
        )
        cached = self._cached.get(cache_key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        url = self.settings.urls["platform"] + path
        try:
            async with self.leased(key) as client:
                data = await self._call(
                    "platform",
                    lambda: falclient.request_json(client, method, url, params=params, json=json, timeout=30),
                    idempotent=True,
                )
        except KeyRefused:
            raise
        except Exception as exc:
            raise self._error(exc, "fal's platform API") from None
        if ttl > 0:
            self._cached[cache_key] = (time.monotonic() + ttl, data)
            while len(self._cached) > CACHE_KEPT:
                self._cached.popitem(last=False)
        return data
