"""fal webhooks: checking that a POST to our webhook URL is a genuine, fresh outcome sent by fal.

A job submitted to fal's queue with a webhook URL (`?fal_webhook=<url>` on the queue POST, fal_client's
`submit(..., webhook_url=)`) ends with fal POSTing its outcome there (retried up to 10 times over 2
hours while the receiver does not answer 2xx). The body is JSON:

    {"request_id": ..., "gateway_request_id": ..., "status": "OK", "payload": {...the result...}}
    {"request_id": ..., "gateway_request_id": ..., "status": "ERROR", "error": "Invalid status code: 422",
     "payload": {"detail": [...]}}

and `"payload": null, "payload_error": "..."` when fal could not serialize the result as JSON. fal signs
each delivery with ED25519 and sends these headers:

    X-Fal-Webhook-Request-Id   the request id
    X-Fal-Webhook-User-Id      the fal user the request belongs to
    X-Fal-Webhook-Timestamp    Unix time in seconds, when it was signed
    X-Fal-Webhook-Signature    hex of the ED25519 signature of
                               f"{request_id}\\n{user_id}\\n{timestamp}\\n{sha256(body).hexdigest()}"

with its public keys published as a JWKS (DEFAULT_JWKS_URL; OKP keys, curve Ed25519, no key id in the
headers, so each key is tried as fal's own example does).

`WebhookVerifier.verify(headers, body)` returns the parsed `WebhookOutcome` or raises `WebhookRefused`,
whose `status` is what to answer (400 for a malformed request, 401 for a forged, stale, replayed or
foreign one, 503 while fal's keys cannot be fetched, so fal delivers again later) and whose `reason` is
for our logs only: the sender is told nothing more than the status.

What it checks, in order: the four headers (present once, printable, bounded); the timestamp within
`tolerance` seconds of our clock; the signature against fal's keys (fetched with httpx and kept for
`keys_max_age` seconds; when no key we hold verifies, one fetch of the JWKS in case fal rotated them, at
most one per `refetch_interval` seconds, so forged deliveries cannot make us hammer fal); the user id when
`user_id` is given; the body as a fal outcome; and last, that this very delivery was not accepted
before (`ReplayGuard`: an identical request replayed within the tolerance window is refused; only
verified deliveries are recorded, so forgeries cannot fill the record).

What it cannot know: fal signs every account's webhooks with the same keys, so a genuine delivery may be
about a request someone else submitted (to their own account) with our URL as its webhook. Unless
`user_id` pins our fal account, the caller must act only on request ids it submitted itself. And fal
delivers again, freshly signed, when an earlier delivery got no 2xx answer (or the answer was lost): that
is a new delivery here, so recording an outcome must be idempotent per request id.

Nothing is imported or fetched at import time: cryptography, httpx and anyio are imported on first use.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

DEFAULT_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
TOLERANCE = 300.0  # seconds a delivery's timestamp may differ from our clock (fal's docs: 5 minutes)
KEYS_MAX_AGE = 3600.0  # fal's keys are fetched again after this long (its docs allow caching up to 24 h)
REFETCH_INTERVAL = 30.0  # at most one JWKS fetch for a signature no key verifies per this many seconds
FETCH_TIMEOUT = 10.0
MAX_JWKS_BYTES = 1024 * 1024
MAX_ID_LENGTH = 256  # request and user ids (fal's are UUIDs and short ids)
REPLAY_SLACK = 60.0  # a delivery is remembered this long beyond the last moment it could be accepted
REPLAY_MAX_ENTRIES = 100_000

HEADER_REQUEST_ID = "x-fal-webhook-request-id"
HEADER_USER_ID = "x-fal-webhook-user-id"
HEADER_TIMESTAMP = "x-fal-webhook-timestamp"
HEADER_SIGNATURE = "x-fal-webhook-signature"
HEADERS = (HEADER_REQUEST_ID, HEADER_USER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)

# Why a delivery is refused -> the HTTP status to answer it with.
REFUSALS = {
    "missing_header": 400,  # a signature header absent (or sent twice)
    "malformed_header": 400,  # not printable ASCII, too long, a timestamp that is not a number, bad hex
    "stale": 401,  # the timestamp is too far from our clock
    "bad_signature": 401,  # no key of fal's verifies it: forged, tampered with, or signed by another key
    "wrong_user": 401,  # genuine, but for another fal account than `user_id`
    "replayed": 401,  # this very delivery was accepted before
    "bad_body": 400,  # genuine, but not a fal outcome (not a JSON object, no OK/ERROR status)
    "keys_unavailable": 503,  # fal's keys could not be fetched: fal will deliver again later
}


class WebhookRefused(Exception):
    """A delivery not accepted. Answer it with `status` and no detail; `reason` (a key of REFUSALS) is
    for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = REFUSALS[reason]


@dataclass(frozen=True)
class WebhookOutcome:
    """How a fal request ended, as its verified webhook says.

    `ok`: fal's status was "OK". Then `payload` is the request's result, or None with `payload_error`
    set when fal could not serialize the result (fetch it from the queue instead). On "ERROR", `error`
    is fal's message (e.g. "Invalid status code: 422") and `payload` the error details fal passes on
    (e.g. {"detail": [...]}), if any."""

    request_id: str
    ok: bool
    payload: Any
    error: str | None
    payload_error: str | None
    gateway_request_id: str | None
    user_id: str
    timestamp: int  # when fal signed this delivery (Unix seconds)


class ReplayGuard(Protocol):
    """Remembers the deliveries accepted, so an identical one is refused. Shared by every replica that
    receives webhooks (one backed by the job store), else a replay to another replica goes through."""

    async def first_seen(self, key: str, expires_at: float) -> bool:
        """Records `key` until `expires_at` (Unix seconds) and returns True, unless it is recorded
        already (and not expired): then False. Atomic: of two concurrent calls with one key, one wins."""
        ...


class MemoryReplayGuard:
    """A ReplayGuard in this process's memory: at most `max_entries` keys, the soonest to expire dropped
    first when full (only verified deliveries are recorded, so filling it takes that many genuine ones)."""

    def __init__(self, max_entries: int = REPLAY_MAX_ENTRIES, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max(1, max_entries)
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    @property
    def size(self) -> int:  # (not __len__: an empty guard must not be falsy)
        return len(self._expiry)

    async def first_seen(self, key: str, expires_at: float) -> bool:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:  # the expired
            self._drop_soonest()
        if key in self._expiry:
            return False
        while len(self._expiry) >= self.max_entries:
            self._drop_soonest()
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))
        return True

    def _drop_soonest(self) -> None:
        when, key = heapq.heappop(self._heap)
        if self._expiry.get(key) == when:
            del self._expiry[key]


def _b64url(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _printable(value: str, limit: int) -> bool:
    return 0 < len(value) <= limit and value.isascii() and value.isprintable()


class WebhookVerifier:
    """Verifies fal's webhook deliveries against the keys published at `jwks_url`.

    `tolerance`: seconds a delivery's timestamp may be off our clock. `user_id`: accept only deliveries
    for this fal user (None: any). `replay_guard`: where accepted deliveries are remembered (default: in
    this process's memory). `clock`: Unix time now, for the timestamp check, key ages and the replay
    record (tests inject one)."""

    def __init__(
        self,
        jwks_url: str = DEFAULT_JWKS_URL,
        *,
        tolerance: float = TOLERANCE,
        user_id: str | None = None,
        replay_guard: ReplayGuard | None = None,
        clock: Callable[[], float] = time.time,
        keys_max_age: float = KEYS_MAX_AGE,
        refetch_interval: float = REFETCH_INTERVAL,
        fetch_timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.jwks_url = jwks_url
        self.tolerance = tolerance
        self.user_id = user_id
        self.replay_guard: ReplayGuard = (
            MemoryReplayGuard(clock=clock) if replay_guard is None else replay_guard
        )
        self.keys_max_age = keys_max_age
        self.refetch_interval = refetch_interval
        self.fetch_timeout = fetch_timeout
        self._clock = clock
        self._keys: list[Ed25519PublicKey] | None = None  # None: never fetched successfully
        self._generation = 0  # bumped at each successful fetch
        self._loaded_at = -math.inf
        self._refetched_at = -math.inf  # last fetch made because no key verified a signature
        self._failed_at = -math.inf
        self._lock: Any = None  # an anyio.Lock, made on first use (in the running event loop)
        self.fetches = 0  # JWKS fetches attempted, for tests and metrics

    async def verify(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes
    ) -> WebhookOutcome:
        """The outcome a genuine, fresh delivery of fal's carries; else WebhookRefused.

        `headers`: the request's headers, as a mapping or (name, value) pairs (Starlette's Headers
        works); names are matched case-insensitively. `body`: the raw bytes received, before any parsing."""
        request_id, user_id, stamp, signature_hex = _signature_headers(headers)
        if not stamp.isdigit() or len(stamp) > 12:
            raise WebhookRefused("malformed_header")
        timestamp = int(stamp)
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise WebhookRefused("malformed_header") from None
        if len(signature) != 64:
            raise WebhookRefused("malformed_header")
        if abs(self._clock() - timestamp) > self.tolerance:
            raise WebhookRefused("stale")
        body_digest = hashlib.sha256(body).hexdigest()
        message = f"{request_id}\n{user_id}\n{stamp}\n{body_digest}".encode()
        await self._check_signature(signature, message)
        if self.user_id is not None and user_id != self.user_id:
            raise WebhookRefused("wrong_user")
        outcome = _parse_outcome(body, request_id, user_id, timestamp)
        # One delivery = one signed message; keyed by it rather than by the signature's bytes, so that
        # another valid signature of the same message is a replay too.
        key = f"{request_id}:{stamp}:{hashlib.sha256(message).hexdigest()[:32]}"
        if not await self.replay_guard.first_seen(key, timestamp + self.tolerance + REPLAY_SLACK):
            raise WebhookRefused("replayed")
        return outcome

    async def refresh_keys(self) -> bool:
        """Fetches fal's keys now (e.g. at startup, to fail early); True when that worked."""
        async with self._get_lock():
            return await self._fetch()

    # --- keys ---------------------------------------------------------------------------

    def _get_lock(self) -> Any:
        if self._lock is None:
            import anyio

            self._lock = anyio.Lock()
        return self._lock

    async def _check_signature(self, signature: bytes, message: bytes) -> None:
        keys, generation = await self._current_keys()
        if _verifies(keys, signature, message):
            return
        # No key we hold verifies it: fal may have rotated its keys. One fetch per interval.
        async with self._get_lock():
            if (
                self._generation == generation
                and self._clock() - max(self._refetched_at, self._failed_at) >= self.refetch_interval
            ):
                self._refetched_at = self._clock()
                await self._fetch()
            fresh = self._keys or []
            changed = self._generation != generation
        if self._keys is None:
            raise WebhookRefused("keys_unavailable")
        if not (changed and _verifies(fresh, signature, message)):
            raise WebhookRefused("bad_signature")

    async def _current_keys(self) -> tuple[list[Ed25519PublicKey], int]:
        if self._keys is None or self._clock() - self._loaded_at > self.keys_max_age:
            async with self._get_lock():
                expired = self._keys is None or self._clock() - self._loaded_at > self.keys_max_age
                if expired and self._clock() - self._failed_at >= self.refetch_interval:
                    await self._fetch()
        if self._keys is None:
            raise WebhookRefused("keys_unavailable")
        return self._keys, self._generation

    async def _fetch(self) -> bool:
        """Fetches the JWKS; on failure the keys held are kept. Call with the lock held."""
        self.fetches += 1
        try:
            keys = _parse_jwks(await _get_json(self.jwks_url, self.fetch_timeout))
        except (OSError, ValueError) as error:
            self._failed_at = self._clock()
            log.warning("could not fetch fal's webhook keys from %s: %s", self.jwks_url, error)
            return False
        self._keys = keys
        self._generation += 1
        self._loaded_at = self._clock()
        log.info("fetched %d fal webhook key(s) from %s", len(keys), self.jwks_url)
        return True


def _signature_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[str, str, str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in pairs:
        lower = name.lower()
        if lower in HEADERS:
            if lower in found:  # sent twice: which one was signed?
                raise WebhookRefused("missing_header")
            found[lower] = value.strip()
    if any(not found.get(name) for name in HEADERS):
        raise WebhookRefused("missing_header")
    request_id, user_id, stamp, signature = (found[name] for name in HEADERS)
    limits = (MAX_ID_LENGTH, MAX_ID_LENGTH, 12, 128)
    if not all(
        _printable(value, limit)
        for value, limit in zip((request_id, user_id, stamp, signature), limits, strict=True)
    ):
        raise WebhookRefused("malformed_header")
    return request_id, user_id, stamp, signature


def _verifies(keys: list[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    for key in keys:
        try:
            key.verify(signature, message)
            return True
        except InvalidSignature:
            continue
    return False


def _parse_jwks(document: dict[str, Any]) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS (others skipped); ValueError when it holds none."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no list of keys")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        x = entry.get("x")
        try:
            raw = _b64url(x) if isinstance(x, str) else b""
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except ValueError:
            log.info("skipping a malformed key of fal's JWKS")
    if not keys:
        raise ValueError("the JWKS holds no Ed25519 key")
    return keys


def _parse_outcome(body: bytes, request_id: str, user_id: str, timestamp: int) -> WebhookOutcome:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRefused("bad_body") from None
    if not isinstance(data, dict) or data.get("status") not in ("OK", "ERROR"):
        raise WebhookRefused("bad_body")
    body_id = data.get("request_id")
    gateway_id = data.get("gateway_request_id")
    error, payload_error = data.get("error"), data.get("payload_error")
    return WebhookOutcome(
        request_id=body_id if isinstance(body_id, str) and body_id else request_id,
        ok=data["status"] == "OK",
        payload=data.get("payload"),
        error=None if error is None else str(error),
        payload_error=None if payload_error is None else str(payload_error),
        gateway_request_id=gateway_id if isinstance(gateway_id, str) else None,
        user_id=user_id,
        timestamp=timestamp,
    )


async def _get_json(url: str, timeout: float) -> dict[str, Any]:
    from .documents import get_json

    return await get_json(url, timeout=timeout, limit=MAX_JWKS_BYTES)
