"""Workers (issue 20): generate_image calls per second of the HTTP server with N worker processes behind
one port, N = 1, 2 and the number of cores.

    .venv/bin/python benchmarks/workers.py [--seconds 15] [--concurrency 64] [--stateless]

`--workers N` is passed to `fal-mcp serve --transport http` when the installed server has that option
(found in `fal-mcp serve --help`); without it only N = 1 is measured, and the script says so. The sandbox
runs in its own process with a job time of 0; the load is a closed loop of `--concurrency` keep-alive
connections speaking raw JSON-RPC (common.McpConnection), each with an MCP session of its own opened
on that connection (so it works whether or not the workers share sessions). Throughput is counted over
`--seconds` after a warm-up; the CPU the server (all its processes), the sandbox and the load generator
used meanwhile is shown, since on a small machine they share the same cores. Target: calls/s grows with N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

from common import (
    McpConnection,
    McpHttpError,
    clean_env,
    cpu_seconds,
    fal_mcp_serve_help,
    http_server,
    load_average,
    process_tree,
    run_facts,
    sandbox_process,
    tool_error,
    tree_cpu_seconds,
)


async def measure(base: str, concurrency: int, warmup: float, seconds: float, pids: dict) -> dict:
    connections = [McpConnection(base) for _ in range(concurrency)]
    for connection in connections:
        await connection.initialize()
    counting = False
    done = failed = 0
    errors: list[str] = []
    stop_at = time.perf_counter() + warmup + seconds

    async def worker(connection: McpConnection, number: int) -> None:
        nonlocal done, failed
        index = 0
        while time.perf_counter() < stop_at:
            index += 1
            try:
                error = tool_error(
                    await connection.call_tool("generate_image", {"prompt": f"w{number} {index}"})
                )
            except McpHttpError as exc:
                error = str(exc)
            if counting:
                if error:
                    failed += 1
                    errors.append(error)
                else:
                    done += 1

    tasks = [asyncio.ensure_future(worker(c, n)) for n, c in enumerate(connections)]
    await asyncio.sleep(warmup)
    before = {
        name: (tree_cpu_seconds if name == "server" else cpu_seconds)(pid) for name, pid in pids.items()
    }
    counting, started = True, time.perf_counter()
    await asyncio.sleep(seconds)
    counting, elapsed = False, time.perf_counter() - started
    cpu = {
        name: (tree_cpu_seconds if name == "server" else cpu_seconds)(pid) - before[name]
        for name, pid in pids.items()
    }
    await asyncio.gather(*tasks)
    for connection in connections:
        await connection.close()
    return {
        "rate": done / elapsed,
        "done": done,
        "failed": failed,
        "errors": errors,
        "cpu": cpu,
        "wall": elapsed,
    }


async def main(args: argparse.Namespace) -> int:
    supported = "--workers" in fal_mcp_serve_help()
    cores = os.cpu_count() or 1
    counts = sorted({1, 2, cores}) if supported else [1]
    results = {}
    with tempfile.TemporaryDirectory() as tmp, sandbox_process("--job-seconds", "0") as (settings, sandbox):
        for workers in counts:
            state = os.path.join(tmp, f"state-{workers}")
            env = clean_env({**settings, "FAL_MCP_PLUGINS": "image", "FAL_MCP_STATE_DIR": state})
            serve = ["--transport", "http"] + (["--workers", str(workers)] if supported else [])
            serve += ["--stateless"] if args.stateless else []
            with http_server(serve, env) as (server, base, _):
                await asyncio.sleep(1.0)  # every worker up
                processes = len(process_tree(server.pid))
                pids = {"server": server.pid, "sandbox": sandbox.pid, "load generator": os.getpid()}
                results[workers] = await measure(base, args.concurrency, args.warmup, args.seconds, pids)
                results[workers]["processes"] = processes
                results[workers]["load"] = load_average()
    print(run_facts())
    print(
        f"generate_image over streamable HTTP, closed loop of {args.concurrency} connections (a session each), "
        f"sandbox job time 0, {args.seconds:g} s counted after {args.warmup:g} s of warm-up"
    )
    if not supported:
        print(
            "`fal-mcp serve` has no --workers option (today's server is one process): only N = 1 measured; "
            f"N = {', '.join(str(n) for n in sorted({2, cores}))} ({cores} cores here) once it has"
        )
    print(
        "\nworkers | processes | calls/s | vs N=1 | failed | server CPU/call | CPU-s while counting: server, "
        "sandbox, load generator"
    )
    first = results[counts[0]]["rate"] or float("nan")
    for workers, result in results.items():
        cpu = result["cpu"]
        print(
            f"{workers:7d} | {result['processes']:9d} | {result['rate']:7.1f} | {result['rate'] / first:5.2f}x | "
            f"{result['failed']:6d} | {cpu['server'] / max(result['done'], 1) * 1000:12.1f} ms | "
            f"{cpu['server']:.1f}, {cpu['sandbox']:.1f}, {cpu['load generator']:.1f} "
            f"(of {result['wall'] * cores:.0f} core-seconds; load average after: {result['load']})"
        )
        if result["errors"]:
            print(f"        first failure: {result['errors'][0][:200]}")
    per_call = results[counts[0]]["cpu"]["server"] / max(results[counts[0]]["done"], 1) or float("nan")
    print(
        f"at N = {counts[0]} the server used {per_call * 1000:.1f} ms of CPU a call: one process with a core to "
        f"itself would top out near {1 / per_call:.0f} calls/s; the sandbox, the load generator and whatever "
        "else runs on this machine share the same cores"
    )
    if not supported:
        print("MISSED: --workers is missing")
        return 1
    scales = all(results[b]["rate"] > results[a]["rate"] for a, b in zip(counts, counts[1:], strict=False))
    print("OK: calls/s grows with N" if scales else "MISSED: calls/s does not grow with N")
    return 0 if scales else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15, help="seconds counted per N (default 15)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per N (default 3)")
    parser.add_argument("--concurrency", type=int, default=64, help="connections in the loop (default 64)")
    parser.add_argument("--stateless", action="store_true", help="pass --stateless to fal-mcp serve")
    sys.exit(asyncio.run(main(parser.parse_args())))
