"""Overhead per call: generate_image through fal-mcp over stdio vs the same call made directly with
fal_client's submit + result, both against the sandbox with a fixed 300 ms job time.

    .venv/bin/python benchmarks/overhead.py [--calls 20]

Calls alternate between the two paths, so machine noise hits both alike. Reports the median
overhead (target <= 15 ms) and the HTTP requests our server makes to fal per job. fal_client polls
the status every 0.1 s; fal-mcp follows fal's status stream (one request per job, completion seen
at once), falling back to polling at the same 0.1 s where a queue has no stream.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter

import httpx
from common import clean_env, machine, sandbox_process

JOB_SECONDS = 0.3


async def direct_call(client, prompt: str) -> float:
    started = time.perf_counter()
    handle = await client.submit("fal-ai/flux/schnell", {"prompt": prompt, "image_size": "landscape_16_9"})
    await handle.get()  # fal_client polls every 0.1 s, then fetches the result
    return time.perf_counter() - started


async def main(calls: int) -> int:
    import fal_client
    import fal_client.client as fal_module
    from mcp import Client, StdioServerParameters

    with sandbox_process("--job-seconds", str(JOB_SECONDS)) as (settings, _):
        fal_module.QUEUE_URL_FORMAT = settings["FAL_MCP_QUEUE_URL"] + "/"
        direct = fal_client.AsyncClient(key=settings["FAL_KEY"])
        base = settings["FAL_MCP_QUEUE_URL"].removesuffix("/queue")
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "fal_mcp.cli", "serve"], env=clean_env(settings)
        )
        ours, theirs, per_job = [], [], []
        async with Client(params, mode="legacy") as server, httpx.AsyncClient() as http:
            await server.call_tool("generate_image", {"prompt": "warm up"})
            await direct_call(direct, "warm up")
            for index in range(calls):
                await http.post(f"{base}/_sandbox/reset")
                started = time.perf_counter()
                result = await server.call_tool("generate_image", {"prompt": f"ours {index}"})
                ours.append(time.perf_counter() - started)
                assert not result.is_error, result.content[0].text
                routes = Counter(r["route"] for r in (await http.get(f"{base}/_sandbox/requests")).json())
                per_job.append(routes)
                theirs.append(await direct_call(direct, f"direct {index}"))
    overhead = [(a - b) * 1000 for a, b in zip(ours, theirs, strict=True)]
    median = statistics.median(overhead)
    fal_requests = Counter()
    for routes in per_job:
        fal_requests.update(routes)
    print(f"machine: {machine()}")
    print(f"calls: {calls} each, alternating; sandbox job time {JOB_SECONDS * 1000:.0f} ms")
    print(f"direct fal_client submit+get: median {statistics.median(theirs) * 1000:.1f} ms")
    print(f"fal-mcp generate_image over stdio: median {statistics.median(ours) * 1000:.1f} ms")
    print(
        f"overhead per call: median {median:.1f} ms, p90 {sorted(overhead)[int(0.9 * len(overhead))]:.1f} ms "
        f"(target <= 15 ms) {'OK' if median <= 15 else 'MISSED'}"
    )
    shown = ", ".join(f"{route} {count / calls:.1f}" for route, count in sorted(fal_requests.items()))
    print(f"requests to fal per job (mean): {shown}")
    print("('status' is one status stream per job; 'download' fetches the inline preview)")
    return 0 if median <= 15 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    sys.exit(asyncio.run(main(parser.parse_args().calls)))
