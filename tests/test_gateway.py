"""The fal gateway against the sandbox: progress, timeouts, cancels, retries and every error class."""

from __future__ import annotations

import time

import anyio
import pytest

from fal_mcp.config import Settings
from fal_mcp.errors import ToolError
from fal_mcp.gateway import FalGateway

from .conftest import sandbox_settings

pytestmark = pytest.mark.anyio

FLUX = "fal-ai/flux/schnell"
PROMPT = {"prompt": "a cat", "image_size": "square"}


def count(sandbox, route):
    return sum(1 for r in sandbox.state.requests if r["route"] == route)


async def test_progress_goes_queue_positions_then_logs(sandbox, gateway):
    # The queue positions pass at the sandbox's pace (0.3 s each, a status stream checks every 0.02 s);
    # the running job is held until its "Running" progress arrives, so that phase is never missed.
    sandbox.state.set_config(queue_step=0.3, job_seconds=0.1, log_lines=3)
    sandbox.state.add_fault(outcome="hold", queue_ahead=3)
    messages = []

    async def progress(message):
        messages.append(message)
        if message.startswith("Running"):
            sandbox.state.release()

    with anyio.fail_after(60):  # a hang guard, not a timing assertion
        result = await gateway.run(FLUX, PROMPT, timeout=60, progress=progress)
    assert result.data["images"][0]["width"] == 512
    queued = [m for m in messages if m.startswith("In queue")]
    running = [m for m in messages if m.startswith("Running")]
    positions = [int(m.rsplit(" ", 1)[1]) for m in queued]
    assert positions and positions == sorted(set(positions), reverse=True) and set(positions) <= {0, 1, 2}
    assert messages.index(running[0]) > messages.index(queued[-1])
    assert any(": " in m for m in running), messages  # a model log line was passed on
    assert len(messages) == len(set(messages))  # only changes are reported
    assert result.request_id == sandbox.state.submissions[-1]["request_id"]


async def test_a_job_is_followed_by_one_status_stream(sandbox, gateway):
    sandbox.state.set_config(queue_ahead=2, queue_step=0.1, job_seconds=0.3)
    await gateway.run(FLUX, PROMPT, timeout=30)
    assert [count(sandbox, route) for route in ("submit", "status", "result")] == [1, 1, 1]
    assert sandbox.state.requests[1]["path"].endswith("/status/stream")


async def wait_for(condition, guard: float = 30):
    """Waits until condition() is true; the guard only stops a hang."""
    with anyio.fail_after(guard):
        while not condition():
            await anyio.sleep(0.01)


async def test_without_a_status_stream_it_polls_at_a_bounded_rate(sandbox, gateway):
    sandbox.state.add_fault(route="status", status=405, times=1)  # the stream is "not supported"
    sandbox.state.add_fault(outcome="hold")  # running until released below
    sandbox.state.set_config(job_seconds=0.05)
    messages = []

    async def progress(message):
        messages.append(message)

    async with anyio.create_task_group() as group:
        group.start_soon(lambda: gateway.run(FLUX, PROMPT, timeout=60, progress=progress))
        await wait_for(lambda: count(sandbox, "status") >= 3)  # it polls...
        before = count(sandbox, "status")
        await anyio.sleep(0.5)
        # ...at one poll per 0.1 s at most: a handful in 0.5 s, not a busy loop (a slow machine only
        # makes fewer polls, so this bound holds however loaded it is)
        assert count(sandbox, "status") - before <= 8
        sandbox.state.release()
    assert any(m.startswith("Running") for m in messages)
    seen = len(sandbox.state.requests)
    await gateway.run(FLUX, PROMPT, timeout=30)  # and it remembers: no stream is tried again
    assert not any(r["path"].endswith("/stream") for r in sandbox.state.requests[seen:])


async def test_timeout_cancels_the_fal_request(sandbox, gateway):
    sandbox.state.add_fault(outcome="never_finish")
    with anyio.fail_after(60):  # a hang guard, not a timing assertion
        with pytest.raises(ToolError, match=r"did not finish within 1 s\. The fal request was cancelled"):
            await gateway.run(FLUX, PROMPT, timeout=1)
    assert sandbox.state.cancels == [sandbox.state.submissions[-1]["request_id"]]


async def test_client_cancel_cancels_the_fal_request(sandbox, gateway):
    sandbox.state.add_fault(outcome="never_finish")
    running = anyio.Event()

    async def progress(message):
        if message.startswith("Running"):
            running.set()

    async with anyio.create_task_group() as group:
        group.start_soon(lambda: gateway.run(FLUX, PROMPT, timeout=60, progress=progress))
        with anyio.fail_after(60):  # a hang guard, not a timing assertion
            await running.wait()
        group.cancel_scope.cancel()
    assert sandbox.state.cancels == [sandbox.state.submissions[-1]["request_id"]]


async def test_validation_error_names_each_field(sandbox, gateway):
    with pytest.raises(ToolError) as caught:
        await gateway.run(FLUX, {"image_size": "square", "negative_prompt": "x"}, timeout=30)
    message = str(caught.value)
    assert "(422)" in message and "prompt:" in message and "negative_prompt:" in message


async def test_429_is_retried_honouring_retry_after(sandbox, gateway):
    sandbox.state.add_fault(route="submit", status=429, retry_after=0.3, times=2)
    started = time.monotonic()
    result = await gateway.run(FLUX, PROMPT, timeout=30)
    assert result.data["images"]
    assert count(sandbox, "submit") == 3
    assert time.monotonic() - started >= 0.6  # waited as told, twice


async def test_429_that_persists_is_reported(sandbox, gateway):
    sandbox.state.add_fault(route="submit", status=429, retry_after=0.05, times=-1)
    with pytest.raises(ToolError, match=r"rate-limiting requests \(429\) after 4 attempts"):
        await gateway.run(FLUX, PROMPT, timeout=30)
    assert count(sandbox, "submit") == 4  # max_retries=3


async def test_500_on_submit_is_not_repeated(sandbox, gateway):
    # a submit that failed with 500 may still have started a paid job: do not send it twice
    sandbox.state.add_fault(route="submit", status=500, times=1)
    with pytest.raises(ToolError, match=r"server error \(500\)"):
        await gateway.run(FLUX, PROMPT, timeout=30)
    assert count(sandbox, "submit") == 1


@pytest.mark.parametrize("route", ["status", "result"])
async def test_500_on_status_and_result_is_retried(sandbox, gateway, route):
    sandbox.state.add_fault(route=route, status=500, times=2)
    result = await gateway.run(FLUX, PROMPT, timeout=30)
    assert result.data["images"]


async def test_500_that_persists_is_reported(sandbox, gateway):
    sandbox.state.add_fault(route="status", status=503, times=-1)
    with pytest.raises(ToolError, match=r"server error \(503\) after 4 attempts"):
        await gateway.run(FLUX, PROMPT, timeout=60)


async def test_connection_reset_mid_poll_is_retried(sandbox, gateway):
    sandbox.state.add_fault(route="status", reset=True, times=1)
    result = await gateway.run(FLUX, PROMPT, timeout=30)
    assert result.data["images"]


async def test_model_failure_is_reported_with_details(sandbox, gateway):
    sandbox.state.add_fault(outcome="model_error", message="CUDA out of memory")
    with pytest.raises(ToolError, match="The model for fal-ai/flux/schnell failed.*CUDA out of memory"):
        await gateway.run(FLUX, PROMPT, timeout=30)


@pytest.mark.parametrize(
    ("status", "expected"), [(401, "rejected the API key"), (403, "refused the request")]
)
async def test_auth_errors(sandbox, gateway, status, expected):
    sandbox.state.add_fault(route="submit", status=status)
    with pytest.raises(ToolError, match=expected):
        await gateway.run(FLUX, PROMPT, timeout=30)


async def test_unknown_endpoint(sandbox, gateway):
    with pytest.raises(ToolError, match=r"\(404\)"):
        await gateway.run("fal-ai/does-not-exist", PROMPT, timeout=30)


async def test_unreachable_fal_is_reported(tmp_path):
    settings = Settings.from_env(
        {"FAL_KEY": "k", "FAL_MCP_QUEUE_URL": "http://127.0.0.1:9/queue", "FAL_MCP_MAX_RETRY_AFTER": "0.05"}
    )
    async with FalGateway(settings) as gateway:
        with pytest.raises(ToolError, match="Could not reach fal.*after 4 attempts"):
            await gateway.run(FLUX, PROMPT, timeout=30)


async def test_missing_key_says_how_to_set_it():
    async with FalGateway(Settings.from_env({"FAL_MCP_QUEUE_URL": "http://127.0.0.1:9/queue"})) as gateway:
        with pytest.raises(ToolError, match="FAL_KEY.*--sandbox"):
            await gateway.run(FLUX, PROMPT, timeout=30)


async def test_the_key_never_appears_in_an_error(sandbox):
    secret = "sk-very-secret-0123456789"
    sandbox.state.add_fault(outcome="model_error", message=f"rejected key {secret}")
    settings = sandbox_settings(sandbox, FAL_KEY=secret)
    async with FalGateway(settings) as gateway:
        with pytest.raises(ToolError) as caught:
            await gateway.run(FLUX, PROMPT, timeout=30)
    assert secret not in str(caught.value) and "***" in str(caught.value)


async def test_upload_round_trip(sandbox, gateway):
    import httpx

    url = await gateway.upload(b"hello fal", "text/plain", "hello.txt")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == b"hello fal"
