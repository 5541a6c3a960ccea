"""Scale-out that survives a lost replica (deploy/): three `fal-mcp serve --transport http` processes,
stateless, sharing one redis-server, behind HAProxy run with deploy/haproxy.cfg, and the offline
sandbox as a process of its own, all on 127.0.0.1.

The headline test (slow) sends 300 concurrent generate_image calls through the balancer; the sandbox
holds the first 240 jobs while one replica is killed with SIGKILL; the other 60 calls come after the
kill. Every call either completes, or (its connection died with the replica) its job, whose id the call
had from its first progress notification, is taken over by another replica and finished there, once:
lost = 0, and each fal request's result is fetched once, its output saved once, its cost settled once
(the budget's spending is exactly 300 calls' worth, and then exactly as many more calls as fit are
accepted, fired through different replicas). check_job and tasks/get answer for a job from every
surviving replica. The figures are printed (benchmarks/RESULTS.md keeps a run's).

A shorter test: a replica stopped with SIGTERM while a call waits on it cancels nothing on fal, and lets
its lease go as it stops, so another replica takes its jobs over without waiting for the lease to lapse.
And deploy/haproxy.cfg, as shipped, is valid for HAProxy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from fal_mcp import spending
from fal_mcp.spending import MICRO

from .conftest import free_port, server_env
from .test_budgets import unit_price
from .test_long_jobs import RawHttp

pytestmark = pytest.mark.anyio
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
TOKEN = "scale-out-token-0123456789abcdef"
STATE_KEY = "scale-out-state-key-0123456789abcdef0123"
BURST = 300  # calls
HELD = 240  # of them, held by the sandbox while a replica is killed; the rest are sent after the kill
SESSIONS = 10  # MCP client sessions through the balancer, the calls shared out among them
FITS = 5  # calls the budget has room for after the burst
IMAGE = {"model": "flux_schnell", "image_size": "square"}  # fal-ai/flux/schnell, 1024x1024
RECORDED = re.compile(r"Recorded as job (job_\S+):")
HANG_GUARD = 180  # seconds: only ever reached if something hangs


# -- the processes -----------------------------------------------------------------------------------


@contextmanager
def sandbox_process(tmp_path: Path):
    """`fal-mcp sandbox` as a process of its own: yields its settings (FAL_MCP_* and FAL_KEY) and base URL."""
    log = (tmp_path / "sandbox.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "fal_mcp.cli", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=server_env(),
    )
    try:
        settings: dict[str, str] = {}
        while "FAL_KEY" not in settings:  # the exports it prints, FAL_KEY last
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("the sandbox did not start: " + (tmp_path / "sandbox.log").read_text())
            name, _, value = line.removeprefix("export ").strip().partition("=")
            settings[name] = value
        yield settings, settings["FAL_MCP_QUEUE_URL"].removesuffix("/queue")
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Replica:
    process: subprocess.Popen
    base: str
    log: Path

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def replica(env: dict[str, str], log: Path):
    """`fal-mcp serve --transport http` on a free port, its stderr in `log`; yields once it listens."""
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fal_mcp.cli",
                "serve",
                "--transport",
                "http",
                "--port",
                "0",
                "--workers",
                "1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60  # a hang guard: until it says where it listens
        while True:
            found = re.search(r"listening on (http://\S+) ", log.read_text(errors="replace"))
            if found:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start: " + log.read_text(errors="replace"))
            time.sleep(0.05)
        yield Replica(process, found.group(1), log)
    finally:
        stop(process)


def haproxy_config(port: int, replicas: list[Replica], stats: Path) -> str:
    """deploy/haproxy.cfg with loopback addresses: the balancer on `port`, the replicas' ports in place
    of the compose services', and a stats socket the test reads the servers' states from."""
    text = (DEPLOY / "haproxy.cfg").read_text()
    text, bound = re.subn(r"(?m)^(\s+bind) :8080$", rf"\1 127.0.0.1:{port}", text)
    addresses = iter(f"127.0.0.1:{r.port}" for r in replicas)
    text, servers = re.subn(
        r"(?m)^(\s+server replica\d+) replica\d+:8080$", lambda m: f"{m.group(1)} {next(addresses)}", text
    )
    text, stated = re.subn(r"(?m)^global$", f"global\n    stats socket {stats} mode 600 level user", text)
    assert bound == 1 and servers == len(replicas) == 3 and stated == 1, "deploy/haproxy.cfg changed shape"
    return text


def haproxy() -> str:
    """The haproxy binary (Debian puts it in /usr/sbin, which a user's PATH may not have)."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip("haproxy is not installed (Debian package haproxy; .ci/run installs it)")
    return found


def check_config(path: Path) -> None:
    checked = subprocess.run([haproxy(), "-c", "-f", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0 and "Configuration file is valid" in checked.stdout, (
        checked.stdout + checked.stderr
    )


def server_states(stats: Path) -> dict[str, str]:
    """The backend's servers and their states (UP, DOWN...), from HAProxy's stats socket."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(10)
        connection.connect(str(stats))
        connection.sendall(b"show stat\n")
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].removeprefix("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {
        row["svname"]: row["status"]
        for row in rows
        if row["pxname"] == "replicas" and row["svname"] not in ("BACKEND", "FRONTEND")
    }


@contextmanager
def balancer(tmp_path: Path, replicas: list[Replica]):
    """HAProxy with deploy/haproxy.cfg in front of `replicas`; yields its base URL and stats socket."""
    binary = haproxy()
    port, stats = free_port(), tmp_path / "haproxy.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(port, replicas, stats))
    check_config(config)
    with (tmp_path / "haproxy.log").open("w") as log:
        process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60  # a hang guard: until every replica is UP
        while True:
            try:
                if set(server_states(stats).values()) == {"UP"}:
                    break
            except OSError:
                pass  # the socket is not there yet
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("haproxy did not start: " + (tmp_path / "haproxy.log").read_text())
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", stats
    finally:
        stop(process)


@asynccontextmanager
async def clients_of(base: str, count: int):
    """`count` MCP client sessions through `base`; closed one by one at the end (a session whose calls
    lost their replica may complain as it closes: that is not what is tested)."""
    opened = []
    try:
        for _ in range(count):
            client = mcp_client(base)
            opened.append(client)
            await client.__aenter__()
        yield [client for client in opened]
    finally:
        for client in reversed(opened):  # anyio's scopes: exited in the reverse order of entering
            try:
                await client.__aexit__(None, None, None)
            except Exception as exc:
                print(f"closing a client session: {exc!r}", file=sys.stderr)


def mcp_client(base: str):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=HANG_GUARD)
    return Client(streamable_http_client(base + "/mcp", http_client=http), mode="legacy")


# -- the calls ----------------------------------------------------------------------------------------


@dataclass
class Call:
    index: int
    job_id: str | None = None
    result: Any = None
    error: BaseException | None = None
    started: float = 0.0
    ended: float = 0.0
    done: anyio.Event = field(default_factory=anyio.Event)

    @property
    def prompt(self) -> str:
        return f"scale-out call {self.index}: a lighthouse at dusk"


async def run_call(client, call: Call, known: list[str]) -> None:
    async def on_progress(progress, total, message) -> None:
        found = RECORDED.match(message or "")
        if found and call.job_id is None:
            call.job_id = found.group(1)
            known.append(call.job_id)

    call.started = time.perf_counter()
    try:
        call.result = await client.call_tool(
            "generate_image", {"prompt": call.prompt, **IMAGE}, progress_callback=on_progress
        )
    except Exception as exc:  # the replica serving it was lost: the connection ended without an answer
        call.error = exc
    call.ended = time.perf_counter()
    call.done.set()


async def until(condition, what: str, poll: float = 0.05) -> None:
    """Wait until `condition()` (a coroutine function or a plain one) holds; a hang guard only."""
    try:
        with anyio.fail_after(HANG_GUARD):
            while True:
                value = condition()
                if hasattr(value, "__await__"):
                    value = await value
                if value:
                    return
                await anyio.sleep(poll)
    except TimeoutError:
        raise AssertionError(f"waited {HANG_GUARD} s for {what}") from None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def followers(redis, job_ids: list[str]) -> dict[str, str]:
    """The replica each job's record names as its follower (white-box: read from the store)."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(f"fal-mcp:job:{job_id}", "follower")
        found = await pipe.execute()
    return {job_id: json.loads(value) for job_id, value in zip(job_ids, found, strict=True)}


def pid_of(replica_id: str) -> int:
    return int(replica_id.split(":")[1])  # runner.replica_id: host:pid:random


# -- the headline test -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_300_calls_through_haproxy_lose_nothing_when_a_replica_is_killed(tmp_path, redis_url):
    import redis.asyncio

    out = tmp_path / "out"
    async with AsyncExitStack() as stack:
        settings, sandbox = stack.enter_context(sandbox_process(tmp_path))
        control = await stack.enter_async_context(
            httpx.AsyncClient(base_url=sandbox + "/_sandbox", timeout=60)
        )
        cost = round(await unit_price(settings, "fal-ai/flux/schnell") * 1024 * 1024)  # micro-USD a call
        budget = (BURST + FITS) * cost + cost // 2
        env = server_env(
            {
                **settings,
                "FAL_MCP_AUTH_TOKEN": TOKEN,
                "FAL_MCP_STORE": redis_url,
                "FAL_MCP_STATE_KEY": STATE_KEY,
                "FAL_MCP_STATELESS": "1",
                "FAL_MCP_LEASE_TTL": "6",
                "FAL_MCP_SWEEP_INTERVAL": "0.3",
                "FAL_MCP_BUDGET_DAILY": str(budget / MICRO),
                "FAL_MCP_HANDOFF_AFTER": "off",  # a call completes or dies: nothing in between
                "FAL_MCP_INLINE_PREVIEWS": "0",
                "FAL_MCP_OUTPUT_DIR": str(out),
                "FAL_MCP_LOG_LEVEL": "INFO",
            }
        )
        replicas = [stack.enter_context(replica(env, tmp_path / f"replica{n}.log")) for n in (1, 2, 3)]
        base, stats = stack.enter_context(balancer(tmp_path, replicas))
        victim, survivors = replicas[0], replicas[1:]
        store = await stack.enter_async_context(redis.asyncio.Redis.from_url(redis_url))
        day = spending.today()
        await control.post("/faults", json={"outcome": "hold", "times": HELD})

        async def held_is(count: int) -> bool:
            return len((await control.get("/held")).json()) == count

        calls = [Call(index) for index in range(BURST)]
        known: list[str] = []
        async with clients_of(base, SESSIONS) as clients, anyio.create_task_group() as group:
            t0 = time.perf_counter()
            for call in calls[:HELD]:
                group.start_soon(run_call, clients[call.index % SESSIONS], call, known)
            # every held call has its job recorded (and its id in hand), and the sandbox holds its job
            await until(lambda: len(known) == HELD, "every held call's job id")
            await until(lambda: held_is(HELD), "the held jobs")
            all_held = time.perf_counter()
            by_job = {call.job_id: call for call in calls[:HELD]}
            followed = await followers(store, list(by_job))
            assert {pid_of(f) for f in followed.values()} == {r.pid for r in replicas}
            doomed = {job_id for job_id, f in followed.items() if pid_of(f) == victim.pid}

            victim.process.kill()  # SIGKILL: no shutdown, no lease let go
            victim.process.wait()
            killed_at = time.perf_counter()
            for call in calls[HELD:]:  # the rest of the burst, through the balancer with a replica gone
                group.start_soon(run_call, clients[call.index % SESSIONS], call, known)

            # the calls the lost replica served end without an answer; every other call is still waiting
            await until(lambda: sum(1 for c in calls[:HELD] if c.error) == len(doomed), "the lost calls")
            died = {c.job_id for c in calls[:HELD] if c.done.is_set()}
            assert died == doomed and all(by_job[j].error is not None for j in died)

            # the survivors' sweeps take the lost replica's jobs over: one follower each, a survivor
            async def taken_over() -> bool:
                now = await followers(store, sorted(doomed))
                return all(pid_of(f) in {r.pid for r in survivors} for f in now.values())

            await until(taken_over, "the take-over", poll=0.1)
            takeover_seconds = time.perf_counter() - killed_at
            taken = await followers(store, sorted(doomed))
            shares = Counter(pid_of(f) for f in taken.values())

            # while the job is still running: check_job and tasks/get answer from every survivor, and
            # asking does not move the job (its follower stays the one that took it over)
            probe = sorted(doomed)[0]
            for survivor in survivors:
                async with mcp_client(survivor.base) as direct:
                    status = await direct.call_tool("check_job", {"job_id": probe})
                assert not status.is_error and status.structured_content["status"] in ("queued", "running")
                async with httpx.AsyncClient(timeout=60) as http:
                    raw = RawHttp(http, survivor.base, modern=False, token=TOKEN)
                    await raw.start()
                    task = (await raw.request("tasks/get", {"taskId": probe}))["result"]
                assert task["taskId"] == probe and task["status"] == "working", task
            assert await followers(store, [probe]) == {probe: taken[probe]}

            # the calls sent after the kill all complete (the balancer sent none to the lost replica
            # for good: a refused connection is tried on another)
            await until(lambda: all(c.done.is_set() for c in calls[HELD:]), "the calls after the kill")
            late = calls[HELD:]
            broken = [c for c in late if c.error or c.result.is_error]
            assert broken == [], [(c.index, c.error or c.result.content[0].text) for c in broken]
            assert all(c.job_id for c in late)
            states = server_states(stats)

            released_at = time.perf_counter()
            assert (await control.post("/release", json={})).json() == {"released": HELD}

            # the lost calls' jobs, by the ids their calls had, through the balancer
            finished: dict[str, Any] = {}
            finished_at: dict[str, float] = {}

            async def check(job_id: str, client) -> None:
                while True:
                    answer = await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 50})
                    assert not answer.is_error, answer.content[0].text
                    if answer.content[0].text.startswith("Job done"):
                        finished[job_id], finished_at[job_id] = answer, time.perf_counter()
                        return

            async with anyio.create_task_group() as checks:
                for n, job_id in enumerate(sorted(doomed)):
                    checks.start_soon(check, job_id, clients[n % SESSIONS])
            await until(lambda: all(c.done.is_set() for c in calls), "every call")
            ended = time.perf_counter()

        # -- what happened --------------------------------------------------------------------------
        direct = [c for c in calls if c.error is None]
        failed = [c for c in direct if c.result.is_error]
        assert failed == [], [(c.index, c.job_id, c.result.content[0].text) for c in failed[:3]]
        assert len(direct) + len(finished) == BURST and set(finished) == doomed
        request_ids = [c.result.structured_content["request_id"] for c in direct]
        request_ids += [answer.structured_content["request_id"] for answer in finished.values()]
        submitted = [s["request_id"] for s in (await control.get("/submissions")).json()]
        lost = set(submitted) - set(request_ids)
        assert len(submitted) == len(set(submitted)) == BURST and not lost and len(set(request_ids)) == BURST
        # each fal request followed to its end once: one result fetched, one output saved, nothing cancelled
        requests = (await control.get("/requests")).json()
        results = Counter(r["request_id"] for r in requests if r["route"] == "result")
        assert results == Counter(set(submitted)), [k for k, v in results.items() if v != 1]
        outcomes = [c.result for c in direct] + list(finished.values())
        unsaved = [
            a.structured_content["notes"]
            for a in outcomes
            if not a.structured_content["files"][0].get("local_path")
        ]
        assert unsaved == [] and len(list(out.iterdir())) == BURST, unsaved[:3]
        assert (await control.get("/cancels")).json() == []
        assert await store.scard("fal-mcp:set:unfinished") == 0

        # the same finished job, from each survivor directly: check_job and tasks/get
        answers = []
        for survivor in survivors:
            async with mcp_client(survivor.base) as direct_client:
                answers.append(await direct_client.call_tool("check_job", {"job_id": probe}))
            async with httpx.AsyncClient(timeout=60) as http:
                raw = RawHttp(http, survivor.base, modern=False, token=TOKEN)
                await raw.start()
                task = (await raw.request("tasks/get", {"taskId": probe}))["result"]
            assert task["status"] == "completed", task
        assert answers[0].content[0].text.startswith("Job done")
        assert [a.content[0].text for a in answers[1:]] == [answers[0].content[0].text]
        assert answers[0].structured_content["files"] == answers[1].structured_content["files"]

        # the budget held across replicas: the burst spent exactly 300 calls' worth (each settled once);
        # of 3 × FITS more calls through the balancer, exactly FITS fit
        async with mcp_client(base) as client:
            listed = await client.call_tool("list_jobs", {"limit": 100})
            assert [j["status"] for j in listed.structured_content["jobs"]] == ["done"] * 100
            spent = (await client.call_tool("get_budget", {})).structured_content["day"]["spent"]
            extra: list[Any] = []

            async def one_more() -> None:
                extra.append(await client.call_tool("generate_image", {"prompt": "one more", **IMAGE}))

            async with anyio.create_task_group() as group:
                for _ in range(3 * FITS):
                    group.start_soon(one_more)
        accepted = [r for r in extra if not r.is_error]
        refused = [r.content[0].text for r in extra if r.is_error]
        if spending.today() == day:  # not across midnight UTC, when budgets start again
            assert round(spent * MICRO) == BURST * cost
            assert len(accepted) == FITS and len(refused) == 2 * FITS
            assert all("Nothing was submitted" in text for text in refused), refused[0]
            assert len((await control.get("/submissions")).json()) == BURST + FITS
        logs = "".join(r.log.read_text(errors="replace") for r in survivors)
        assert "took over" in logs and str(victim.pid) in logs

        # -- the figures ------------------------------------------------------------------------------
        late_latency = [c.ended - c.started for c in late]
        held_direct = [c.ended - released_at for c in calls[:HELD] if c.error is None]
        handed_off = [finished_at[j] - released_at for j in doomed]
        figures = {
            "calls": BURST,
            "replicas": 3,
            "completed directly": len(direct),
            "handed off and finished by another replica": len(finished),
            "lost": len(lost),
            "kill to take-over (s)": round(takeover_seconds, 2),
            "taken over by each survivor": [shares[r.pid] for r in survivors],
            "after the kill, call latency p50/p99 (s)": (
                round(statistics.median(late_latency), 3),
                round(percentile(late_latency, 0.99), 3),
            ),
            "held calls, release to result p50/p99 (s)": (
                round(statistics.median(held_direct), 3),
                round(percentile(held_direct, 0.99), 3),
            ),
            "taken-over jobs, release to check_job result p50/p99 (s)": (
                round(statistics.median(handed_off), 3),
                round(percentile(handed_off, 0.99), 3),
            ),
            "burst wall time (s)": round(ended - t0, 2),
            "first 240 calls held and recorded after (s)": round(all_held - t0, 2),
            "balancer states after the kill": states,
            "budget: accepted of 3x more": f"{len(accepted)} of {len(extra)}",
        }
        print("\nscale-out:", json.dumps(figures, indent=1))


# -- a replica stopped normally ---------------------------------------------------------------------


async def test_a_replica_stopped_with_sigterm_cancels_nothing_and_lets_its_jobs_go_at_once(
    tmp_path, redis_url
):
    """SIGTERM while a call waits for its job and another job was handed off: no fal request is
    cancelled (the waiting request ended by the shutdown is not a client cancelling), the replica lets
    its lease go as it stops, and the other replica takes both jobs over at once (its lease would not
    lapse for ten minutes)."""
    import redis.asyncio

    async with AsyncExitStack() as stack:
        settings, sandbox = stack.enter_context(sandbox_process(tmp_path))
        control = await stack.enter_async_context(
            httpx.AsyncClient(base_url=sandbox + "/_sandbox", timeout=60)
        )
        store = await stack.enter_async_context(redis.asyncio.Redis.from_url(redis_url))
        env = server_env(
            {
                **settings,
                "FAL_MCP_AUTH_TOKEN": TOKEN,
                "FAL_MCP_STORE": redis_url,
                "FAL_MCP_STATE_KEY": STATE_KEY,
                "FAL_MCP_STATELESS": "1",
                "FAL_MCP_HANDOFF_AFTER": "off",
                "FAL_MCP_LEASE_TTL": "600",
                "FAL_MCP_SWEEP_INTERVAL": "0.1",
                "FAL_MCP_LOG_LEVEL": "INFO",
            }
        )
        await control.post("/faults", json={"outcome": "hold", "times": 2})
        first = stack.enter_context(replica(env, tmp_path / "first.log"))
        second = stack.enter_context(replica(env, tmp_path / "second.log"))
        async with mcp_client(first.base) as client:
            submitted = await client.call_tool(
                "submit_job", {"tool": "generate_image", "arguments": {"prompt": "handed off", **IMAGE}}
            )
            waiting, known = Call(0), []
            async with anyio.create_task_group() as group:
                group.start_soon(run_call, client, waiting, known)

                async def both_held() -> bool:
                    return len((await control.get("/held")).json()) == 2 and len(known) == 1

                await until(both_held, "both jobs held")
                jobs = [submitted.structured_content["job_id"], waiting.job_id]
                assert {pid_of(f) for f in (await followers(store, jobs)).values()} == {first.pid}
                (lease,) = {f"fal-mcp:lease:{f}" for f in (await followers(store, jobs)).values()}
                assert await store.exists(lease)

                first.process.send_signal(signal.SIGTERM)
                assert await anyio.to_thread.run_sync(lambda: first.process.wait(timeout=60)) == 0
                await until(waiting.done.is_set, "the waiting call's end")
        assert waiting.error is not None  # its connection ended with the replica; its job did not
        assert not await store.exists(lease)  # let go as it stopped, not left to lapse
        assert "let its lease go" in first.log.read_text()

        async def taken() -> bool:
            return {pid_of(f) for f in (await followers(store, jobs)).values()} == {second.pid}

        await until(taken, "the take-over")
        await control.post("/release", json={})
        async with mcp_client(second.base) as client:
            for job_id in jobs:
                done = await client.call_tool("check_job", {"job_id": job_id, "wait_seconds": 50})
                assert done.content[0].text.startswith("Job done"), done.content[0].text
        assert (await control.get("/cancels")).json() == []
        assert len((await control.get("/submissions")).json()) == 2


def test_the_deploy_config_is_valid_haproxy(tmp_path):
    """deploy/haproxy.cfg as shipped (the compose services' names cannot be resolved here: warnings)."""
    check_config(DEPLOY / "haproxy.cfg")
    assert "FAL_MCP_STORE: redis://redis:6379/0" in (DEPLOY / "compose.yaml").read_text()
    assert os.path.exists(DEPLOY / "Dockerfile") and (DEPLOY / "README.md").exists()
