"""Faults injected by the sandbox, through every layer a tool call crosses (tool table, gateway,
fal_client, HTTP): for each, the number of requests (so the retries), the message the user gets,
a cancel where a started job was abandoned, and a bound on how long the call took.

tests/test_gateway.py checks the gateway's retry policy in isolation; this suite checks what a tool
call does under each fault, with the tools of several packs.
"""

from __future__ import annotations

import base64
import io
import re
import time
from dataclasses import dataclass, field

import anyio
import pytest
from PIL import Image

from .conftest import count_routes, tool_table_for

pytestmark = pytest.mark.anyio

TIMEOUT = 5  # the tools' timeout in this suite, unless a case sets its own


def png_bytes(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def png_data_uri(size=(64, 48)) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(size)).decode()


IMAGE = {"prompt": "a lighthouse", "image_size": "square"}
MUSIC = {"prompt": "calm piano", "duration_seconds": 10}
VIDEO = {"prompt": "waves", "model": "animatediff", "duration": 2}


@dataclass(frozen=True)
class Case:
    """A fault (sandbox rules), the call it hits and what must happen."""

    faults: list[dict]
    tool: str = "generate_image"
    arguments: dict = field(default_factory=lambda: dict(IMAGE))
    error: str | None = None  # regex the isError text must match; None: the call succeeds
    requests: dict = field(default_factory=dict)  # route -> exact number of requests fal received
    cancelled: bool = False  # a started job was abandoned: its fal request must be cancelled
    at_least: float = 0.0  # seconds the call must have waited (Retry-After honoured)
    timeout: float = TIMEOUT


def on(route: str, **rule) -> dict:
    """A request fault: `on("status", status=500, times=2)`."""
    return {"route": route, "times": 1, **rule}


NEVER_FINISHES = {"outcome": "never_finish"}  # the job runs until cancelled
IMAGE_FROM_DATA = {"image_url": png_data_uri(), "prompt": "redraw"}

CASES = {
    # 429: retried for every request, honouring Retry-After (capped by FAL_MCP_MAX_RETRY_AFTER=0.5)
    "429 burst on submit": Case(
        [on("submit", status=429, retry_after=0.2, times=3)], requests={"submit": 4}, at_least=0.6
    ),
    "429 burst on status": Case(
        [on("status", status=429, retry_after=0.1, times=2)],
        "generate_music",
        MUSIC,
        requests={"submit": 1, "status": 3, "result": 1},
        at_least=0.2,
    ),
    "429 burst on result": Case(
        [on("result", status=429, retry_after=0.1, times=2)],
        requests={"submit": 1, "result": 3},
        at_least=0.2,
    ),
    "429 with a Retry-After beyond the cap": Case(
        [on("submit", status=429, retry_after=120)], requests={"submit": 2}, at_least=0.5
    ),
    "429 that persists": Case(
        [on("submit", status=429, retry_after=0.05, times=-1)],
        "generate_video",
        VIDEO,
        error=r"rate-limiting requests \(429\) after 4 attempts.*wait a minute",
        requests={"submit": 4},
    ),
    # 5xx: a submit that may have started a paid job is never repeated; 502-504 (not acted on) are
    "500 on submit": Case(
        [on("submit", status=500)],
        "generate_music",
        MUSIC,
        error=r"server error \(500\) for CassetteAI/music-generator.*Try again later",
        requests={"submit": 1},
    ),
    "503 on submit": Case([on("submit", status=503, times=2)], requests={"submit": 3}),
    "500 on status": Case([on("status", status=500, times=2)], requests={"status": 3, "result": 1}),
    "500 on result": Case(
        [on("result", status=500, times=2)], "generate_video", VIDEO, requests={"result": 3}
    ),
    "500 on status that persists": Case(
        [NEVER_FINISHES, on("status", status=500, times=-1)],
        error=r"server error \(500\) after 4 attempts.*The fal request was cancelled",
        requests={"submit": 1, "status": 4, "cancel": 1},
        cancelled=True,
    ),
    "500 on result that persists": Case(  # the job had finished: nothing to cancel
        [on("result", status=502, times=-1)],
        error=r"server error \(502\) after 4 attempts",
        requests={"result": 4, "cancel": 0},
    ),
    # dropped connections: retried where repeating is harmless
    "connection reset mid-poll": Case(
        [on("status", reset=True)], "generate_music", MUSIC, requests={"status": 2, "result": 1}
    ),
    "connection reset while following, persisting": Case(
        [NEVER_FINISHES, on("status", reset=True, times=-1)],
        error=r"Could not reach fal after 4 attempts.*The fal request was cancelled",
        requests={"status": 4, "cancel": 1},
        cancelled=True,
    ),
    "connection reset on submit": Case(
        [on("submit", reset=True)],
        error=r"Could not reach fal for fal-ai/flux/schnell",
        requests={"submit": 1},
    ),
    # slow answers: waited for within the timeout, abandoned (and cancelled) past it
    "slow responses": Case(
        [on("submit", delay=0.3), on("status", delay=0.4), on("result", delay=0.3)],
        requests={"submit": 1, "result": 1},
        at_least=1.0,
    ),
    "slow status past the timeout": Case(
        [NEVER_FINISHES, on("status", delay=30, times=-1)],
        timeout=1,
        error=r"did not finish within 1 s\. The fal request was cancelled",
        requests={"cancel": 1},
        cancelled=True,
    ),
    "slow submit past the timeout": Case(
        [on("submit", delay=30)], timeout=1, error=r"did not finish within 1 s\. Raise FAL_MCP_TIMEOUT"
    ),
    # the job itself
    "model failure with details": Case(
        [{"outcome": "model_error", "message": "CUDA out of memory on GPU 3", "error_type": "runtime_error"}],
        "generate_video",
        VIDEO,
        requests={"cancel": 0},
        error=r"The model for fal-ai/fast-animatediff/text-to-video failed \(runtime_error\): CUDA out of",
    ),
    "job stuck beyond the timeout": Case(
        [NEVER_FINISHES],
        "generate_music",
        MUSIC,
        timeout=1,
        requests={"cancel": 1},
        cancelled=True,
        error=r"did not finish within 1 s\. The fal request was cancelled\. Raise FAL_MCP_TIMEOUT",
    ),
    "job stuck, and the cancel fails too": Case(
        [NEVER_FINISHES, on("cancel", status=500, times=-1)],
        timeout=1,
        requests={"cancel": 4},
        error=r"did not finish within 1 s\. Cancelling the fal request failed \(it may have finished",
    ),
    # uploads (media inputs, and results made locally)
    "upload failure, retried": Case(
        [on("upload", status=500, times=2)],
        "generate_image_from_image",
        IMAGE_FROM_DATA,
        requests={"upload": 3, "submit": 1},
    ),
    "upload failure that persists": Case(  # per attempt, fal_client tries the CDN, then its storage
        [on("upload", status=503, times=-1)],
        "generate_image_from_image",
        IMAGE_FROM_DATA,
        error=r"image_url: .*server error \(503\) after 4 attempts for fal storage",
        requests={"upload": 8, "submit": 0},
    ),
    "storage token failure": Case(  # fal_client falls back to its other storage
        [on("token", status=500, times=-1)],
        "upscale_image",
        {"image_url": png_data_uri()},
        requests={"token": 1, "submit": 1},
    ),
    # fal's platform API: the tools that use it fall back to what the packs know
    "platform API down": Case(
        [on("platform", status=503, times=-1)], "list_models", {"category": "video"}, requests={"platform": 4}
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_fault(sandbox, registry, name):
    case = CASES[name]
    async with tool_table_for(sandbox, registry, FAL_MCP_TIMEOUT=case.timeout) as table:
        for rule in case.faults:
            sandbox.state.add_fault(**rule)
        started = time.monotonic()
        with anyio.fail_after(case.timeout + 60):  # a hang guard, not a timing assertion
            result = await table.call(case.tool, case.arguments)
        elapsed = time.monotonic() - started
    text = result.content[0].text
    if case.error is None:
        assert not result.is_error, text
    else:
        assert result.is_error and re.search(case.error, text), text
        assert "Traceback" not in text and "Internal error" not in text
    assert {route: count_routes(sandbox, route) for route in case.requests} == case.requests
    expected_cancels = [sandbox.state.submissions[-1]["request_id"]] if case.cancelled else []
    assert sandbox.state.cancels == expected_cancels
    # A lower bound only (the sandbox's delays and Retry-After were honoured): a loaded machine can make a
    # call slower, never faster. That a timeout fired is shown by the error message, not by a stopwatch.
    assert elapsed >= case.at_least, f"took {elapsed:.2f} s"


async def test_a_fault_leaves_the_next_call_unharmed(sandbox, registry):
    async with tool_table_for(sandbox, registry) as table:
        sandbox.state.add_fault(route="status", status=500, times=-1)
        assert (await table.call("generate_image", IMAGE)).is_error
        sandbox.state.faults.clear()
        result = await table.call("generate_image", IMAGE)
    assert not result.is_error, result.content[0].text


async def test_local_work_whose_upload_fails_is_reported(sandbox, registry):
    async with tool_table_for(sandbox, registry) as table:
        base = await table.gateway.upload(png_bytes((200, 100)), "image/png")
        overlay = await table.gateway.upload(png_bytes((20, 20)), "image/png")
        sandbox.state.add_fault(route="upload", status=500, times=-1)
        result = await table.call("compose_images", {"base_image_url": base, "overlay_image_url": overlay})
    assert result.is_error and "server error (500) after 4 attempts for fal storage" in result.content[0].text
