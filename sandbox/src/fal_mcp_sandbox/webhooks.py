"""Webhooks as fal sends them: a job submitted with `?fal_webhook=<url>` has its outcome POSTed there when
it ends, signed with the sandbox's own ED25519 key, whose public half it serves as a JWKS.

The request, as fal's:

    POST <url>
    Content-Type: application/json
    X-Fal-Webhook-Request-Id: <request id>
    X-Fal-Webhook-User-Id: <user id>             ("sandbox-user" unless set)
    X-Fal-Webhook-Timestamp: <Unix seconds>      (signed anew for each attempt)
    X-Fal-Webhook-Signature: <hex of the ED25519 signature of
                              "<request id>\\n<user id>\\n<timestamp>\\n<sha256 hex of the body>">

    {"request_id": ..., "gateway_request_id": ..., "status": "OK", "payload": <the result>}
    {"request_id": ..., "gateway_request_id": ..., "status": "ERROR", "error": "Invalid status code: <n>",
     "payload": <the error body the result route answers>}

A delivery answered with anything but 2xx (or not answered) is tried again, `retries` times (fal: 10 over
2 hours; here 10, after 0.05 s, doubling up to 1 s). The keys are served at /.well-known/jwks.json
(`FAL_MCP_WEBHOOK_JWKS_URL` in `Sandbox.env()`); `rotate()` makes a new signing key.

Faults, added like the others (`state.add_fault(webhook=<mode>, endpoint=..., times=..., delay=...)` or
POST /_sandbox/faults) and taken by the next job submitted with a webhook:

- "delay": held until released (`release()`, POST /_sandbox/webhooks/release) or `delay` seconds passed;
- "duplicate": the same signed request sent twice (a replay);
- "redeliver": sent again, signed anew (timestamp + 1 s), as fal does when an answer was lost;
- "drop": never sent;
- "reorder": held until another job's delivery was made (or released, or `delay` seconds passed), so it
  arrives after a job that ended later;
- "bad_signature": the signature is corrupted;
- "payload_error": `"payload": null` and a `payload_error`, as fal sends a result it cannot serialize.

Records (`deliveries`, GET /_sandbox/webhooks): one per job followed, with its state (pending, held,
delivered, failed, dropped) and each request sent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import threading
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.responses import JSONResponse, Response

log = logging.getLogger("fal_mcp_sandbox")

USER_ID = "sandbox-user"
RETRIES = 10
BACKOFF = 0.05  # seconds before the first retry; doubling after each
MAX_BACKOFF = 1.0
SEND_TIMEOUT = 10.0
FINAL_STATES = ("delivered", "failed", "dropped")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """What fal signs: the request id, user id, timestamp and the SHA-256 hex of the body, one a line."""
    return "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()


class Signer:
    """The sandbox's webhook keys: the newest signs, the ones kept are published too."""

    def __init__(self) -> None:
        self._keys: list[tuple[str, Ed25519PrivateKey]] = []  # (kid, key), newest last
        self._lock = threading.Lock()
        self.rotate()

    def rotate(self, keep_previous: bool = True) -> str:
        """A new signing key; the previous ones stay published unless `keep_previous` is false. Its kid."""
        key = Ed25519PrivateKey.generate()
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        kid = hashlib.sha256(raw).hexdigest()[:16]
        with self._lock:
            self._keys = [*self._keys, (kid, key)] if keep_previous else [(kid, key)]
        return kid

    @property
    def kids(self) -> list[str]:
        with self._lock:
            return [kid for kid, _ in self._keys]

    def jwks(self) -> dict:
        with self._lock:
            keys = list(self._keys)
        entries = []
        for kid, key in keys:
            raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            entries.append({"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": kid, "use": "sig"})
        return {"keys": entries}

    def sign(self, message: bytes) -> str:
        with self._lock:
            key = self._keys[-1][1]
        return key.sign(message).hex()


class Webhooks:
    """Sends the webhooks of one sandbox app (`state.webhooks`)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.signer = Signer()
        self.user_id = USER_ID
        self.retries = RETRIES
        self.backoff = BACKOFF
        self.deliveries: list[dict] = []
        self.jwks_served = 0
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._held: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self._reorder_waiters: list[asyncio.Event] = []
        self._client: Any = None
        self._closing = False
        state.webhooks = self

    # --- following jobs -----------------------------------------------------------------

    def follow(self, job: Any, task: asyncio.Task, url: str | None) -> None:
        """Send `job`'s outcome to `url` when `task` (the job) ends. The next webhook fault rule matching
        its endpoint is taken now."""
        if not url:
            return
        rule = self.state._take(lambda r: "webhook" in r and self.state._endpoint_matches(r, job.endpoint_id))
        record = {
            "request_id": job.request_id,
            "endpoint_id": job.endpoint_id,
            "url": url,
            "fault": (rule or {}).get("webhook"),
            "state": "pending",
            "outcome": None,
            "sent": [],  # {"attempt", "timestamp", "status"} per request made
        }
        with self._lock:
            self.deliveries.append(record)
        task.add_done_callback(lambda _: self._job_ended(job, record, rule or {}))

    def _job_ended(self, job: Any, record: dict, rule: dict) -> None:
        if self._closing:
            return
        body: dict[str, Any] = {"request_id": job.request_id, "gateway_request_id": job.request_id}
        if job.error:
            body.update(
                status="ERROR", error=f"Invalid status code: {job.error['status']}", payload=job.error["body"]
            )
        else:
            body.update(status="OK", payload=job.result)
        if rule.get("webhook") == "payload_error":
            body.update(payload=None, payload_error="Response payload is not JSON serializable")
        self._update(record, outcome=body["status"])
        if rule.get("webhook") == "drop":
            self._update(record, state="dropped")
            return
        task = asyncio.get_running_loop().create_task(self._deliver(record, json.dumps(body).encode(), rule))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, record: dict, body: bytes, rule: dict) -> None:
        mode = rule.get("webhook")
        delay = float(rule["delay"]) if "delay" in rule else None
        if mode in ("delay", "reorder"):
            await self._hold(record, delay, reorder=mode == "reorder")
        ok = await self._send(record, body, mode)
        if ok and mode == "duplicate":
            await self._post(record, record["sent"][-1]["headers"], body, "duplicate")
        elif ok and mode == "redeliver":
            stamp = str(int(record["sent"][-1]["timestamp"]) + 1)
            await self._post(record, self._headers(record, body, stamp), body, "redeliver")
        self._update(record, state="delivered" if ok else "failed")
        if mode != "reorder":
            for waiter in self._reorder_waiters:
                waiter.set()

    async def _hold(self, record: dict, delay: float | None, reorder: bool) -> None:
        event = asyncio.Event()
        with self._lock:
            self._held[record["request_id"]] = (asyncio.get_running_loop(), event)
        if reorder:
            self._reorder_waiters.append(event)
        self._update(record, state="held")
        try:
            await asyncio.wait_for(event.wait(), delay)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                self._held.pop(record["request_id"], None)
            if reorder:
                self._reorder_waiters.remove(event)
        self._update(record, state="pending")

    def release(self, request_id: str | None = None) -> int:
        """Held deliveries (delay, reorder) go out: the one for `request_id`, else all. How many."""
        with self._lock:
            held = [self._held[request_id]] if request_id in self._held else []
            if request_id is None:
                held = list(self._held.values())
        for loop, event in held:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # its loop is closed: the sandbox stopped, the delivery with it
                pass
        return len(held)

    # --- sending ------------------------------------------------------------------------

    def _headers(self, record: dict, body: bytes, stamp: str, corrupt: bool = False) -> dict[str, str]:
        request_id = record["request_id"]
        signature = self.signer.sign(signed_message(request_id, self.user_id, stamp, body))
        if corrupt:
            signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
        return {
            "content-type": "application/json",
            "x-fal-webhook-request-id": request_id,
            "x-fal-webhook-user-id": self.user_id,
            "x-fal-webhook-timestamp": stamp,
            "x-fal-webhook-signature": signature,
        }

    async def _send(self, record: dict, body: bytes, mode: str | None) -> bool:
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF))
            headers = self._headers(record, body, str(int(time.time())), corrupt=mode == "bad_signature")
            status = await self._post(record, headers, body, attempt)
            if isinstance(status, int) and 200 <= status < 300:
                return True
        return False

    async def _post(self, record: dict, headers: dict[str, str], body: bytes, attempt: Any) -> int | str:
        import httpx

        if self._client is None:
            # No cap on connections: with httpx's default (100), a burst of deliveries beyond it stalled
            # waiting for the pool (issue 21's 1,000-job burst).
            self._client = httpx.AsyncClient(
                timeout=SEND_TIMEOUT,
                trust_env=False,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
            )
        status: int | str
        try:
            status = (await self._client.post(record["url"], content=body, headers=headers)).status_code
        except httpx.HTTPError as error:
            status = f"{type(error).__name__}: {error}"
        sent = {"attempt": attempt, "timestamp": headers["x-fal-webhook-timestamp"], "status": status}
        with self._lock:
            record["sent"].append({**sent, "headers": headers})
        return status

    def _update(self, record: dict, **changes: Any) -> None:
        with self._lock:
            record.update(changes)

    # --- the app's routes, reset and shutdown ------------------------------------------

    def snapshot(self) -> list[dict]:
        """JSON-ready copies of the delivery records (headers left out)."""
        with self._lock:
            return [
                {**record, "sent": [{k: v for k, v in s.items() if k != "headers"} for s in record["sent"]]}
                for record in self.deliveries
            ]

    async def jwks(self, call: Any) -> Response:
        with self._lock:
            self.jwks_served += 1
        return JSONResponse(self.signer.jwks())

    async def control_get(self, call: Any) -> Response:
        return JSONResponse(
            {
                "deliveries": self.snapshot(),
                "kids": self.signer.kids,
                "jwks_served": self.jwks_served,
                "user_id": self.user_id,
                "retries": self.retries,
                "backoff": self.backoff,
            }
        )

    async def control_post(self, call: Any, action: str) -> Response:
        """rotate ({"keep_previous": bool}), release ({"request_id"}), config ({retries, backoff, user_id})."""
        try:
            body = json.loads(call.body) if call.body.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if action == "rotate":
                return JSONResponse({"kid": self.signer.rotate(bool(body.get("keep_previous", True)))})
            if action == "release":
                return JSONResponse({"released": self.release(body.get("request_id"))})
            self.configure(**body)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse({"user_id": self.user_id, "retries": self.retries, "backoff": self.backoff})

    def configure(
        self, retries: int | None = None, backoff: float | None = None, user_id: str | None = None
    ) -> None:
        if retries is not None:
            if int(retries) < 0:
                raise ValueError("retries must not be negative")
            self.retries = int(retries)
        if backoff is not None:
            if float(backoff) < 0:
                raise ValueError("backoff must not be negative")
            self.backoff = float(backoff)
        if user_id is not None:
            self.user_id = str(user_id)

    def reset(self) -> None:
        """Forget the records, let held deliveries go, restore the settings. The keys stay."""
        self.release()
        with self._lock:
            self.deliveries.clear()
        self.user_id, self.retries, self.backoff = USER_ID, RETRIES, BACKOFF

    def shutdown(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        client, self._client = self._client, None
        if client is not None:
            try:
                asyncio.get_running_loop().create_task(client.aclose())
            except RuntimeError:  # no loop running: nothing to close it in
                pass
