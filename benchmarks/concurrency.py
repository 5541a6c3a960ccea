"""Concurrency: 200 concurrent generate_image calls over streamable HTTP, sandbox jobs 1 s each.

    .venv/bin/python benchmarks/concurrency.py [--calls 200]

Targets: all succeed, wall time <= 2.5 s, server RSS <= 300 MB, event-loop lag <= 50 ms (the server's
answer time to GET /health during the burst, timed from a separate process). The sandbox runs in its
own process too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

from common import clean_env, cpu_seconds, health_pinger, machine, rss_mb, sandbox_process, server_process

JOB_SECONDS = 1.0


def client(url: str):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    limits = httpx2.Limits(max_connections=400, max_keepalive_connections=400)
    http = httpx2.AsyncClient(timeout=httpx2.Timeout(60), limits=limits)
    return Client(streamable_http_client(url, http_client=http), mode="legacy")


async def main(calls: int) -> int:
    with sandbox_process("--job-seconds", str(JOB_SECONDS)) as (settings, sandbox):
        env = clean_env({**settings, "FAL_MCP_PLUGINS": "image"})
        with server_process(["--transport", "http"], env) as (server, base):
            async with client(base + "/mcp") as burst:
                await burst.call_tool("generate_image", {"prompt": "warm up"})
                rss_before = rss_mb(server.pid)

                async def one(index: int):
                    return await burst.call_tool(
                        "generate_image", {"prompt": f"burst {index}", "seed": index}
                    )

                pids = {"server": server.pid, "sandbox": sandbox.pid, "load generator": os.getpid()}
                cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                with health_pinger(base, JOB_SECONDS + 0.5) as pings:
                    started = time.perf_counter()
                    results = await asyncio.gather(*(one(i) for i in range(calls)), return_exceptions=True)
                    wall = time.perf_counter() - started
                    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
                    lags = pings()
                peak = rss_mb(server.pid, "VmHWM")
                rss_after = rss_mb(server.pid)
    failures = [r for r in results if isinstance(r, BaseException) or r.is_error]
    ok = not failures and wall <= 2.5 and peak <= 300 and max(lags) <= 50
    print(f"machine: {machine()}")
    print(f"{calls} concurrent generate_image calls over streamable HTTP, sandbox jobs {JOB_SECONDS:g} s")
    print(f"succeeded: {calls - len(failures)}/{calls}")
    print(f"wall time: {wall:.2f} s (target <= 2.5 s)")
    print(
        f"server RSS: {rss_before:.0f} MB before, {rss_after:.0f} MB after, peak {peak:.0f} MB (target <= 300 MB)"
    )
    print(
        f"event-loop lag (GET /health from a separate process during the burst): median "
        f"{statistics.median(lags):.1f} ms, max {max(lags):.1f} ms over {len(lags)} requests (target <= 50 ms)"
    )
    print(
        "CPU seconds used during the burst: "
        + ", ".join(f"{name} {value:.2f}" for name, value in cpu.items())
    )
    print("OK" if ok else "MISSED")
    if failures:
        print(
            "first failure:",
            failures[0] if isinstance(failures[0], BaseException) else failures[0].content[0].text,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    sys.exit(asyncio.run(main(parser.parse_args().calls)))
