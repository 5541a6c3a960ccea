"""fal webhooks (issue 21, phase A): the sandbox sends signed webhooks as fal does (sandbox webhooks.py),
and fal_mcp.webhooks verifies them: genuine deliveries accepted, tampered, foreign, stale, replayed and
unsigned ones refused, rotated keys fetched again; each delivery fault of the sandbox seen by a receiver
on 127.0.0.1. Deterministic: every wait is for an event (a delivery, a record's state), with a generous
deadline that only fails a hung test; nothing is asserted about how long anything took."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fal_mcp.webhooks import HEADERS, MemoryReplayGuard, WebhookRefused, WebhookVerifier
from fal_mcp_sandbox import Sandbox
from fal_mcp_sandbox.endpoints import Endpoint
from fal_mcp_sandbox.webhooks import signed_message

pytestmark = pytest.mark.anyio

ENDPOINT = Endpoint("test/echo", kind="text")
DEADLINE = 20.0  # seconds before a wait counts as hung


@pytest.fixture
def sb():
    sandbox = Sandbox.start_in_thread(endpoints=[ENDPOINT], job_seconds=0, log_lines=0)
    sandbox.state.webhooks.configure(backoff=0)
    yield sandbox
    sandbox.state.reset()  # held deliveries are released
    sandbox.stop_thread(timeout=0)  # asked to stop (its deliveries cancelled); not waited for


class Clock:
    """Unix time with an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Receiver:
    """A webhook receiver on 127.0.0.1: records every delivery and, given a verifier, answers as the
    server will (200, or the refusal's status with an empty body)."""

    def __init__(self, verifier: WebhookVerifier | None = None) -> None:
        self.verifier = verifier
        self.deliveries: list[dict] = []  # {"headers", "body", "outcome" | "refused"}
        self.answers: list[int] = []  # statuses to answer the next deliveries with, before verifying
        self._arrived = asyncio.Condition()
        self.url = ""

    async def __call__(self, scope, receive, send) -> None:
        from starlette.requests import Request
        from starlette.responses import Response

        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        entry: dict = {"headers": dict(request.headers), "body": body}
        status = self.answers.pop(0) if self.answers else 200
        if status == 200 and self.verifier is not None:
            try:
                entry["outcome"] = await self.verifier.verify(request.headers, body)
            except WebhookRefused as refused:
                entry["refused"], status = refused.reason, refused.status
        await Response(b"", status_code=status)(scope, receive, send)
        async with self._arrived:
            self.deliveries.append(entry)
            self._arrived.notify_all()

    async def wait(self, count: int) -> list[dict]:
        """Once `count` deliveries have arrived: all so far."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.deliveries) >= count), DEADLINE)
        return list(self.deliveries)

    def of(self, request_id: str) -> list[dict]:
        return [d for d in self.deliveries if d["headers"]["x-fal-webhook-request-id"] == request_id]


@pytest.fixture
async def serve():
    """serve(receiver): runs it on 127.0.0.1 (a free port) until the test ends; sets receiver.url."""
    from fal_mcp_sandbox.server import bind
    from fal_mcp_sandbox.server import serve as run

    servers = []

    async def start(receiver: Receiver) -> Receiver:
        sock = bind("127.0.0.1", 0)
        server, task = await run(receiver, sock)  # any ASGI app
        servers.append((server, task))
        receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}/fal/webhook"
        return receiver

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


async def submit(sb: Sandbox, webhook_url: str | None, prompt: str = "hello") -> str:
    url = f"{sb.base_url}/queue/{ENDPOINT.id}"
    params = {"fal_webhook": webhook_url} if webhook_url else {}
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.post(
            url, params=params, json={"prompt": prompt}, headers={"Authorization": "Key sandbox-key"}
        )
    response.raise_for_status()
    return response.json()["request_id"]


async def record_of(sb: Sandbox, request_id: str, *states: str) -> dict:
    """The sandbox's delivery record of `request_id`, once it is in one of `states`."""
    deadline = time.monotonic() + DEADLINE
    while True:
        records = [r for r in sb.state.webhooks.snapshot() if r["request_id"] == request_id]
        if records and records[0]["state"] in states:
            return records[0]
        assert time.monotonic() < deadline, f"delivery of {request_id} not in {states}: {records}"
        await asyncio.sleep(0.01)


async def job_status(sb: Sandbox, request_id: str) -> str:
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(
            f"{sb.base_url}/queue/{ENDPOINT.app}/requests/{request_id}/status",
            headers={"Authorization": "Key sandbox-key"},
        )
    return response.json()["status"]


async def completed(sb: Sandbox, request_id: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while await job_status(sb, request_id) != "COMPLETED":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def verifier_for(sb: Sandbox, **options) -> WebhookVerifier:
    return WebhookVerifier(sb.env()["FAL_MCP_WEBHOOK_JWKS_URL"], **options)


async def genuine(sb: Sandbox, serve) -> tuple[dict, bytes]:
    """The headers and body of one genuine delivery, caught by a receiver that verifies nothing."""
    receiver = await serve(Receiver())
    await submit(sb, receiver.url)
    (delivery,) = await receiver.wait(1)
    return delivery["headers"], delivery["body"]


async def refusal(verifier: WebhookVerifier, headers, body: bytes) -> WebhookRefused:
    with pytest.raises(WebhookRefused) as caught:
        await verifier.verify(headers, body)
    return caught.value


# --- the sandbox's webhooks, as fal's ----------------------------------------------------


async def test_jwks_and_setting(sb):
    url = sb.env()["FAL_MCP_WEBHOOK_JWKS_URL"]
    assert url == f"{sb.base_url}/.well-known/jwks.json"
    async with httpx.AsyncClient(trust_env=False) as http:
        keys = (await http.get(url)).json()["keys"]
    assert [(k["kty"], k["crv"]) for k in keys] == [("OKP", "Ed25519")]
    assert len(keys[0]["x"]) == 43  # 32 bytes, base64url without padding


async def test_delivery_shape_and_verification(sb, serve):
    receiver = await serve(Receiver(verifier_for(sb)))
    request_id = await submit(sb, receiver.url)
    (delivery,) = await receiver.wait(1)
    headers, body = delivery["headers"], json.loads(delivery["body"])
    assert headers["content-type"] == "application/json"
    assert headers["x-fal-webhook-request-id"] == request_id
    assert headers["x-fal-webhook-user-id"] == "sandbox-user"
    assert abs(int(headers["x-fal-webhook-timestamp"]) - time.time()) < 300
    assert len(bytes.fromhex(headers["x-fal-webhook-signature"])) == 64
    assert body["status"] == "OK" and body["request_id"] == body["gateway_request_id"] == request_id
    async with httpx.AsyncClient(trust_env=False) as http:
        result = await http.get(
            f"{sb.base_url}/queue/{ENDPOINT.app}/requests/{request_id}",
            headers={"Authorization": "Key sandbox-key"},
        )
    assert body["payload"] == result.json()
    outcome = delivery["outcome"]
    assert outcome.request_id == request_id and outcome.ok and outcome.payload == result.json()
    assert outcome.error is None and outcome.payload_error is None and outcome.user_id == "sandbox-user"
    record = await record_of(sb, request_id, "delivered")
    assert record["outcome"] == "OK" and [s["status"] for s in record["sent"]] == [200]


async def test_error_outcome(sb, serve):
    sb.state.add_fault(outcome="model_error", status=422, message="prompt is too short")
    receiver = await serve(Receiver(verifier_for(sb)))
    request_id = await submit(sb, receiver.url)
    (delivery,) = await receiver.wait(1)
    outcome = delivery["outcome"]
    assert outcome.request_id == request_id and not outcome.ok
    assert outcome.error == "Invalid status code: 422"
    assert outcome.payload["detail"][0]["msg"] == "prompt is too short"


async def test_no_webhook_without_fal_webhook(sb):
    request_id = await submit(sb, None)
    await completed(sb, request_id)
    assert sb.state.webhooks.snapshot() == []


async def test_fal_client_submit_with_webhook_url(sb, serve):
    """fal_client's own way (`submit(..., webhook_url=)`: the fal_webhook query parameter) works."""
    import fal_client
    import fal_client.client as client

    receiver = await serve(Receiver(verifier_for(sb)))
    client.QUEUE_URL_FORMAT = sb.env()["FAL_MCP_QUEUE_URL"] + "/"
    fal = fal_client.AsyncClient(key="sandbox-key")
    handle = await fal.submit(ENDPOINT.id, {"prompt": "a fox"}, webhook_url=receiver.url)
    (delivery,) = await receiver.wait(1)
    assert delivery["outcome"].request_id == handle.request_id and delivery["outcome"].ok


# --- verification against the sandbox's signatures ---------------------------------------


async def test_genuine_accepted_then_replay_refused(sb, serve):
    headers, body = await genuine(sb, serve)
    verifier = verifier_for(sb)
    outcome = await verifier.verify(headers, body)
    assert outcome.ok and outcome.timestamp == int(headers["x-fal-webhook-timestamp"])
    replayed = await refusal(verifier, headers, body)
    assert (replayed.reason, replayed.status) == ("replayed", 401)
    # Header names in any case, as pairs too
    other = verifier_for(sb)
    assert (await other.verify([(k.upper(), v) for k, v in headers.items()], body)).ok


async def test_tampered_body_refused(sb, serve):
    headers, body = await genuine(sb, serve)
    verifier = verifier_for(sb)
    for tampered in (body.replace(b'"OK"', b'"ERROR"'), body + b" ", b""):
        refused = await refusal(verifier, headers, tampered)
        assert (refused.reason, refused.status) == ("bad_signature", 401)
    # Each signed field counts: another request id, user id or timestamp breaks the signature.
    for name, value in (
        ("x-fal-webhook-request-id", "another-request"),
        ("x-fal-webhook-user-id", "another-user"),
        ("x-fal-webhook-timestamp", str(int(headers["x-fal-webhook-timestamp"]) - 1)),
    ):
        assert (await refusal(verifier, {**headers, name: value}, body)).reason == "bad_signature"
    assert (await verifier.verify(headers, body)).ok  # the genuine one still is


async def test_wrong_key_refused_with_one_refetch(sb, serve):
    headers, body = await genuine(sb, serve)
    clock = Clock()
    verifier = verifier_for(sb, clock=clock)
    stranger = Ed25519PrivateKey.generate()
    message = signed_message(
        headers["x-fal-webhook-request-id"],
        headers["x-fal-webhook-user-id"],
        headers["x-fal-webhook-timestamp"],
        body,
    )
    forged = {**headers, "x-fal-webhook-signature": stranger.sign(message).hex()}
    refused = await refusal(verifier, forged, body)
    assert (refused.reason, refused.status) == ("bad_signature", 401)
    assert verifier.fetches == 2  # the keys, then once more in case fal rotated them
    for _ in range(5):  # more forgeries within the interval: no more fetches
        await refusal(verifier, forged, body)
    assert verifier.fetches == 2
    clock.offset = 31  # after the interval: one more
    await refusal(verifier, forged, body)
    assert verifier.fetches == 3


async def test_stale_and_future_timestamps_refused(sb, serve):
    headers, body = await genuine(sb, serve)
    stamp = int(headers["x-fal-webhook-timestamp"])
    for now, accepted in (
        (stamp + 301, False),
        (stamp - 301, False),
        (stamp + 299, True),
        (stamp - 299, True),
    ):
        verifier = verifier_for(sb, clock=lambda now=now: now)
        if accepted:
            assert (await verifier.verify(headers, body)).ok
        else:
            refused = await refusal(verifier, headers, body)
            assert (refused.reason, refused.status) == ("stale", 401)
            assert verifier.fetches == 0  # refused before any key is needed


async def test_missing_and_malformed_headers_refused(sb, serve):
    headers, body = await genuine(sb, serve)
    verifier = verifier_for(sb)
    for name in HEADERS:
        missing = {k: v for k, v in headers.items() if k != name}
        assert (await refusal(verifier, missing, body)).status == 400
        assert (await refusal(verifier, {**headers, name: ""}, body)).reason == "missing_header"
    signature = headers["x-fal-webhook-signature"]
    for name, value in (
        ("x-fal-webhook-signature", "zz" + signature[2:]),  # not hex
        ("x-fal-webhook-signature", signature[:-2]),  # 63 bytes
        ("x-fal-webhook-signature", signature + "00"),  # 65 bytes
        ("x-fal-webhook-timestamp", "soon"),
        ("x-fal-webhook-timestamp", "1e9"),
        ("x-fal-webhook-request-id", "x" * 300),
        ("x-fal-webhook-user-id", "user\tid"),
    ):
        refused = await refusal(verifier, {**headers, name: value}, body)
        assert (refused.reason, refused.status) == ("malformed_header", 400), (name, value)
    twice = [*headers.items(), ("X-Fal-Webhook-Signature", signature)]
    assert (await refusal(verifier, twice, body)).reason == "missing_header"
    assert verifier.fetches == 0
    assert (await verifier.verify(headers, body)).ok


async def test_wrong_user_refused(sb, serve):
    headers, body = await genuine(sb, serve)
    refused = await refusal(verifier_for(sb, user_id="our-fal-user"), headers, body)
    assert (refused.reason, refused.status) == ("wrong_user", 401)
    assert (await verifier_for(sb, user_id="sandbox-user").verify(headers, body)).ok


async def test_signed_but_not_an_outcome_refused(sb):
    verifier = verifier_for(sb)
    stamp = str(int(time.time()))
    for body in (b"not json", b"[1, 2]", b'{"request_id": "r1", "status": "DONE"}'):
        signature = sb.state.webhooks.signer.sign(signed_message("r1", "sandbox-user", stamp, body))
        headers = dict(
            zip(HEADERS, ("r1", "sandbox-user", stamp, signature), strict=True),
        )
        refused = await refusal(verifier, headers, body)
        assert (refused.reason, refused.status) == ("bad_body", 400)


async def test_rotated_key_fetched_again(sb, serve):
    receiver = await serve(Receiver())
    clock = Clock()
    verifier = verifier_for(sb, clock=clock)
    await submit(sb, receiver.url)
    (first,) = await receiver.wait(1)
    assert (await verifier.verify(first["headers"], first["body"])).ok
    assert verifier.fetches == 1
    async with httpx.AsyncClient(trust_env=False) as http:
        rotated = await http.post(f"{sb.base_url}/_sandbox/webhooks/rotate", json={"keep_previous": False})
    assert sb.state.webhooks.signer.kids == [rotated.json()["kid"]]
    await submit(sb, receiver.url)
    second = (await receiver.wait(2))[1]
    assert (await verifier.verify(second["headers"], second["body"])).ok  # unknown key: fetched again
    assert verifier.fetches == 2
    # The old key is gone from the JWKS and, now fetched again, from the verifier: what it signed (a
    # delivery never seen by this verifier) no longer verifies.
    fresh = verifier_for(sb)
    assert (await refusal(fresh, first["headers"], first["body"])).reason == "bad_signature"


async def test_keys_unavailable_is_503_then_recovers(sb, serve):
    headers, body = await genuine(sb, serve)
    sb.state.add_fault(route="jwks", status=503)
    clock = Clock()
    verifier = verifier_for(sb, clock=clock)
    refused = await refusal(verifier, headers, body)
    assert (refused.reason, refused.status) == ("keys_unavailable", 503)
    await refusal(verifier, headers, body)  # within the interval: not fetched again
    assert verifier.fetches == 1
    clock.offset = 31
    assert (await verifier.verify(headers, body)).ok
    assert verifier.fetches == 2
    unreachable = WebhookVerifier("http://127.0.0.1:9/jwks.json", fetch_timeout=2)
    assert (await refusal(unreachable, headers, body)).reason == "keys_unavailable"


async def test_replay_guard_expires_and_is_bounded():
    now = [1000.0]
    guard = MemoryReplayGuard(max_entries=3, clock=lambda: now[0])
    assert await guard.first_seen("a", 1010)
    assert not await guard.first_seen("a", 1010)
    now[0] = 1011  # expired: seen as new
    assert await guard.first_seen("a", 1020)
    for key in ("b", "c", "d"):
        assert await guard.first_seen(key, 1100)
    assert guard.size == 3
    assert await guard.first_seen("a", 1020)  # the soonest to expire was dropped to make room


async def test_replay_guard_is_pluggable(sb, serve):
    """A shared guard (as the job store will be) refuses a replay sent to another verifier (replica)."""
    headers, body = await genuine(sb, serve)
    shared = MemoryReplayGuard()
    one, two = verifier_for(sb, replay_guard=shared), verifier_for(sb, replay_guard=shared)
    assert (await one.verify(headers, body)).ok
    assert (await refusal(two, headers, body)).reason == "replayed"
    key = next(iter(shared._expiry))
    assert key.startswith(
        headers["x-fal-webhook-request-id"] + ":" + headers["x-fal-webhook-timestamp"] + ":"
    )


# --- the sandbox's delivery faults, at a receiver ------------------------------------------


async def test_drop_sends_nothing(sb, serve):
    receiver = await serve(Receiver(verifier_for(sb)))
    sb.state.add_fault(webhook="drop")
    dropped = await submit(sb, receiver.url)
    await record_of(sb, dropped, "dropped")
    kept = await submit(sb, receiver.url)
    (delivery,) = await receiver.wait(1)
    await record_of(sb, kept, "delivered")
    assert delivery["outcome"].request_id == kept and receiver.of(dropped) == []


async def test_duplicate_second_copy_is_a_replay(sb, serve):
    receiver = await serve(Receiver(verifier_for(sb)))
    sb.state.add_fault(webhook="duplicate")
    request_id = await submit(sb, receiver.url)
    first, second = await receiver.wait(2)
    assert first["headers"] == second["headers"] and first["body"] == second["body"]
    assert first["outcome"].request_id == request_id
    assert second["refused"] == "replayed"
    record = await record_of(sb, request_id, "delivered")
    assert [s["status"] for s in record["sent"]] == [200, 401]


async def test_redelivery_freshly_signed_is_accepted_again(sb, serve):
    """fal delivers again, signed anew, when its first delivery's answer was lost: both verify, so the
    server must record an outcome idempotently per request id."""
    receiver = await serve(Receiver(verifier_for(sb)))
    sb.state.add_fault(webhook="redeliver")
    request_id = await submit(sb, receiver.url)
    first, second = await receiver.wait(2)
    assert first["outcome"].request_id == second["outcome"].request_id == request_id
    assert first["headers"]["x-fal-webhook-signature"] != second["headers"]["x-fal-webhook-signature"]


async def test_delay_holds_the_delivery_until_released(sb, serve):
    receiver = await serve(Receiver(verifier_for(sb)))
    sb.state.add_fault(webhook="delay")
    request_id = await submit(sb, receiver.url)
    await record_of(sb, request_id, "held")
    await completed(sb, request_id)  # the job is done, its webhook not sent
    assert receiver.deliveries == []
    async with httpx.AsyncClient(trust_env=False) as http:
        released = await http.post(
            f"{sb.base_url}/_sandbox/webhooks/release", json={"request_id": request_id}
        )
    assert released.json() == {"released": 1}
    (delivery,) = await receiver.wait(1)
    assert delivery["outcome"].request_id == request_id


async def test_delay_by_seconds(sb, serve):
    receiver = await serve(Receiver(verifier_for(sb)))
    sb.state.add_fault(webhook="delay", delay=0.05)
    request_id = await submit(sb, receiver.url)
    (delivery,) = await receiver.wait(1)  # goes out by itself
    assert delivery["outcome"].request_id == request_id


async def test_reorder_arrives_after_a_later_job(sb, serve):
    receiver = await serve(Receiver(verifier_for(sb)))
    sb.state.add_fault(webhook="reorder")
    early = await submit(sb, receiver.url, "first")
    await record_of(sb, early, "held")
    await completed(sb, early)
    late = await submit(sb, receiver.url, "second")
    first, second = await receiver.wait(2)
    assert (first["outcome"].request_id, second["outcome"].request_id) == (late, early)


async def test_bad_signature_refused_and_retried(sb, serve):
    receiver = await serve(Receiver(verifier_for(sb)))
    sb.state.webhooks.configure(retries=2)
    sb.state.add_fault(webhook="bad_signature")
    request_id = await submit(sb, receiver.url)
    deliveries = await receiver.wait(3)
    assert [d.get("refused") for d in deliveries] == ["bad_signature"] * 3
    record = await record_of(sb, request_id, "failed")
    assert [s["status"] for s in record["sent"]] == [401, 401, 401]


async def test_failed_delivery_retried(sb, serve):
    receiver = await serve(Receiver(verifier_for(sb)))
    receiver.answers = [500, 503]  # the receiver's own trouble, before it verifies anything
    request_id = await submit(sb, receiver.url)
    deliveries = await receiver.wait(3)
    assert deliveries[2]["outcome"].request_id == request_id
    record = await record_of(sb, request_id, "delivered")
    assert [s["status"] for s in record["sent"]] == [500, 503, 200]


async def test_payload_error(sb, serve):
    receiver = await serve(Receiver(verifier_for(sb)))
    sb.state.add_fault(webhook="payload_error")
    await submit(sb, receiver.url)
    (delivery,) = await receiver.wait(1)
    outcome = delivery["outcome"]
    assert outcome.ok and outcome.payload is None and outcome.payload_error


async def test_faults_through_http_and_reset(sb):
    async with httpx.AsyncClient(base_url=sb.base_url, trust_env=False) as http:
        added = await http.post("/_sandbox/faults", json={"webhook": "drop", "endpoint": "test/"})
        assert added.status_code == 200
        assert (await http.post("/_sandbox/faults", json={"webhook": "explode"})).status_code == 400
        assert (
            await http.post("/_sandbox/faults", json={"webhook": "drop", "status": 500})
        ).status_code == 400
        config = await http.post("/_sandbox/webhooks/config", json={"retries": 1, "user_id": "u-1"})
        assert config.json()["retries"] == 1
        assert (await http.post("/_sandbox/webhooks/config", json={"retries": -1})).status_code == 400
    # A webhook rule is not a request fault: the submit goes through.
    request_id = await submit(sb, "http://127.0.0.1:9/never")
    record = await record_of(sb, request_id, "dropped")
    assert record["fault"] == "drop"
    sb.state.reset()
    assert sb.state.webhooks.snapshot() == [] and sb.state.webhooks.user_id == "sandbox-user"
