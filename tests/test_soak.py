"""Soak: 1,000 mixed tool calls over streamable HTTP, 50 at a time, while the sandbox injects a fault
into one fal request in 20. No call may be lost (each gets a result or an error), the server's memory
must settle after warm-up, and at the end nothing may be left behind: no call in flight, no client
connection open, no fal job running, only the bounded pools of connections to fal.
"""

from __future__ import annotations

import base64
import io
import os
import random
import re
import time
from collections import Counter

import anyio
import httpx
import pytest
from PIL import Image

from fal_mcp import falclient

from .conftest import http_server, server_env
from .test_http import mcp_http_client

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CALLS = 1000
WARM_UP = 200
SESSIONS = 5  # clients, each running WORKERS calls at a time
WORKERS = 10
FAULT_EVERY = 20  # fal requests: one in 20 gets a fault (5%)
MAX_RSS_GROWTH = 50 * 1024 * 1024
CALL_GUARD = 90  # seconds: a call not answered by then counts as lost
# Connections to fal the server may keep open when idle: its pools, which are bounded (the fal client's
# and the downloads client's each keep up to POOL_CONNECTIONS idle per host).
IDLE_POOLS = 2 * falclient.POOL_CONNECTIONS
FAULTS = [
    dict(route="status", status=500),
    dict(route="status", status=429, retry_after=0.05),
    dict(route="submit", status=503),
    dict(route="result", status=500),
    dict(route="status", reset=True),
    dict(route="status", delay=0.3),
    dict(outcome="model_error", message="soak: the model failed"),
    dict(route="upload", status=500),
    dict(route="platform", status=503),
    dict(route="submit", status=500),
    dict(route="download", status=500),
    dict(route="submit", delay=0.2),
]


def png_data_uri(size, color) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def call_mix(count: int, seed: int = 7) -> list[tuple[str, dict]]:
    """`count` calls across the packs: generation, local image work, files, catalogue, invalid input."""
    rng = random.Random(seed)
    base, logo = png_data_uri((320, 200), (30, 90, 160)), png_data_uri((40, 40), (250, 200, 0))
    makers = [
        (
            30,
            lambda n: (
                "generate_image",
                {
                    "prompt": f"soak {n}",
                    "model": rng.choice(["flux_schnell", "sdxl"]),
                    "image_size": rng.choice(["landscape_16_9", "portrait_9_16"]),
                },
            ),
        ),
        (8, lambda n: ("generate_music", {"prompt": f"soak {n}", "duration_seconds": 10})),
        (6, lambda n: ("generate_video", {"prompt": f"soak {n}", "model": "animatediff", "duration": 2})),
        (
            8,
            lambda n: (
                "compose_images",
                {
                    "base_image_url": base,
                    "overlay_image_url": logo,
                    "position": rng.choice(["center", "top-left"]),
                },
            ),
        ),
        (
            6,
            lambda n: (
                "resize_image",
                {"image_url": base, "target_format": "instagram_post", "mode": "crop"},
            ),
        ),
        (6, lambda n: ("upload_file", {"file_path": "in.png"})),
        (8, lambda n: ("list_models", {"search": rng.choice(["flux", "video", "music"]), "limit": 5})),
        (6, lambda n: ("recommend_model", {"task": "a product photo with a clean background"})),
        (6, lambda n: ("get_pricing", {"models": ["flux_schnell", "sdxl"]})),
        (4, lambda n: ("estimate_cost", {"model": "flux_schnell", "quantity": 10})),
        (4, lambda n: ("run_model", {"model": "fal-ai/flux/schnell", "input": {"prompt": f"soak {n}"}})),
        (6, lambda n: ("generate_image", {"prompt": "", "num_images": 9})),  # invalid: refused at once
        (2, lambda n: ("get_model_schema", {"model": "sdxl"})),
    ]
    weights = [weight for weight, _ in makers]
    return [rng.choices(makers, weights)[0][1](n) for n in range(count)]


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1)) * 1024


def connections(pid: int, port: int) -> tuple[int, int, int]:
    """(clients connected to the server, its connections out, its open file descriptors), from /proc."""
    fds = os.listdir(f"/proc/{pid}/fd")
    inodes = set()
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    inbound = outbound = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            for row in rows.readlines()[1:]:
                fields = row.split()
                if fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inbound += 1
                    else:
                        outbound += 1
    return inbound, outbound, len(fds)


async def run_calls(base: str, calls: list[tuple[str, dict]], outcomes: list) -> None:
    """Run `calls` on SESSIONS clients, WORKERS at a time each; record ("ok" | "error" | "lost", text)."""
    queue = list(reversed(calls))

    async def worker(client) -> None:
        while queue:
            name, arguments = queue.pop()
            try:
                with anyio.fail_after(CALL_GUARD):
                    result = await client.call_tool(name, arguments)
                outcomes.append(("error" if result.is_error else "ok", name, result.content[0].text))
            except Exception as exc:  # no answer: lost
                outcomes.append(("lost", name, f"{type(exc).__name__}: {exc}"))

    async def session() -> None:
        async with mcp_http_client(base + "/mcp") as client:
            async with anyio.create_task_group() as group:
                for _ in range(WORKERS):
                    group.start_soon(worker, client)

    async with anyio.create_task_group() as group:
        for _ in range(SESSIONS):
            group.start_soon(session)


async def inject_faults(state, stop: anyio.Event, injected: list) -> None:
    """One fault for every FAULT_EVERY requests fal receives, cycling through FAULTS."""
    next_at = FAULT_EVERY
    while not stop.is_set():
        if len(state.requests) >= next_at:
            fault = FAULTS[len(injected) % len(FAULTS)]
            state.add_fault(**fault, **({} if "outcome" in fault else {"times": 1}))
            injected.append(fault)
            next_at += FAULT_EVERY
        await anyio.sleep(0.005)


async def wait_until(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.1)
    return True


async def test_soak(thread_sandbox, tmp_path):
    state = thread_sandbox.state
    state.reset()
    state.set_config(job_seconds=0.05, log_lines=1)
    Image.new("RGB", (64, 64), (10, 200, 90)).save(tmp_path / "in.png")
    env = server_env(
        {
            **thread_sandbox.env(),
            "FAL_MCP_ALLOWED_DIRS": str(tmp_path),
            "FAL_MCP_MAX_RETRY_AFTER": "0.2",
            "FAL_MCP_TIMEOUT": "30",
            # The job store keeps every job (retention is by age and count per owner), as a deployment's
            # store file does: in memory it would count as the server's RSS and hide a leak's signal.
            "FAL_MCP_STORE": f"sqlite:///{tmp_path}/jobs.sqlite3",
        }
    )
    calls = call_mix(CALLS)
    outcomes: list = []
    injected: list = []
    try:
        with http_server(["--transport", "http"], env) as (process, base):
            port = int(base.rsplit(":", 1)[1])
            started = time.monotonic()
            await run_calls(base, calls[:WARM_UP], outcomes)
            assert await wait_until(lambda: connections(process.pid, port)[0] == 0)
            warm_rss, (_, _, warm_fds) = rss(process.pid), connections(process.pid, port)
            warm_requests = len(state.requests)
            stop = anyio.Event()
            async with anyio.create_task_group() as group:
                group.start_soon(inject_faults, state, stop, injected)
                await run_calls(base, calls[WARM_UP:], outcomes)
                stop.set()
            elapsed = time.monotonic() - started
            # the end: every client gone, nothing running, only the bounded pools to fal
            clients_gone = await wait_until(lambda: connections(process.pid, port)[0] == 0)
            assert clients_gone, "a client connection is still open"
            health = httpx.get(base + "/health", timeout=10).json()
            end_rss, (inbound, outbound, end_fds) = rss(process.pid), connections(process.pid, port)
            jobs, requests = list(state.jobs.values()), len(state.requests) - warm_requests
            jobs_over = await wait_until(lambda: all(job.finished or job.cancelled for job in jobs))
            assert jobs_over, "a fal job is still running"
    finally:
        state.reset()

    kinds = Counter(kind for kind, _, _ in outcomes)
    errors = Counter(name for kind, name, _ in outcomes if kind == "error")
    print(
        f"\nsoak: {CALLS} calls in {elapsed:.1f} s, {len(injected)} faults injected into the {requests} "
        f"fal requests after warm-up; outcomes {dict(kinds)}; errors by tool {dict(errors)}; "
        f"RSS {warm_rss >> 20} -> {end_rss >> 20} MiB; fds {warm_fds} -> {end_fds}; "
        f"connections to fal left {outbound}"
    )
    assert len(outcomes) == CALLS and kinds["lost"] == 0, [o for o in outcomes if o[0] == "lost"][:5]
    assert not [text for _, _, text in outcomes if "Internal error" in text or "Traceback" in text]
    invalid = sum(1 for name, arguments in calls if arguments.get("num_images") == 9)
    assert kinds["error"] <= invalid + len(injected), "more failures than bad inputs and faults explain"
    assert len(injected) >= requests // FAULT_EVERY - 1 and len(injected) >= 50, "too few faults injected"
    assert end_rss - warm_rss < MAX_RSS_GROWTH, f"RSS grew by {(end_rss - warm_rss) >> 20} MiB"
    assert health["calls_in_flight"] == 0 and inbound == 0
    assert outbound <= IDLE_POOLS and end_fds <= warm_fds + IDLE_POOLS
