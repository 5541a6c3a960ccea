"""Bursts (issue 20): 200, 1,000 and 2,000 generate_image calls arriving at once at the HTTP server,
with GET /health timed from a separate process through each whole burst, and the fal jobs the sandbox
saw submitted counted against the calls that succeeded.

    .venv/bin/python benchmarks/bursts.py [--bursts 200,1000,2000] [--job-seconds 1] [--nofile 1024[:1024]]

Each burst gets a fresh server (`fal-mcp serve --transport http`, image pack, its own state directory)
and the sandbox (in its own process, jobs of `--job-seconds`) reset. Every call opens its own
connection, as that many clients would, and speaks raw JSON-RPC (common.McpConnection: a load
generator light enough not to starve the server on a small machine); all share one MCP session.

Reported per burst: calls ok / failed (tool errors and broken connections, grouped by message), wall
time, fal jobs submitted, and **paid and lost** = jobs submitted - calls that succeeded (a call that
failed after its job reached fal: paid for, then cancelled or abandoned); /health round trips over the
whole burst (median, p99, max; failed probes); the server's CPU seconds and peak RSS; its stderr lines
about open files. Targets: /health max < 100 ms, paid and lost 0.

The server keeps at most FAL_MCP_MAX_CONNECTIONS (default 1000) connections: past it, it closes the
longest-idle ones, so calls beyond it fail with a closed connection before anything is submitted
(`--max-connections N` sets it). `--nofile SOFT[:HARD]` starts the server with that open-files limit (resource.setrlimit in a preexec_fn).
The server raises its soft limit to the hard one at start, so a soft limit alone is undone: `1024:1024`
(hard too) is what a container or service manager with `LimitNOFILE=1024` gives it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from collections import Counter

from common import (
    McpConnection,
    McpHttpError,
    clean_env,
    cpu_seconds,
    health_monitor,
    http_server,
    open_files_limit,
    open_session,
    percentile,
    raise_own_open_files,
    rss_mb,
    run_facts,
    sandbox_base,
    sandbox_process,
    sandbox_records,
    sandbox_reset,
    tool_error,
)

HEALTH_TARGET_MS = 100.0


def shape(message: str) -> str:
    """A failure message with its ids and numbers blanked, to group alike failures."""
    message = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27,}", "<id>", message)
    message = re.sub(r"\d+(\.\d+)?", "N", message)
    return message[:160]


async def one_call(base: str, session: str | None, index: int, timeout: float) -> str | None:
    """None if the call succeeded, else why not."""
    connection = McpConnection(base, session)
    try:
        result = await asyncio.wait_for(
            connection.call_tool("generate_image", {"prompt": f"burst {index}", "seed": index}), timeout
        )
        return tool_error(result)
    except asyncio.TimeoutError:
        return f"no answer within {timeout:g} s"
    except McpHttpError as exc:
        return str(exc)
    finally:
        await connection.close()


async def burst(
    calls: int,
    settings: dict,
    sandbox_pid: int,
    nofile: tuple[int, int | None] | None,
    timeout: float,
    max_connections: int | None,
):
    sandbox_url = sandbox_base(settings)
    with tempfile.TemporaryDirectory() as state:
        env = clean_env({**settings, "FAL_MCP_PLUGINS": "image", "FAL_MCP_STATE_DIR": state})
        if max_connections:
            env["FAL_MCP_MAX_CONNECTIONS"] = str(max_connections)
        preexec = open_files_limit(*nofile) if nofile else None
        with http_server(["--transport", "http"], env, preexec_fn=preexec) as (server, base, stderr):
            session = await open_session(base)
            for index in range(2):  # warm up: imports, the fal client, the first job
                error = await one_call(base, session, 100_000 + index, 60)
                if error:
                    raise RuntimeError(f"warm-up call failed: {error}")
            sandbox_reset(sandbox_url)
            with open(f"/proc/{server.pid}/limits") as limits:
                files = next(line for line in limits if line.startswith("Max open files")).split()[3:5]
            rss_before = rss_mb(server.pid)
            cpu_before = cpu_seconds(server.pid)
            stderr_before = len(stderr)
            with health_monitor(base) as health:
                started = time.perf_counter()
                outcomes = await asyncio.gather(*(one_call(base, session, i, timeout) for i in range(calls)))
                wall = time.perf_counter() - started
                lags, probe_failures = health()
            cpu = cpu_seconds(server.pid) - cpu_before
            peak = rss_mb(server.pid, "VmHWM")
            await asyncio.sleep(0.5)  # cancels the server sends after a failure
            submitted = len(sandbox_records(sandbox_url, "submissions"))
            cancels = len(sandbox_records(sandbox_url, "cancels"))
            log = stderr[stderr_before:]
    failures = [outcome for outcome in outcomes if outcome is not None]
    ok = calls - len(failures)
    return {
        "calls": calls,
        "ok": ok,
        "failures": Counter(shape(f) for f in failures),
        "wall": wall,
        "submitted": submitted,
        "lost": submitted - ok,
        "cancels": cancels,
        "lags": lags,
        "probe_failures": probe_failures,
        "cpu": cpu,
        "rss_before": rss_before,
        "peak": peak,
        "files": files,
        "log": [line for line in log if re.search(r"open files|EMFILE|Errno 24", line)],
        "log_lines": len(log),
    }


def report(result: dict) -> bool:
    lags = result["lags"]
    worst = max(lags) if lags else float("inf")
    p99 = percentile(lags, 0.99)
    print(
        f"\n{result['calls']} calls at once: {result['ok']} ok, {result['calls'] - result['ok']} failed, "
        f"wall {result['wall']:.1f} s ({result['ok'] / result['wall']:.0f} calls/s)"
    )
    print(
        f"  fal jobs submitted {result['submitted']}, calls that succeeded {result['ok']}: "
        f"paid and lost {result['lost']} (target 0); cancels sent to fal {result['cancels']}"
    )
    print(
        f"  /health from a separate process through the whole burst: {len(lags)} probes, median "
        f"{statistics.median(lags) if lags else float('nan'):.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms "
        f"(target < {HEALTH_TARGET_MS:g} ms); failed probes {len(result['probe_failures'])}"
    )
    print(
        f"  server: {result['cpu']:.1f} CPU-s for the burst ({result['cpu'] / result['calls'] * 1000:.1f} ms a call), "
        f"RSS {result['rss_before']:.0f} MB before, peak {result['peak']:.0f} MB; open files limit (soft, hard) "
        f"{', '.join(result['files'])}"
    )
    for message, count in result["failures"].most_common(4):
        print(f"  failed x{count}: {message}")
    if result["log"]:
        print(f"  server stderr: {len(result['log'])} lines about open files, e.g. {result['log'][0][:200]}")
    return worst < HEALTH_TARGET_MS and result["lost"] == 0


async def main(args: argparse.Namespace) -> int:
    own = raise_own_open_files()
    sizes = [int(size) for size in args.bursts.split(",")]
    if own < 2 * max(sizes) + 100:
        print(f"warning: this process may open only {own} files, fewer than the largest burst needs")
    nofile = None
    if args.nofile:
        soft, _, hard = args.nofile.partition(":")
        nofile = (int(soft), int(hard) if hard else None)
    results = []
    with sandbox_process("--job-seconds", str(args.job_seconds)) as (settings, sandbox):
        for size in sizes:
            results.append(
                await burst(size, settings, sandbox.pid, nofile, args.timeout, args.max_connections)
            )
    print(run_facts())
    limit = (
        f"open files limit set to {args.nofile} (soft[:hard])"
        if args.nofile
        else "open files limits inherited"
    )
    limit += f"; FAL_MCP_MAX_CONNECTIONS {args.max_connections or '1000 (its default)'}"
    print(
        f"bursts of generate_image over streamable HTTP, a connection per call, one session; sandbox jobs "
        f"{args.job_seconds:g} s, in its own process; a fresh server per burst; {limit}"
    )
    ok = all([report(result) for result in results])
    print("\nOK" if ok else "\nMISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bursts", default="200,1000,2000", help="comma-separated sizes (default 200,1000,2000)"
    )
    parser.add_argument("--job-seconds", type=float, default=1.0, help="sandbox job time (default 1)")
    parser.add_argument("--nofile", help="the server's open-files limit, SOFT or SOFT:HARD (e.g. 1024:1024)")
    parser.add_argument(
        "--max-connections", type=int, help="FAL_MCP_MAX_CONNECTIONS for the server (default: its own, 1000)"
    )
    parser.add_argument("--timeout", type=float, default=180, help="seconds a call may take (default 180)")
    sys.exit(asyncio.run(main(parser.parse_args())))
