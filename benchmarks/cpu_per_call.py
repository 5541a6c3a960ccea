"""CPU per call (issue 20): the server process's CPU time per generate_image call over streamable HTTP,
against a bare client making the same four requests to the same sandbox, in the same run.

    .venv/bin/python benchmarks/cpu_per_call.py [--calls 150] [--concurrency 1,10,50] [--runs 3] [--profile]

The sandbox runs in its own process with a job time of 0 (what is measured is the cost of following a
job, not waiting for one). Per generate_image call the server makes four requests to fal: submit
(POST {queue}/<endpoint>), the status stream (GET {status_url}/stream?logs=1, server-sent events until
COMPLETED), the result (GET {response_url}) and the preview download (GET the image URL); this script
checks that count from the sandbox's records. The bare client is plain httpx in a process of its own:
an AsyncClient per worker (`--bare-shared`: one for all, its pool twice the concurrency; httpcore scans
its whole pool on every request, which at 50 costs the bare client more than the requests themselves),
the same four requests with the same JSON body, each response read to its end so that connections are
kept; it decodes nothing (the server also decodes the preview with Pillow: that cost is measured apart
and shown). Connections dropped rather than kept are counted from the sockets left in TIME-WAIT.

Closed loop: `concurrency` workers each start their next call when the last one ends, `--calls` calls a
run after 2 x concurrency warm-up calls. The MCP load comes from raw JSON-RPC over asyncio streams
(common.McpConnection, one keep-alive connection per worker, one session), so the load generator stays
light. CPU is user + system time from /proc (server) and process_time() (bare client), over the
measured calls only. Runs alternate server, bare, server, bare...; each figure is the median of
`--runs`. Target: server / bare <= 1.15 at every concurrency.

`--profile` runs py-spy (`.venv/bin/pip install py-spy`; on PyPI) on the server during one more run at
`--profile-concurrency` (sampling the thread holding the GIL) and prints the shares of the samples by
what the time went to: the HTTP client stack to fal, the HTTP server (uvicorn, starlette), the MCP SDK,
our code, the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import (
    BIN,
    McpConnection,
    clean_env,
    closed_connections,
    cpu_seconds,
    http_server,
    open_session,
    run_facts,
    sandbox_base,
    sandbox_process,
    sandbox_records,
    sandbox_reset,
    tool_error,
)

TARGET = 1.15
TOOL = "generate_image"


# -- the bare client (run in a process of its own: `cpu_per_call.py --bare ...`) -----------------------


async def bare_main(
    queue: str, key: str, endpoint: str, body: dict, concurrency: int, calls: int, shared: bool
) -> dict:
    """The four requests per call with plain httpx: an AsyncClient per worker (a pool of the two
    connections a call uses: httpcore's per-request pool scan stays short), or with `shared` one client
    for all, its pool as large as the concurrency. Returns CPU and wall seconds of the `calls`, and the
    connections to the sandbox closed meanwhile."""
    import contextlib

    import httpx

    port = int(queue.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    size = 2 * concurrency + 4 if shared else 4
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(headers={"Authorization": f"Key {key}"}, limits=limits, timeout=60)
            )
            for _ in range(1 if shared else concurrency)
        ]

        async def one(http, index: int) -> None:
            submitted = (
                await http.post(f"{queue}/{endpoint}", json={**body, "prompt": f"bare {index}"})
            ).json()
            last = None
            async with http.stream("GET", submitted["status_url"] + "/stream", params={"logs": 1}) as stream:
                stream.raise_for_status()
                async for line in stream.aiter_lines():  # to the end: the connection is kept
                    if line.startswith("data:"):
                        last = json.loads(line[5:])
            if not last or last.get("status") != "COMPLETED" or last.get("error"):
                raise RuntimeError(f"status stream ended with {last}")
            result = await http.get(submitted["response_url"])
            result.raise_for_status()
            image = await http.get(result.json()["images"][0]["url"])
            image.raise_for_status()
            assert image.content

        async def closed_loop(total: int) -> None:
            taken = 0

            async def worker(http) -> None:
                nonlocal taken
                while taken < total:
                    taken += 1
                    await one(http, taken)

            await asyncio.gather(*(worker(clients[n % len(clients)]) for n in range(concurrency)))

        await closed_loop(2 * concurrency)
        cpu, started = time.process_time(), time.perf_counter()
        await closed_loop(calls)
        figures = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - started}
        figures["closed"] = closed_connections(port, figures["wall"])
        return figures


def run_bare(
    settings: dict, endpoint: str, body: dict, concurrency: int, calls: int, sandbox_pid: int, shared: bool
) -> dict:
    sandbox_cpu = cpu_seconds(sandbox_pid)
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--bare",
            json.dumps(
                [
                    settings["FAL_MCP_QUEUE_URL"],
                    settings["FAL_KEY"],
                    endpoint,
                    body,
                    concurrency,
                    calls,
                    shared,
                ]
            ),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
    )
    if done.returncode:
        raise RuntimeError(f"the bare client failed:\n{done.stderr[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    # the sandbox's CPU includes the warm-up calls: per call it is only indicative
    figures["sandbox"] = (cpu_seconds(sandbox_pid) - sandbox_cpu) / (calls + 2 * concurrency)
    return figures


# -- the server ---------------------------------------------------------------------------------------


async def run_server(
    base: str, session: str | None, concurrency: int, calls: int, pids: dict, sandbox_port: int = 0
) -> dict:
    connections = [McpConnection(base, session) for _ in range(concurrency)]
    failures: list[str] = []

    async def closed_loop(total: int) -> None:
        taken = 0

        async def worker(connection: McpConnection) -> None:
            nonlocal taken
            while taken < total:
                taken += 1
                result = await connection.call_tool(TOOL, {"prompt": f"ours {taken}"})
                error = tool_error(result)
                if error:
                    failures.append(error)

        await asyncio.gather(*(worker(c) for c in connections))

    try:
        await closed_loop(2 * concurrency)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        await closed_loop(calls)
        wall = time.perf_counter() - started
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        closed = closed_connections(sandbox_port, wall) if sandbox_port else 0
    finally:
        for connection in connections:
            await connection.close()
    if failures:
        raise RuntimeError(f"{len(failures)} calls failed; first: {failures[0][:300]}")
    return {"cpu": cpu["server"], "wall": wall, "sandbox": cpu["sandbox"] / calls, "closed": closed}


# -- the preview decode the server does and the bare client does not --------------------------------------


def preview_decode_ms(settings: dict) -> float | None:
    """CPU ms per make_preview (fal_mcp.delivery: decodes the image fully, passes it through) plus the
    base64 of the MCP image content, on an image the sandbox drew for this benchmark's calls."""
    import base64
    import urllib.request

    try:
        from fal_mcp.delivery import make_preview
    except ImportError:
        return None
    jobs = sandbox_records(sandbox_base(settings), "jobs")
    if not jobs:
        return None
    app = "/".join(jobs[-1]["endpoint_id"].split("/")[:2])
    url = f"{settings['FAL_MCP_QUEUE_URL']}/{app}/requests/{jobs[-1]['request_id']}"
    request = urllib.request.Request(url, headers={"Authorization": f"Key {settings['FAL_KEY']}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        image_url = json.loads(response.read())["images"][0]["url"]
    with urllib.request.urlopen(image_url, timeout=30) as response:
        data = response.read()
    make_preview(data)
    started, rounds = time.process_time(), 50
    for _ in range(rounds):
        preview, _ = make_preview(data)
        base64.b64encode(preview).decode()
    return (time.process_time() - started) / rounds * 1000


# -- py-spy -------------------------------------------------------------------------------------------

# py-spy names a frame `function (package/module.py:line)`; a sample is charged to the innermost frame of
# one of these groups, by the frame file's first path component.
GROUPS = {
    "HTTP client to fal (httpx, httpcore, fal_client)": {"httpx", "httpcore", "fal_client"},
    "HTTP server (uvicorn, starlette, sse_starlette)": {"uvicorn", "starlette", "sse_starlette"},
    "MCP SDK (mcp, mcp_types)": {"mcp", "mcp_types"},
    "our code (fal_mcp and the packs)": {"fal_mcp", "fal_mcp_image", "fal_mcp_utility", "fal_mcp_video"},
    "Pillow (the preview)": {"PIL"},
    "SQLite (the job store)": {"sqlite3"},
}
# Charged to their caller: h11 parses HTTP/1.1 for both uvicorn (server) and httpcore (client); pydantic
# validates for the SDK and for our code; anyio and the standard library (json, re, base64, asyncio's
# transports) serve everyone. A sample with no other frame is the event loop's own.
TRANSPARENT = {"h11", "pydantic", "pydantic_core", "anyio", "sniffio", "typing_extensions", "annotated_types"}
EVENT_LOOP = "event loop and other standard library (asyncio, selectors, threads)"
# Leaf functions that are a thread waiting, not working: py-spy cannot tell a worker thread parked on a
# lock from a running one here, so those samples are dropped (and counted).
WAITING = {"Condition.wait", "Event.wait", "Thread.join", "Semaphore.acquire", "EpollSelector.select"}


def frame_package(frame: str) -> str:
    path = frame.rsplit("(", 1)[-1].rsplit(":", 1)[0]
    return path.lstrip("/").split("/", 1)[0].removesuffix(".py")


# Where a thread's work starts: frames above these (the script, cli.py's anyio.run, the loop itself) are
# the entry point, not what the time went to.
DISPATCH = {"Handle._run", "BaseEventLoop._run_once", "Thread._bootstrap_inner", "WorkerThread.run"}


def classify(stack: list[str]) -> str:
    names = [frame.split(" (")[0] for frame in stack]
    start = max((index + 1 for index, name in enumerate(names) if name in DISPATCH), default=0)
    for frame in reversed(stack[start:]):  # the leaf first
        package = frame_package(frame)
        for name, packages in GROUPS.items():
            if package in packages:
                return name
        if package in TRANSPARENT or package in sys.stdlib_module_names or package.startswith("<"):
            continue
        return f"other: {package}"
    return EVENT_LOOP


def profile_shares(raw: Path) -> tuple[Counter, Counter, int, int]:
    """Samples by group and by leaf function (with its package); the total; the samples dropped as waits."""
    groups: Counter = Counter()
    leaves: Counter = Counter()
    total = waiting = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count, stack = int(count_text), stack_text.split(";")
        leaf = stack[-1].split(" (")[0]
        if leaf in WAITING:
            waiting += count
            continue
        groups[classify(stack)] += count
        leaves[f"{leaf} ({frame_package(stack[-1])})"] += count
        total += count
    return groups, leaves, total, waiting


async def profile_run(
    base: str, session: str | None, concurrency: int, calls: int, pids: dict, measured_ms: float | None
) -> None:
    """py-spy on the server over one more run; prints the shares, and with `measured_ms` (the median server
    CPU per call measured without py-spy at this concurrency) what each share is of it."""
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if spy is None:
        print("profile: py-spy is not installed (.venv/bin/pip install py-spy); skipped")
        return
    rate = 250
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "server.txt"
        spying = subprocess.Popen(
            [spy, "record", "--pid", str(pids["server"]), "--rate", str(rate), "--gil", "--format", "raw"]
            + ["--output", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        await asyncio.sleep(1.0)  # py-spy attached
        figures = await run_server(base, session, concurrency, calls, pids)
        spying.send_signal(signal.SIGINT)
        _, errors = spying.communicate(timeout=60)
        if not raw.exists():
            print(f"profile: py-spy wrote nothing ({errors.strip()[-300:]})")
            return
        groups, leaves, total, waiting = profile_shares(raw)
    print(
        f"\nprofile of the server: py-spy, {rate} samples/s, over {calls} calls at concurrency {concurrency} "
        f"(a run of its own: py-spy pauses the server at each sample); only the thread holding the GIL is "
        f"sampled (--gil: Python's CPU; C code that releases the GIL, such as Pillow's decoders, is missed). "
        f"{total} samples "
        f"(~{total / rate:.1f} s; /proc says {figures['cpu']:.1f} CPU-s in {figures['wall']:.1f} s), {waiting} "
        "samples of threads waiting on a lock dropped"
    )
    print("  share by what the time went to (the innermost frame of a group; h11, pydantic, anyio and the")
    print("  standard library charged to their caller):")
    for name, count in groups.most_common():
        of_call = f"  ~{count / total * measured_ms:.2f} ms/call" if measured_ms else ""
        print(f"    {count / total * 100:5.1f}%{of_call}  {name}")
    print("  hottest leaf functions (self time):")
    for name, count in leaves.most_common(15):
        print(f"    {count / total * 100:5.1f}%  {name}")


# -- main ---------------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    with (
        tempfile.TemporaryDirectory() as state,
        sandbox_process("--job-seconds", "0") as (settings, sandbox),
    ):
        env = clean_env({**settings, "FAL_MCP_PLUGINS": "image", "FAL_MCP_STATE_DIR": state})
        sandbox_url = sandbox_base(settings)
        port = int(sandbox_url.rsplit(":", 1)[1])
        with http_server(["--transport", "http"], env) as (server, base, _):
            session = await open_session(base)
            pids = {"server": server.pid, "sandbox": sandbox.pid, "load generator": os.getpid()}
            # the body the server sends, and the requests it makes per call, from the sandbox's records
            await run_server(base, session, 1, 3, pids)  # first calls: imports, caches
            sandbox_reset(sandbox_url)
            await run_server(base, session, 1, 5, pids)  # 2 warm-up + 5 calls
            submitted = sandbox_records(sandbox_url, "submissions")[-1]
            endpoint, body = submitted["endpoint_id"], submitted["input"]
            routes = Counter(r["route"] for r in sandbox_records(sandbox_url, "requests"))
            per_call = {route: count / 7 for route, count in routes.items()}
            results: dict[int, dict[str, list[dict]]] = {}
            for concurrency in concurrencies:
                results[concurrency] = {"server": [], "bare": []}
                for _ in range(args.runs):
                    sandbox_reset(sandbox_url)
                    results[concurrency]["server"].append(
                        await run_server(base, session, concurrency, args.calls, pids, port)
                    )
                    sandbox_reset(sandbox_url)
                    results[concurrency]["bare"].append(
                        run_bare(
                            settings, endpoint, body, concurrency, args.calls, sandbox.pid, args.bare_shared
                        )
                    )
            decode = preview_decode_ms(settings)
            print(run_facts())
            print(
                f"{TOOL} over streamable HTTP vs a bare httpx client, sandbox in its own process, job time 0; "
                f"closed loop, {args.calls} calls a run, median of {args.runs} runs (alternating)"
            )
            pool = (
                "one AsyncClient shared by all workers" if args.bare_shared else "an AsyncClient per worker"
            )
            print(f"bare client: plain httpx, {pool}")
            shown = ", ".join(f"{route} {count:g}" for route, count in sorted(per_call.items()))
            print(
                f"requests to fal per call made by the server: {shown} (the bare client makes the same four)"
            )
            print(f"body submitted to {endpoint}: {json.dumps(body)}")
            print()
            print(
                "concurrency | server CPU/call | bare CPU/call | ratio | calls/s server, bare | connections "
                "closed per call server, bare | sandbox CPU/call server run, bare run"
            )
            ok = True
            for concurrency, sides in results.items():
                server_ms = statistics.median(r["cpu"] / args.calls * 1000 for r in sides["server"])
                bare_ms = statistics.median(r["cpu"] / args.calls * 1000 for r in sides["bare"])
                ratio = server_ms / bare_ms
                ok &= ratio <= TARGET
                print(
                    f"{concurrency:11d} | {server_ms:12.2f} ms | {bare_ms:10.2f} ms | {ratio:5.2f} | "
                    f"{statistics.median(args.calls / r['wall'] for r in sides['server']):.1f}, "
                    f"{statistics.median(args.calls / r['wall'] for r in sides['bare']):.1f} | "
                    f"{statistics.median(r['closed'] / args.calls for r in sides['server']):.2f}, "
                    f"{statistics.median(r['closed'] / args.calls for r in sides['bare']):.2f} | "
                    f"{statistics.median(r['sandbox'] * 1000 for r in sides['server']):.2f} ms, "
                    f"{statistics.median(r['sandbox'] * 1000 for r in sides['bare']):.2f} ms"
                )
                every = ", ".join(
                    f"{s['cpu'] / args.calls * 1000:.2f}/{b['cpu'] / args.calls * 1000:.2f}"
                    for s, b in zip(sides["server"], sides["bare"], strict=True)
                )
                print(f"{'':11s}   runs (server/bare ms): {every}")
            if decode is not None:
                print(
                    f"of the server's extra: the preview (Pillow decode of the 1024x576 JPEG, passed through) plus "
                    f"its base64 cost {decode:.2f} ms CPU per call, measured in-process"
                )
            print(
                "(connections closed per call: TCP connections to the sandbox dropped instead of kept alive, "
                "from the sockets left in TIME-WAIT)"
            )
            print(f"target: server / bare <= {TARGET} at every concurrency: {'OK' if ok else 'MISSED'}")
            if args.profile:
                sandbox_reset(sandbox_url)
                sides = results.get(args.profile_concurrency)
                measured = (
                    statistics.median(r["cpu"] / args.calls * 1000 for r in sides["server"])
                    if sides
                    else None
                )
                await profile_run(base, session, args.profile_concurrency, args.profile_calls, pids, measured)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--bare":
        print(json.dumps(asyncio.run(bare_main(*json.loads(sys.argv[2])))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=150, help="calls a run (default 150)")
    parser.add_argument("--concurrency", default="1,10,50", help="comma-separated (default 1,10,50)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument(
        "--bare-shared",
        action="store_true",
        help="the bare client shares one AsyncClient (pool of 2 x concurrency) instead of one per worker",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy on the server during one more run")
    parser.add_argument("--profile-concurrency", type=int, default=10)
    parser.add_argument("--profile-calls", type=int, default=400)
    sys.exit(asyncio.run(main(parser.parse_args())))
