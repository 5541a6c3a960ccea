"""The job store: SQLite and Redis pass the same suite (Redis is a real redis-server on a free port)."""

from __future__ import annotations

import time

import anyio
import pytest

from fal_mcp.store import JobRecord, open_store

from .conftest import redis_url  # noqa: F401 (a fixture)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "redis"])
async def store(request, tmp_path):
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
    elif request.param == "sqlite-file":
        url = f"sqlite:///{tmp_path}/state/jobs.sqlite3"
    else:
        url = "sqlite:///:memory:"
    opened = open_store(url)
    try:
        yield opened
    finally:
        await opened.aclose()


def record(job_id: str, owner: str = "alice", created: float | None = None, **values) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        owner=owner,
        tool="generate_video",
        arguments={"prompt": "a"},
        created_at=created if created is not None else time.time(),
        **values,
    )


async def test_a_record_round_trips(store):
    added = record(
        "j1", endpoint_id="fal-ai/x", request_id="r1", estimate={"endpoint_id": "fal-ai/x", "charged": 250000}
    )
    await store.add(added)
    assert await store.get("j1") == added
    assert await store.get("nope") is None


async def test_updates_change_only_what_they_name(store):
    await store.add(record("j1"))
    before = await store.get("j1")
    updated = await store.update("j1", status="running", progress="In queue, position 2")
    assert updated.status == "running" and updated.progress == "In queue, position 2"
    assert updated.arguments == {"prompt": "a"} and updated.updated_at >= before.updated_at
    done = await store.update("j1", status="done", result={"text": "ok", "structured": {"files": []}})
    assert (await store.get("j1")).result == {"text": "ok", "structured": {"files": []}} and done.finished
    assert await store.update("missing", status="done") is None
    assert await store.get("missing") is None


async def test_lists_are_per_owner_and_newest_first(store):
    now = time.time()
    for index in range(5):
        await store.add(record(f"a{index}", "alice", now + index))
    await store.add(record("b0", "bob", now))
    assert [r.job_id for r in await store.list("alice")] == ["a4", "a3", "a2", "a1", "a0"]
    assert [r.job_id for r in await store.list("alice", limit=2)] == ["a4", "a3"]
    assert [r.job_id for r in await store.list("bob")] == ["b0"]
    assert await store.list("carol") == []


async def test_unfinished_jobs_are_found_for_resuming(store):
    await store.add(record("running", status="running"))
    await store.add(record("queued", status="queued"))
    await store.add(record("done", status="done"))
    await store.update("queued", status="cancelled")
    assert {r.job_id for r in await store.unfinished()} == {"running"}


async def test_retention_forgets_old_and_extra_finished_jobs_but_never_unfinished_ones(store):
    now = time.time()
    await store.add(record("old-done", created=now - 100, status="done"))
    await store.add(record("old-running", created=now - 100, status="running"))
    for index in range(4):
        await store.add(record(f"new{index}", created=now + index, status="done"))
    await store.add(record("bob-old", "bob", now - 100, status="failed"))
    removed = await store.prune(max_age=50, per_owner=3)
    assert removed == 3  # old-done, new0 (4th newest of alice's), bob-old
    assert [r.job_id for r in await store.list("alice")] == ["new3", "new2", "new1", "old-running"]
    assert await store.list("bob") == []


async def test_concurrent_updates_of_different_fields_keep_both(store):
    await store.add(record("j1"))
    async with anyio.create_task_group() as group:
        for index in range(20):
            group.start_soon(lambda i=index: store.update("j1", progress=f"log {i}"))
            group.start_soon(lambda i=index: store.update("j1", cost={"cost": float(i)}))
    found = await store.get("j1")
    assert found.progress.startswith("log ") and found.cost is not None


async def test_a_replica_lease_holds_until_it_lapses_or_is_dropped(store):
    await store.hold_lease("a", 30)
    await store.hold_lease("b", 30)
    assert await store.alive(["a", "b", "c"]) == {"a", "b"} and await store.alive([]) == set()
    await store.drop_lease("b")
    assert await store.alive(["a", "b"]) == {"a"}
    await store.hold_lease("short", 0.3)
    with anyio.fail_after(30):  # a hang guard: the lease lapses by itself
        while await store.alive(["short"]):
            await anyio.sleep(0.05)
    await store.hold_lease("short", 30)  # renewed (taken again) after it lapsed
    assert await store.alive(["short", "a"]) == {"short", "a"}


async def test_a_job_is_claimed_by_one_replica_only_when_its_follower_is_gone(store):
    await store.add(record("j1", status="running", follower="a", request_id="r1"))
    await store.hold_lease("a", 30)
    assert await store.claim("j1", "b") is None  # a follows it
    assert (await store.claim("j1", "a")).follower == "a"  # its own follower may
    await store.drop_lease("a")
    winners = []

    async def claim(replica: str) -> None:
        await store.hold_lease(replica, 30)  # a replica claims only while it holds its lease
        found = await store.claim("j1", replica)
        if found is not None:
            winners.append(replica)

    async with anyio.create_task_group() as group:
        for index in range(12):
            group.start_soon(claim, f"r{index}")
    assert len(winners) == 1
    found = await store.get("j1")
    assert found.follower == winners[0] and found.status == "running" and found.request_id == "r1"
    assert await store.claim("missing", "b") is None


async def test_only_the_follower_records_a_jobs_end_and_only_once(store):
    await store.add(record("j1", status="running", follower="a"))
    await store.hold_lease("a", 30)
    await store.hold_lease("b", 30)
    assert await store.finish("j1", "b", status="done", result={"text": "b"}) is None
    assert (await store.get("j1")).status == "running"
    done = await store.finish("j1", "a", status="done", progress="Done", result={"text": "a"})
    assert done.status == "done" and done.result == {"text": "a"} and done.follower == "a"
    assert await store.unfinished() == []
    assert await store.finish("j1", "a", status="failed", error="late") is None  # it ended already
    assert await store.claim("j1", "b") is None
    found = await store.get("j1")
    assert (found.status, found.result, found.error) == ("done", {"text": "a"}, None)
    # a job recorded before replicas had leases names no follower: any replica may take it
    await store.add(record("old", status="queued"))
    assert (await store.claim("old", "b")).follower == "b"
    await store.drop_lease("b")  # b is gone: a finishes what b followed
    failed = await store.finish("old", "a", status="failed", error="x")
    assert failed.status == "failed" and failed.follower == "a" and await store.unfinished() == []


async def test_a_file_store_survives_reopening(tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.sqlite3"
    first = open_store(url)
    await first.add(record("kept", status="running"))
    await first.aclose()
    second = open_store(url)
    try:
        assert (await second.get("kept")).status == "running"
        assert [r.job_id for r in await second.unfinished()] == ["kept"]
    finally:
        await second.aclose()
    assert oct((tmp_path / "jobs.sqlite3").stat().st_mode & 0o777) == "0o600"


def test_a_bad_store_url_names_the_setting():
    from fal_mcp.config import ConfigError

    with pytest.raises(ConfigError, match="FAL_MCP_STORE"):
        open_store("postgres://x")


async def test_replicas_opening_one_new_file_at_once_all_start(tmp_path):
    """Switching a new file to WAL needs it alone; SQLite refuses at once (no waiting) while another
    process's connection is opening it too. Every store must open anyway."""
    from fal_mcp.store import SqliteStore

    for round_ in range(10):
        stores = [SqliteStore(str(tmp_path / f"jobs-{round_}.sqlite3")) for _ in range(8)]
        try:
            async with anyio.create_task_group() as group:
                for store in stores:
                    group.start_soon(store.spent, "alice", "2026-01-01")
        finally:
            for store in stores:
                await store.aclose()


# -- SQLite: progress and ledger lines ride with the next statement ------------------------------------


async def test_a_jobs_progress_and_ledger_line_ride_with_its_end_in_one_trip(tmp_path):
    """A followed job's progress (status queued/running) and a ledger correction are not a trip to the
    worker thread each: they are written with the next statement (the job's end here), and nothing is
    lost: what the job's end and the ledger say is on disk when `finish` returns."""
    url = f"sqlite:///{tmp_path}/jobs.sqlite3"
    store, other = open_store(url), open_store(url)  # `other`: another replica, reading the same file
    try:
        await store.hold_lease("a", 30)
        await store.add(record("j1", status="queued", follower="a", request_id="r1"))
        assert (await other.get("j1")).request_id == "r1"  # the paid request is on disk at once
        trips = store.trips
        updated = await store.update("j1", status="running", progress="Running")
        assert (updated.status, updated.progress, updated.request_id) == ("running", "Running", "r1")
        await store.adjust("alice", "2026-01-02", "fal-ai/x", charged=250_000, estimated=250_000, calls=1)
        assert store.trips == trips  # nothing sent to the worker thread yet
        assert (await store.claim("j1", "a")) is not None  # still its follower
        done = await store.finish("j1", "a", status="done", progress="Done", result={"text": "ok"})
        assert store.trips == trips + 2  # the claim and the end: one trip each, the rest rode along
        assert (done.status, done.progress, done.request_id) == ("done", "Done", "r1")
        found = await other.get("j1")
        assert (found.status, found.progress, found.result) == ("done", "Done", {"text": "ok"})
        assert await other.spent("alice", "2026-01-02") == {"day": 250_000, "month": 250_000}
    finally:
        await store.aclose()
        await other.aclose()


async def test_deferred_writes_are_seen_at_once_here_and_never_reopen_an_ended_job(tmp_path):
    url = f"sqlite:///{tmp_path}/jobs.sqlite3"
    store, other = open_store(url), open_store(url)
    try:
        await store.add(record("j1", status="queued", follower="a", request_id="r1"))
        await store.update("j1", status="running", progress="In queue, position 3")
        await store.adjust("alice", "2026-01-02", "fal-ai/x", charged=100, estimated=100, calls=1)
        # this process reads its own writes, and checks budgets with them
        assert (await store.get("j1")).progress == "In queue, position 3"
        assert await store.charge("alice", "2026-01-02", "fal-ai/x", 50, {"day": 120}) == ("day", 100)
        assert (await other.get("j1")).status == "running"  # on disk with that statement
        # progress deferred while another replica ends the job: the job stays as it ended
        await store.update("j1", status="running", progress="Running: step 2")
        await other.update("j1", status="cancelled", progress="Cancelled by the client")
        await store.hold_lease("a", 30)  # any statement writes the deferred ones first
        found = await other.get("j1")
        assert (found.status, found.progress) == ("cancelled", "Cancelled by the client")
        # what is still deferred when the store closes is written then
        await store.add(record("j2", status="queued", follower="a", request_id="r2"))
        await store.update("j2", status="running", progress="Running")
        await store.adjust("alice", "2026-01-02", "fal-ai/x", charged=7)
    finally:
        await store.aclose()
    try:
        assert (await other.get("j2")).progress == "Running"
        assert (await other.spent("alice", "2026-01-02"))["day"] == 107
    finally:
        await other.aclose()


async def test_only_progress_of_a_followed_job_waits(tmp_path):
    """What a job's recovery needs (its request id, an end, a follower) is written before the call
    returns, like a progress update of a job this store did not record."""
    url = f"sqlite:///{tmp_path}/jobs.sqlite3"
    store, other = open_store(url), open_store(url)
    try:
        await other.add(record("theirs", status="queued", follower="b"))
        await store.add(record("j1", status="submitted", follower="a"))
        await store.update("j1", status="queued", request_id="r1", endpoint_id="fal-ai/x")
        assert (await other.get("j1")).request_id == "r1"
        await store.update("j1", status="cancelled", progress="Cancelled by the client")
        assert (await other.get("j1")).status == "cancelled"
        await store.update("theirs", status="running", progress="Running")  # not recorded here
        assert (await other.get("theirs")).status == "running"
    finally:
        await store.aclose()
        await other.aclose()
