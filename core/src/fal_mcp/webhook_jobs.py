"""Jobs followed by fal's webhooks (FAL_MCP_PUBLIC_URL set): no connection to fal held while they run.

A job is submitted with `webhook_url=<FAL_MCP_PUBLIC_URL>/fal/webhook`. Its follower (the replica whose
call waits on it, runner.py) then waits on an event, not on a status stream. The outcome arrives at
whichever replica fal reaches (`receive`, behind POST /fal/webhook in http.py):

1. verified (webhooks.WebhookVerifier: fal's signature, timestamp tolerance; replays refused through
   the job store, so every replica shares the record: `store.first_seen`);
2. acted on only for a request id of a job in the store (one we submitted); an unknown one is looked
   up once more a second later (a job fal finished before we recorded it), then answered 200 and
   ignored;
3. kept in the store, once per request id (`store.put_outcome`: the first one stays), and the waiter
   in this process, if any, woken at once. A follower on another replica finds it by one batched store
   read per STORE_POLL seconds for all its waiting jobs (not one per job).

The follower then finishes the tool's work and records the job's end as any job's (`store.finish`, on
the condition that it still follows the job: a job ends once, its outputs saved once). A follower lost
meanwhile: another replica's sweep claims the job and `follow`s it here again: the outcome is in the
store already.

While waiting, fal's status is asked every FAL_MCP_WEBHOOK_CHECK_INTERVAL seconds (30; one short
request, for the progress heartbeats: queue position, latest log line). When it says the job is done
and no webhook has come FAL_MCP_WEBHOOK_GRACE seconds (30) later, the result is fetched from the queue
(a dropped webhook). An outcome without a payload (fal's `payload_error`) is fetched from the queue too;
a failed one is fetched there as well, so that its error reads exactly as a streamed job's does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .webhooks import WebhookRefused, WebhookVerifier

if TYPE_CHECKING:
    from .fal_keys import FalKey
    from .gateway import FalGateway
    from .server import ToolTable

log = logging.getLogger(__name__)

PATH = "/fal/webhook"
MAX_BODY = 1024 * 1024  # bytes of a webhook delivery (fal's outcomes carry URLs, not media)
STORE_POLL = 1.0  # seconds between the batched store reads for outcomes received by other replicas
UNKNOWN_RECHECK = 1.0  # seconds before an unknown request id is looked up a second time
OUTCOME_KEPT = 24 * 3600.0  # seconds a received outcome is kept in the store
WAITING = "In queue at fal (its end is pushed to this server)"  # progress until fal's status is asked


class _Waiter:
    def __init__(self) -> None:
        self.event = anyio.Event()
        self.outcome: dict[str, Any] | None = None
        self.count = 0  # waits on it in this process


class WebhookJobs:
    """The webhook side of one ToolTable (table.webhooks, and gateway.webhooks)."""

    def __init__(self, table: ToolTable) -> None:
        self.table = table
        self.settings = table.settings
        url = self.settings.webhook_url
        if url is None:
            raise ValueError("webhooks need FAL_MCP_PUBLIC_URL")
        self.url = url
        self.verifier = WebhookVerifier(self.settings.urls["webhook_jwks"], replay_guard=table.store)
        self._waiting: dict[str, _Waiter] = {}
        self._poller: asyncio.Task | None = None
        self.stats = {"received": 0, "refused": 0, "unknown": 0, "recorded": 0, "fallbacks": 0}

    # -- receiving ---------------------------------------------------------------------------------

    async def receive(self, headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes) -> None:
        """Act on one delivery; WebhookRefused (its `status` is the answer) when it is not genuine."""
        self.stats["received"] += 1
        try:
            outcome = await self.verifier.verify(headers, body)
        except WebhookRefused as refused:
            self.stats["refused"] += 1
            log.info("fal webhook refused (%s): answered %d", refused.reason, refused.status)
            raise
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        signed = [value.strip() for name, value in pairs if name.lower() == "x-fal-webhook-request-id"]
        if signed != [outcome.request_id]:  # the body names another request than the signed header
            self.stats["unknown"] += 1
            log.info("fal webhook for request %s names another in its body: ignored", signed)
            return
        store = self.table.store
        record = await store.by_request(outcome.request_id)
        if record is None:  # fal may have finished it before we recorded its request id
            await anyio.sleep(UNKNOWN_RECHECK)
            record = await store.by_request(outcome.request_id)
        if record is None:
            self.stats["unknown"] += 1
            log.info("fal webhook for request %s, not one of ours: ignored", outcome.request_id)
            return
        if record.finished:
            return  # a duplicate, or the fallback fetched it first
        kept = json.dumps(
            {
                "ok": outcome.ok,
                "payload": outcome.payload,
                "error": outcome.error,
                "payload_error": outcome.payload_error,
            }
        )
        if await store.put_outcome(outcome.request_id, kept, time.time() + OUTCOME_KEPT):
            self.stats["recorded"] += 1
            log.info("fal webhook: request %s (job %s) ended", outcome.request_id, record.job_id)
        self._wake(outcome.request_id, kept)

    def _wake(self, request_id: str, kept: str) -> None:
        waiter = self._waiting.get(request_id)
        if waiter is not None and waiter.outcome is None:
            waiter.outcome = json.loads(kept)
            waiter.event.set()

    async def _poll(self) -> None:
        """While jobs wait here: one store read per STORE_POLL for the outcomes other replicas received."""
        try:
            while self._waiting:
                await anyio.sleep(STORE_POLL)
                pending = [rid for rid, waiter in self._waiting.items() if waiter.outcome is None]
                if not pending:
                    continue
                try:
                    found = await self.table.store.outcomes(pending)
                except Exception as exc:  # tried again at the next poll
                    log.warning("could not read webhook outcomes from the job store: %s", exc)
                    continue
                for request_id, kept in found.items():
                    self._wake(request_id, kept)
        finally:
            self._poller = None

    # -- waiting -------------------------------------------------------------------------------------

    async def wait(self, gateway: FalGateway, handle: Any, reporter: Any) -> tuple[dict, tuple[str, ...]]:
        """The output of the job behind `handle` (fal_client's request handle), once its webhook (or the
        fallback) says it ended; a failed job raises as gateway._follow does. `reporter`: the gateway's,
        told each status seen and marked finished once fal says the job ended."""
        from fal_client import Completed

        request_id = handle.request_id
        waiter = self._waiting.get(request_id)
        if waiter is None:
            waiter = self._waiting[request_id] = _Waiter()
        waiter.count += 1
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        try:
            found = await self.table.store.outcomes([request_id])  # arrived already (a job followed again)
            if request_id in found:
                self._wake(request_id, found[request_id])
            if waiter.outcome is None and reporter.progress is not None and reporter.last is None:
                reporter.last = WAITING
                await reporter.progress(WAITING)
            every, grace = self.settings.webhook_check, self.settings.webhook_grace
            # The first check spread over the interval: a burst of jobs does not ask fal all at once.
            next_check = anyio.current_time() + every * random.uniform(0.5, 1.0)
            done_at: float | None = None  # when fal's status first said the job had ended
            status: Any = None
            while waiter.outcome is None:
                until = next_check if done_at is None else min(next_check, done_at + grace)
                with anyio.move_on_after(max(0.0, until - anyio.current_time())):
                    await waiter.event.wait()
                if waiter.outcome is not None:
                    break
                now = anyio.current_time()
                if done_at is not None and now >= done_at + grace:
                    self.stats["fallbacks"] += 1
                    log.warning(
                        "no fal webhook for request %s %g s after it ended: fetching its result",
                        request_id,
                        grace,
                    )
                    return await self._fetch(gateway, handle, reporter, status)
                if now >= next_check:
                    next_check = now + every
                    status = await gateway._call(
                        "status", lambda: handle.status(with_logs=True), idempotent=True
                    )
                    if isinstance(status, Completed):
                        done_at = now if done_at is None else done_at
                    else:
                        await reporter.report(status)
            return await self._settle(gateway, handle, reporter, waiter.outcome)
        finally:
            waiter.count -= 1
            if waiter.count == 0:
                self._waiting.pop(request_id, None)

    async def _fetch(
        self, gateway: FalGateway, handle: Any, reporter: Any, status: Any
    ) -> tuple[dict, tuple]:
        from . import falclient

        reporter.finished = True
        if getattr(status, "error", None):
            await gateway._raise_failure(handle, status)
        data = await gateway._call("result", lambda: falclient.fetch_result(handle), idempotent=True)
        logs = tuple(entry.get("message", "") for entry in getattr(status, "logs", None) or ())
        return data, logs

    async def _settle(
        self, gateway: FalGateway, handle: Any, reporter: Any, outcome: dict[str, Any]
    ) -> tuple[dict, tuple]:
        from types import SimpleNamespace

        reporter.finished = True
        payload = outcome.get("payload")
        if outcome.get("ok") and isinstance(payload, dict) and not outcome.get("payload_error"):
            return payload, ()
        # fal could not send the result (payload_error), or the job failed: the queue has it, and a
        # failure's details as a streamed job gets them
        status = SimpleNamespace(error=None, logs=None)
        if not outcome.get("ok"):
            status = SimpleNamespace(
                error=outcome.get("error") or "The model failed", error_type=None, logs=None
            )
        return await self._fetch(gateway, handle, reporter, status)

    async def status_now(self, endpoint_id: str, request_id: str, key: FalKey | None = None) -> str | None:
        """fal's status of a job, asked once (check_job on a job followed by webhook): the progress message
        a stream would have given, or None when it cannot be had."""
        from fal_client import Completed

        from .gateway import _Reporter

        messages: list[str] = []

        async def keep(message: str) -> None:
            messages.append(message)

        try:
            async with self.table.gateway.leased(key) as client:
                handle = await client.get_handle(endpoint_id, request_id)
                status = await handle.status(with_logs=True)
        except Exception as exc:
            log.info("could not ask fal for the status of request %s: %s", request_id, exc)
            return None
        if isinstance(status, Completed):
            return "Finished at fal; its result is on its way"
        await _Reporter(keep).report(status)
        return messages[-1] if messages else None

    async def aclose(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            try:
                await poller
            except BaseException:  # noqa: S110 (cancelled: stopped either way)
                pass


async def handle_request(webhooks: WebhookJobs, scope: dict, receive: Any, send: Any) -> None:
    """The ASGI handler of POST /fal/webhook: no bearer token (fal cannot send ours), no Host or Origin
    check (fal's Host is the public name); the body capped at MAX_BODY. 200 with an empty body when the
    delivery was taken (or ignored: not our request), else the refusal's status, empty: no detail."""
    status = 200
    if scope["method"] != "POST":
        status = 405
    else:
        body = bytearray()
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY:
            status = 413
        else:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if len(body) > MAX_BODY:
                    status = 413
                    break
                if not message.get("more_body"):
                    break
        if status == 200:
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            try:
                await webhooks.receive(headers, bytes(body))
            except WebhookRefused as refused:
                status = refused.status
            except Exception:
                log.exception("fal webhook: could not be recorded (fal delivers it again)")
                status = 503
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


class WebhookRoute:
    """ASGI middleware put before every other (http.build_app): POST /fal/webhook (or the path of
    FAL_MCP_PUBLIC_URL's webhook URL, behind a proxy that keeps a prefix) goes to `handle_request`,
    past the Host/Origin and token checks, which fal's deliveries cannot pass; the rest to `app`."""

    def __init__(self, app: Any, webhooks: WebhookJobs) -> None:
        from urllib.parse import urlsplit

        self.app = app
        self.webhooks = webhooks
        self.paths = {PATH, urlsplit(webhooks.url).path}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            return await handle_request(self.webhooks, scope, receive, send)
        return await self.app(scope, receive, send)
