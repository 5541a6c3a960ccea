"""The job store: every fal request the server starts, recorded at submit, kept across restarts and
shared by replicas. One interface, two engines:

- SQLite (the default): a file in the user's state directory, no setup; `sqlite:///:memory:` keeps
  the store in this process only (the offline sandbox's default: its jobs die with it).
- Redis, for several replicas: `redis://host:port/db`, through the `redis` package's asyncio client.

Beside jobs, the store keeps what spending.py needs to hold across replicas and restarts: one-time
confirmation tokens and each owner's spending by day (the ledger, which budgets are checked against).
Amounts are integers of micro-USD, so that sums are exact.

Retention is bounded: finished jobs older than `FAL_MCP_JOB_RETENTION_DAYS`, and beyond
`FAL_MCP_JOBS_PER_OWNER` per owner, are forgotten (their files stay at fal's URLs). Unfinished jobs
are never forgotten: they were paid for.

Replicas (processes sharing a store) each hold a lease: a replica id with an expiry, renewed while the
replica runs (`FAL_MCP_LEASE_TTL`). A job names the replica that follows it (`follower`); a job whose
follower's lease has lapsed (the replica was lost, or stopped and dropped its lease) is claimed by
another, atomically, so that exactly one follows it on, and only its follower records its end
(`claim`, `finish`). runner.py decides when.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Iterable

    from redis.asyncio import Redis

log = logging.getLogger(__name__)
FINISHED = ("done", "failed", "cancelled")
STATUSES = ("submitted", "queued", "running", *FINISHED)
# SqliteStore: the longest a deferred write (progress, a ledger correction) waits for the next statement
# before it is written on its own.
FLUSH_DELAY = 1.0


@dataclass
class JobRecord:
    job_id: str
    owner: str  # the principal's key: only its owner sees the job
    tool: str
    arguments: dict[str, Any]  # the tool's validated arguments, media inputs resolved (to finish it again)
    endpoint_id: str = ""
    request_id: str = ""  # fal's, once submitted
    status: str = "submitted"
    progress: str | None = None  # the latest queue position or log line
    result: dict[str, Any] | None = None  # the tool's result once done: {"text", "structured"}
    error: str | None = None
    estimate: dict[str, Any] | None = None  # spending.Spend of the fal request, before it was submitted
    cost: dict[str, Any] | None = None  # the receipt (spending.Receipt) once done
    follower: str = ""  # the replica following the job (its lease says whether it still runs)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> str:
        # What json.dumps(asdict(self)) gives, without asdict's deep copy of every value (the result, the
        # arguments) made only to be encoded: a dataclass met inside is encoded as asdict would.
        values = {name: getattr(self, name) for name in _RECORD_FIELDS}
        return json.dumps(values, separators=(",", ":"), default=_as_json)

    @classmethod
    def from_json(cls, text: str | bytes) -> JobRecord:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})


_RECORD_FIELDS = tuple(f.name for f in fields(JobRecord))


def _as_json(value: Any) -> Any:
    from dataclasses import is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class JobStore(Protocol):
    """What every engine does. All methods are coroutines; none blocks the event loop."""

    async def add(self, record: JobRecord) -> None: ...

    async def get(self, job_id: str) -> JobRecord | None: ...

    async def update(self, job_id: str, **changes: Any) -> JobRecord | None:
        """Apply `changes` (and a new updated_at); the record after, or None if there is none."""

    async def list(self, owner: str, limit: int = 50) -> list[JobRecord]:
        """The owner's jobs, newest first."""

    async def unfinished(self) -> builtins.list[JobRecord]:  # `list` here is the method above
        """Every job not yet done, failed or cancelled, whoever owns it (to resume following them)."""

    async def prune(self, max_age: float, per_owner: int) -> int:
        """Forget finished jobs older than `max_age` seconds or beyond `per_owner` per owner."""

    async def hold_lease(self, replica: str, ttl: float) -> None:
        """Take or renew `replica`'s lease for `ttl` seconds: while it holds, the jobs it follows are its own."""

    async def drop_lease(self, replica: str) -> None:
        """End `replica`'s lease at once (it stops): other replicas may take its jobs over now."""

    async def alive(self, replicas: Iterable[str]) -> set[str]:
        """Those of `replicas` whose lease holds now."""

    async def claim(self, job_id: str, replica: str) -> JobRecord | None:
        """Make `replica` the follower of an unfinished job that it follows already, that nobody follows,
        or whose follower's lease has lapsed; the record after. None otherwise (another replica follows
        it, it has ended, there is no such job). Atomic: of replicas claiming one job, one wins."""

    async def finish(self, job_id: str, replica: str, **changes: Any) -> JobRecord | None:
        """`update` for the end of a job (`changes` name its final status), made only on the condition
        `claim` has, in the same atomic step: a job ends once, recorded by its one follower. None if the
        condition failed (nothing is changed)."""

    async def by_request(self, request_id: str) -> JobRecord | None:
        """The job whose fal request is `request_id` (a webhook names only that), or None."""

    async def first_seen(self, key: str, expires_at: float) -> bool:
        """Record `key` (a verified webhook delivery) until `expires_at` and return True, unless it is
        recorded already: then False. Atomic across replicas (the webhooks' ReplayGuard)."""

    async def put_outcome(self, request_id: str, outcome: str, expires_at: float) -> bool:
        """Keep a fal request's outcome (JSON, from its verified webhook) until `expires_at`, unless one is
        kept already: the first one stays. True if this one was kept."""

    async def outcomes(self, request_ids: Iterable[str]) -> dict[str, str]:
        """The outcomes kept for those of `request_ids` that have one (by request id)."""

    async def put_token(self, token: str, binding: str, expires_at: float) -> None:
        """Keep a confirmation token, bound to one call (`binding`), until `expires_at` (epoch seconds)."""

    async def take_token(self, token: str, binding: str) -> bool:
        """Use a token up: True only if it exists, has not expired, is bound to `binding`, and this caller
        is the one that removed it (so a token is used once, whatever the number of replicas)."""

    async def charge(
        self, owner: str, day: str, endpoint_id: str, amount: int, limits: dict[str, int]
    ) -> tuple[str, int] | None:
        """Add `amount` to the owner's spending on `day` (YYYY-MM-DD, UTC) for one call of `endpoint_id`,
        unless that would take the day's or the month's total past `limits` ("day", "month"): then
        nothing is charged and the answer is (that period, what was spent in it). Atomic."""

    async def adjust(
        self, owner: str, day: str, endpoint_id: str, *, charged: int, estimated: int = 0, calls: int = 0
    ) -> None:
        """Correct a charge by `charged` (the receipt's cost less the estimate charged; a refund is
        negative), and the estimate and call count likewise. Never refused: the money is spent already."""

    async def spent(self, owner: str, day: str) -> dict[str, int]:
        """What the owner spent on `day` and in its month: {"day": ..., "month": ...}."""

    async def ledger(self, owner: str, first_day: str, last_day: str) -> builtins.list[LedgerRow]:
        """The owner's spending per day and endpoint between the two days, inclusive."""

    async def aclose(self) -> None: ...


@dataclass
class LedgerRow:
    day: str
    endpoint_id: str
    calls: int
    estimated: int  # micro-USD estimated before submitting
    charged: int  # micro-USD: the receipts' costs, and the estimates of jobs not finished yet


def open_store(url: str) -> JobStore:
    """The store at `url`: `sqlite:///path`, `sqlite:///:memory:` or `redis://host:port/db`."""
    from .config import ConfigError

    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/:memory:") else path
        return SqliteStore(path or ":memory:")
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    raise ConfigError(f"FAL_MCP_STORE={url[:100]!r} must be sqlite:///<path> or redis://host:port/db")


class SqliteStore:
    """One SQLite file (WAL, so several processes on one machine can share it). Every statement runs
    in a worker thread, one at a time, on one connection.

    Each trip to the worker thread costs more CPU than the statement it carries, so two kinds of write
    that nothing depends on at once ride along with the next trip instead of taking one of their own
    (within FLUSH_DELAY at the latest, and at aclose): a running job's progress (`update` naming only
    `status` queued or running and `progress`, of a job this store follows: the job and its fal request
    id are stored already, and an unfinished job is resumed alike whatever its progress says), merged
    into the job's next write (`finish`, which supersedes it, or `update`) when that comes first; and a
    ledger correction (`adjust`: the charge settled, or a refund). Every statement of this process
    applies them first, so what this process reads or checks (budgets: `charge`) includes them; other
    processes see them within FLUSH_DELAY. A progress write never changes a job that has ended."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS jobs (
            job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, body TEXT NOT NULL);
        CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_at);
        CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status);
        CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, binding TEXT NOT NULL, expires_at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS ledger (
            owner TEXT NOT NULL, day TEXT NOT NULL, endpoint_id TEXT NOT NULL,
            calls INTEGER NOT NULL, estimated INTEGER NOT NULL, charged INTEGER NOT NULL,
            PRIMARY KEY (owner, day, endpoint_id));
        CREATE TABLE IF NOT EXISTS leases (replica TEXT PRIMARY KEY, expires_at REAL NOT NULL);
        CREATE INDEX IF NOT EXISTS jobs_by_request ON jobs (json_extract(body, '$.request_id'));
        CREATE TABLE IF NOT EXISTS deliveries (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS outcomes (
            request_id TEXT PRIMARY KEY, body TEXT NOT NULL, expires_at REAL NOT NULL);
    """

    def __init__(self, path: str) -> None:
        import threading

        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # Deferred writes (the class's doc), taken by whichever worker thread runs next.
        self._pending_lock = threading.Lock()
        self._progress: dict[str, dict[str, Any]] = {}  # job id -> status/progress changes to write
        self._ledger: builtins.list[tuple[str, str, str, int, int, int]] = []  # adjust's rows to add
        # Unfinished jobs this store wrote (added, claimed, updated): what a deferred `update` returns.
        self._followed: dict[str, JobRecord] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task] = set()
        self.trips = 0  # trips to the worker thread (statements run), for tests and benchmarks

    def _connect(self) -> sqlite3.Connection:
        import os
        import sqlite3

        if self._connection is None:
            if self.path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            if self.path != ":memory:":
                self._use_wal(connection)
                # WAL with NORMAL: a commit survives the process being killed (not a power cut) without an
                # fsync per write; progress updates come several times a job.
                connection.execute("PRAGMA synchronous=NORMAL")
                os.chmod(self.path, 0o600)  # prompts and results are the user's own
            connection.executescript(self.SCHEMA)
            self._connection = connection
        return self._connection

    @staticmethod
    def _use_wal(connection: sqlite3.Connection) -> None:
        """WAL, so processes share the file. Switching to it needs the file to itself, and SQLite answers
        "locked" at once, without waiting, while another process (a replica starting too) holds it."""
        import sqlite3

        for attempt in range(400):  # about 20 s
            try:
                if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 399:
                    raise
                time.sleep(0.05)

    async def _run(self, work, *args, keep: str | None = None):
        """`work(connection, *args)` in a worker thread, after the deferred writes (all but the progress
        of job `keep`, which `work` writes or supersedes itself)."""
        import anyio

        def locked():
            with self._lock:
                connection = self._connect()
                self._write_deferred(connection, keep)
                return work(connection, *args)

        self.trips += 1
        return await anyio.to_thread.run_sync(locked)

    # -- deferred writes ----------------------------------------------------------------------------

    def _defer(self) -> bool:
        """Make sure deferred writes are written within FLUSH_DELAY; False if they cannot be (no event
        loop of asyncio's here): the caller writes now."""
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            self._timer = loop.call_later(FLUSH_DELAY, self._flush_deferred)
        return True

    def _flush_deferred(self) -> None:
        self._timer = None
        with self._pending_lock:
            if not self._progress and not self._ledger:
                return  # written already, with another statement

        async def flush() -> None:
            try:
                await self._run(lambda connection: None)
            except Exception as exc:  # kept, tried again with the next statement
                log.warning("could not write to the job store: %s", exc)

        task = asyncio.get_running_loop().create_task(flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def _take_progress(self, job_id: str) -> dict[str, Any]:
        with self._pending_lock:
            return self._progress.pop(job_id, {})

    def _write_deferred(self, connection, keep: str | None = None) -> None:
        """Write the deferred writes (in the worker thread, holding the connection), in one transaction;
        put back if that fails."""
        with self._pending_lock:
            if not self._ledger and (not self._progress or list(self._progress) == [keep]):
                return
            ledger, self._ledger = self._ledger, []
            progress = {job_id: changes for job_id, changes in self._progress.items() if job_id != keep}
            for job_id in progress:
                del self._progress[job_id]
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for owner, day, endpoint_id, calls, estimated, charged in ledger:
                    self._add(
                        connection, owner, day, endpoint_id, calls=calls, estimated=estimated, charged=charged
                    )
                for job_id, changes in progress.items():
                    row = connection.execute("SELECT body FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                    if row is None:
                        continue
                    record = JobRecord.from_json(row[0])
                    if record.finished:  # ended meanwhile (here or by another replica): left as it ended
                        continue
                    for name, value in changes.items():
                        setattr(record, name, value)
                    record.updated_at = time.time()
                    self._write(connection, record)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except BaseException:
            with self._pending_lock:
                self._ledger[:0] = ledger
                for job_id, changes in progress.items():
                    self._progress[job_id] = {**changes, **self._progress.get(job_id, {})}
            raise

    def _followed_now(self, record: JobRecord | None, job_id: str) -> None:
        """Keep what a deferred `update` of the job returns, while it is unfinished."""
        if record is None or record.finished:
            self._followed.pop(job_id, None)
        elif job_id in self._followed or len(self._followed) < 10_000:
            self._followed[job_id] = replace(record)

    @staticmethod
    def _write(connection, record: JobRecord) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.job_id,
                record.owner,
                record.status,
                record.created_at,
                record.updated_at,
                record.to_json(),
            ),
        )

    async def add(self, record: JobRecord) -> None:
        await self._run(self._write, record)
        self._followed_now(record, record.job_id)

    async def get(self, job_id: str) -> JobRecord | None:
        def work(connection):
            row = connection.execute("SELECT body FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            return JobRecord.from_json(row[0]) if row else None

        return await self._run(work)

    async def update(self, job_id: str, **changes: Any) -> JobRecord | None:
        followed = self._followed.get(job_id)
        if (
            followed is not None
            and changes
            and set(changes) <= {"status", "progress"}
            and changes.get("status", "running") in ("queued", "running")
            and self._defer()
        ):  # progress: written with the next statement (the class's doc)
            with self._pending_lock:
                self._progress[job_id] = {**self._progress.get(job_id, {}), **changes}
            for name, value in changes.items():
                setattr(followed, name, value)
            followed.updated_at = time.time()
            return replace(followed)

        def work(connection):
            connection.execute("BEGIN IMMEDIATE")  # read, change and write as one, across processes too
            try:
                row = connection.execute("SELECT body FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                deferred = self._take_progress(job_id)  # superseded by `changes` where they overlap
                if row is None:
                    return None
                record = JobRecord.from_json(row[0])
                for name, value in {**deferred, **changes}.items():
                    setattr(record, name, value)
                record.updated_at = time.time()
                self._write(connection, record)
                return record
            finally:
                connection.execute("COMMIT")

        record = await self._run(work, keep=job_id)
        self._followed_now(record, job_id)
        return record

    async def list(self, owner: str, limit: int = 50) -> list[JobRecord]:
        def work(connection):
            rows = connection.execute(
                "SELECT body FROM jobs WHERE owner = ? ORDER BY created_at DESC LIMIT ?", (owner, limit)
            ).fetchall()
            return [JobRecord.from_json(row[0]) for row in rows]

        return await self._run(work)

    async def unfinished(self) -> builtins.list[JobRecord]:  # `list` here is the method above
        def work(connection):
            marks = ",".join("?" * len(FINISHED))
            rows = connection.execute(
                f"SELECT body FROM jobs WHERE status NOT IN ({marks})", FINISHED
            ).fetchall()
            return [JobRecord.from_json(row[0]) for row in rows]

        return await self._run(work)

    async def prune(self, max_age: float, per_owner: int) -> int:
        def work(connection):
            marks = ",".join("?" * len(FINISHED))
            old = connection.execute(
                f"DELETE FROM jobs WHERE status IN ({marks}) AND created_at < ?",
                (*FINISHED, time.time() - max_age),
            ).rowcount
            extra = connection.execute(
                f"""
                DELETE FROM jobs WHERE job_id IN (
                    SELECT job_id FROM (
                        SELECT job_id, status, ROW_NUMBER() OVER (PARTITION BY owner ORDER BY created_at DESC) AS n
                        FROM jobs)
                    WHERE n > ? AND status IN ({marks}))""",
                (per_owner, *FINISHED),
            ).rowcount
            return old + extra

        return await self._run(work)

    async def hold_lease(self, replica: str, ttl: float) -> None:
        def work(connection):
            now = time.time()
            connection.execute("DELETE FROM leases WHERE expires_at < ?", (now - 86400,))  # long gone
            connection.execute("INSERT OR REPLACE INTO leases VALUES (?, ?)", (replica, now + ttl))

        await self._run(work)

    async def drop_lease(self, replica: str) -> None:
        await self._run(
            lambda connection: connection.execute("DELETE FROM leases WHERE replica = ?", (replica,))
        )

    @staticmethod
    def _alive(connection, replicas: builtins.list[str]) -> set[str]:
        if not replicas:
            return set()
        marks = ",".join("?" * len(replicas))
        rows = connection.execute(
            f"SELECT replica FROM leases WHERE replica IN ({marks}) AND expires_at > ?",
            (*replicas, time.time()),
        ).fetchall()
        return {row[0] for row in rows}

    async def alive(self, replicas: Iterable[str]) -> set[str]:
        wanted = sorted(set(replicas))
        return await self._run(lambda connection: self._alive(connection, wanted))

    def _take(self, job_id: str, replica: str, changes: dict[str, Any]) -> Callable[[Any], JobRecord | None]:
        """claim (no changes) or finish, as one transaction (across processes too): the work for `_run`."""

        def work(connection):
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute("SELECT body FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                if row is None:
                    self._take_progress(job_id)
                    return None
                record = JobRecord.from_json(row[0])
                if record.finished:
                    self._take_progress(job_id)
                    return None
                follower = record.follower
                if follower not in ("", replica) and self._alive(connection, [follower]):
                    self._take_progress(job_id)  # another replica follows it: its progress is theirs
                    return None
                # A claim leaves the job's deferred progress for later (its end, usually, which
                # supersedes it); an end writes it under its own changes.
                deferred = self._take_progress(job_id) if changes else {}
                if follower == replica and not changes:
                    return record
                record.follower = replica
                for name, value in {**deferred, **changes}.items():
                    setattr(record, name, value)
                if changes:
                    record.updated_at = time.time()
                self._write(connection, record)
                return record
            finally:
                connection.execute("COMMIT")

        return work

    async def claim(self, job_id: str, replica: str) -> JobRecord | None:
        record = await self._run(self._take(job_id, replica, {}), keep=job_id)
        self._followed_now(record, job_id)
        return record

    async def finish(self, job_id: str, replica: str, **changes: Any) -> JobRecord | None:
        record = await self._run(self._take(job_id, replica, changes), keep=job_id)
        self._followed.pop(job_id, None)
        return record

    async def by_request(self, request_id: str) -> JobRecord | None:
        def work(connection):
            row = connection.execute(
                "SELECT body FROM jobs WHERE json_extract(body, '$.request_id') = ? LIMIT 1", (request_id,)
            ).fetchone()
            return JobRecord.from_json(row[0]) if row else None

        return await self._run(work)

    async def first_seen(self, key: str, expires_at: float) -> bool:
        def work(connection):
            connection.execute("DELETE FROM deliveries WHERE expires_at < ?", (time.time(),))
            return (
                connection.execute(
                    "INSERT OR IGNORE INTO deliveries VALUES (?, ?)", (key, expires_at)
                ).rowcount
                == 1
            )

        return await self._run(work)

    async def put_outcome(self, request_id: str, outcome: str, expires_at: float) -> bool:
        def work(connection):
            connection.execute("DELETE FROM outcomes WHERE expires_at < ?", (time.time(),))
            return (
                connection.execute(
                    "INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?)", (request_id, outcome, expires_at)
                ).rowcount
                == 1
            )

        return await self._run(work)

    async def outcomes(self, request_ids: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(request_ids))

        def work(connection):
            found: dict[str, str] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = connection.execute(
                    f"SELECT request_id, body FROM outcomes WHERE request_id IN ({marks}) AND expires_at > ?",
                    (*chunk, time.time()),
                ).fetchall()
                found.update(rows)
            return found

        return await self._run(work) if wanted else {}

    async def put_token(self, token: str, binding: str, expires_at: float) -> None:
        def work(connection):
            connection.execute("DELETE FROM tokens WHERE expires_at < ?", (time.time(),))
            connection.execute("INSERT INTO tokens VALUES (?, ?, ?)", (token, binding, expires_at))

        await self._run(work)

    async def take_token(self, token: str, binding: str) -> bool:
        def work(connection):
            deleted = connection.execute(
                "DELETE FROM tokens WHERE token = ? AND binding = ? AND expires_at > ?",
                (token, binding, time.time()),
            ).rowcount
            return deleted == 1

        return await self._run(work)

    @staticmethod
    def _spent(connection, owner: str, day: str) -> dict[str, int]:
        def total(where: str, value: str) -> int:
            row = connection.execute(
                f"SELECT COALESCE(SUM(charged), 0) FROM ledger WHERE owner = ? AND {where}", (owner, value)
            ).fetchone()
            return int(row[0])

        return {"day": total("day = ?", day), "month": total("substr(day, 1, 7) = ?", day[:7])}

    async def charge(
        self, owner: str, day: str, endpoint_id: str, amount: int, limits: dict[str, int]
    ) -> tuple[str, int] | None:
        def work(connection):
            connection.execute("BEGIN IMMEDIATE")  # the check and the charge as one, across processes too
            try:
                spent = self._spent(connection, owner, day)
                for period, limit in limits.items():
                    if spent[period] + amount > limit:
                        return period, spent[period]
                self._add(connection, owner, day, endpoint_id, calls=1, estimated=amount, charged=amount)
                return None
            finally:
                connection.execute("COMMIT")

        return await self._run(work)

    @staticmethod
    def _add(connection, owner, day, endpoint_id, *, calls: int, estimated: int, charged: int) -> None:
        connection.execute(
            """INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (owner, day, endpoint_id) DO UPDATE
            SET calls = calls + excluded.calls, estimated = estimated + excluded.estimated,
                charged = charged + excluded.charged""",
            (owner, day, endpoint_id, calls, estimated, charged),
        )

    async def adjust(
        self, owner: str, day: str, endpoint_id: str, *, charged: int, estimated: int = 0, calls: int = 0
    ) -> None:
        if self._defer():  # written with the next statement (the class's doc)
            with self._pending_lock:
                self._ledger.append((owner, day, endpoint_id, calls, estimated, charged))
            return
        await self._run(
            lambda connection: self._add(
                connection, owner, day, endpoint_id, calls=calls, estimated=estimated, charged=charged
            )
        )

    async def spent(self, owner: str, day: str) -> dict[str, int]:
        return await self._run(lambda connection: self._spent(connection, owner, day))

    async def ledger(self, owner: str, first_day: str, last_day: str) -> builtins.list[LedgerRow]:
        def work(connection):
            rows = connection.execute(
                "SELECT day, endpoint_id, calls, estimated, charged FROM ledger "
                "WHERE owner = ? AND day BETWEEN ? AND ? ORDER BY day, endpoint_id",
                (owner, first_day, last_day),
            ).fetchall()
            return [LedgerRow(*row) for row in rows]

        return await self._run(work)

    async def aclose(self) -> None:
        import anyio

        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._flushes):
            await task

        def close() -> None:
            with self._lock:  # after any statement still running in a worker thread, never under it
                with self._pending_lock:
                    deferred = bool(self._progress or self._ledger)
                if deferred:
                    try:
                        self._write_deferred(self._connect())
                    except Exception as exc:
                        log.warning("could not write the last progress and ledger lines: %s", exc)
                connection, self._connection = self._connection, None
                if connection is not None:
                    connection.close()

        await anyio.to_thread.run_sync(close)
        self._followed.clear()


class RedisStore:
    """Redis: a hash per job (each field JSON), a sorted set of each owner's jobs by creation, and a
    set of unfinished jobs. A field is written by one command, so two replicas never lose each
    other's changes to different fields. Spending: a counter per owner and day, and per owner and
    month (what budgets are checked against, in one script so the check and the charge are one step),
    and a ledger hash per owner and day. A replica's lease is a key that expires (Redis's clock: the
    replicas' own clocks do not matter)."""

    PREFIX = "fal-mcp:"
    CONNECTIONS, CONNECTION_WAIT = 64, 30.0  # per replica; seconds a command waits for a free one
    # Spending counters outlive their period a little; the ledger is kept a year and more.
    DAY_KEPT, MONTH_KEPT, LEDGER_KEPT = 3 * 86400, 40 * 86400, 400 * 86400
    # A fal request id -> its job, for webhooks (which name the request only): kept as long as jobs are.
    REQUEST_KEPT = 31 * 86400
    # claim and finish: KEYS the job, the lease of the follower the caller saw, the set of unfinished
    # jobs; ARGV that follower and the claiming replica (JSON), the job id, then field/value pairs to set
    # (JSON values).
    TAKE_JOB = """
        local follower = redis.call('HGET', KEYS[1], 'follower') or '""'
        if follower ~= ARGV[1] then return 0 end
        local status = redis.call('HGET', KEYS[1], 'status')
        local ended = {['"done"'] = true, ['"failed"'] = true, ['"cancelled"'] = true}
        if not status or ended[status] then return 0 end
        if follower ~= '""' and follower ~= ARGV[2] and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
        redis.call('HSET', KEYS[1], 'follower', ARGV[2])
        for i = 4, #ARGV, 2 do
            redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
            if ARGV[i] == 'status' and ended[ARGV[i + 1]] then redis.call('SREM', KEYS[3], ARGV[3]) end
        end
        return 1"""
    TAKE_TOKEN = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0"""
    CHARGE = """
        local amount = tonumber(ARGV[1])
        local limits = {tonumber(ARGV[2]), tonumber(ARGV[3])}
        local periods = {'day', 'month'}
        for i = 1, 2 do
            local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
            if limits[i] >= 0 and spent + amount > limits[i] then return {periods[i], spent} end
        end
        local kept = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
        for i = 1, 2 do
            redis.call('INCRBY', KEYS[i], amount)
            redis.call('EXPIRE', KEYS[i], kept[i])
        end
        redis.call('HINCRBY', KEYS[3], ARGV[4] .. '|calls', 1)
        redis.call('HINCRBY', KEYS[3], ARGV[4] .. '|estimated', amount)
        redis.call('HINCRBY', KEYS[3], ARGV[4] .. '|charged', amount)
        redis.call('EXPIRE', KEYS[3], kept[3])
        return {'', 0}"""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Redis | None = None
        self._lease_client: Redis | None = None

    @property
    def client(self) -> Any:
        # Any, not Redis: redis-py's annotations reject correct calls here (hset's `mapping` is an
        # invariant Mapping of a key union; zrevrange's result is one union whatever `withscores` is).
        if self._client is None:
            import redis.asyncio as redis

            # A bounded pool that waits for a free connection: redis-py's default pool (100 connections
            # from redis 8 on) fails a command at once when all are busy, which a busy replica's
            # concurrent calls reached, failing calls fal had taken.
            pool = redis.BlockingConnectionPool.from_url(
                self.url, max_connections=self.CONNECTIONS, timeout=self.CONNECTION_WAIT
            )
            self._client = redis.Redis.from_pool(pool)  # the pool is closed with the client
        return self._client

    def _key(self, kind: str, name: str) -> str:
        return f"{self.PREFIX}{kind}:{name}"

    async def add(self, record: JobRecord) -> None:
        values = {name: json.dumps(value) for name, value in asdict(record).items()}
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self._key("job", record.job_id), mapping=values)
            pipe.zadd(self._key("owner", record.owner), {record.job_id: record.created_at})
            if record.request_id:
                pipe.set(self._key("request", record.request_id), record.job_id, ex=self.REQUEST_KEPT)
            if record.finished:
                pipe.srem(self._key("set", "unfinished"), record.job_id)
            else:
                pipe.sadd(self._key("set", "unfinished"), record.job_id)
            await pipe.execute()

    @staticmethod
    def _record(values: dict) -> JobRecord | None:
        if not values:
            return None
        known = {f.name for f in fields(JobRecord)}
        return JobRecord(**{k.decode(): json.loads(v) for k, v in values.items() if k.decode() in known})

    async def get(self, job_id: str) -> JobRecord | None:
        return self._record(await self.client.hgetall(self._key("job", job_id)))

    async def update(self, job_id: str, **changes: Any) -> JobRecord | None:
        key = self._key("job", job_id)
        if not await self.client.exists(key):
            return None
        changes = {**changes, "updated_at": time.time()}
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={name: json.dumps(value) for name, value in changes.items()})
            if changes.get("status") in FINISHED:
                pipe.srem(self._key("set", "unfinished"), job_id)
            if changes.get("request_id"):
                pipe.set(self._key("request", changes["request_id"]), job_id, ex=self.REQUEST_KEPT)
            pipe.hgetall(key)
            values = (await pipe.execute())[-1]
        return self._record(values)

    async def _many(self, job_ids) -> list[JobRecord]:
        if not job_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self._key("job", job_id.decode() if isinstance(job_id, bytes) else job_id))
            found = await pipe.execute()
        return [record for record in map(self._record, found) if record is not None]

    async def list(self, owner: str, limit: int = 50) -> list[JobRecord]:
        return await self._many(await self.client.zrevrange(self._key("owner", owner), 0, limit - 1))

    async def unfinished(self) -> builtins.list[JobRecord]:  # `list` here is the method above
        records = await self._many(await self.client.smembers(self._key("set", "unfinished")))
        return [record for record in records if not record.finished]

    async def prune(self, max_age: float, per_owner: int) -> int:
        removed = 0
        cutoff = time.time() - max_age
        async for key in self.client.scan_iter(match=self._key("owner", "*")):
            job_ids = await self.client.zrevrange(key, 0, -1, withscores=True)
            for index, (job_id, created) in enumerate(job_ids):
                if index < per_owner and created >= cutoff:
                    continue
                job_key = self._key("job", job_id.decode())
                status = await self.client.hget(job_key, "status")
                if status is not None and json.loads(status) not in FINISHED:
                    continue
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.delete(job_key)
                    pipe.zrem(key, job_id)
                    await pipe.execute()
                removed += 1
        return removed

    async def hold_lease(self, replica: str, ttl: float) -> None:
        # A connection of its own: renewing the lease never waits behind a busy replica's other commands.
        if self._lease_client is None:
            import redis.asyncio as redis

            pool = redis.BlockingConnectionPool.from_url(self.url, max_connections=2, timeout=None)
            self._lease_client = redis.Redis.from_pool(pool)
        await self._lease_client.set(self._key("lease", replica), "1", px=max(1, int(ttl * 1000)))

    async def drop_lease(self, replica: str) -> None:
        await self.client.delete(self._key("lease", replica))

    async def alive(self, replicas: Iterable[str]) -> set[str]:
        wanted = sorted(set(replicas))
        if not wanted:
            return set()
        found = await self.client.mget([self._key("lease", replica) for replica in wanted])
        return {replica for replica, value in zip(wanted, found, strict=True) if value is not None}

    async def _take(self, job_id: str, replica: str, changes: dict[str, Any]) -> JobRecord | None:
        """claim (no changes) or finish: the follower is read first, then the script changes the job only
        if that is still its follower (a claim made meanwhile by another replica wins)."""
        key = self._key("job", job_id)
        seen = await self.client.hget(key, "follower")
        follower = json.loads(seen) if seen is not None else ""
        if changes:
            changes = {**changes, "updated_at": time.time()}
        pairs = [item for name, value in changes.items() for item in (name, json.dumps(value))]
        taken = await self.client.eval(
            self.TAKE_JOB,
            3,
            key,
            self._key("lease", follower or "-"),
            self._key("set", "unfinished"),
            json.dumps(follower),
            json.dumps(replica),
            job_id,
            *pairs,
        )
        return await self.get(job_id) if taken else None

    async def claim(self, job_id: str, replica: str) -> JobRecord | None:
        return await self._take(job_id, replica, {})

    async def finish(self, job_id: str, replica: str, **changes: Any) -> JobRecord | None:
        return await self._take(job_id, replica, changes)

    async def by_request(self, request_id: str) -> JobRecord | None:
        job_id = await self.client.get(self._key("request", request_id))
        return await self.get(job_id.decode()) if job_id is not None else None

    @staticmethod
    def _ttl_ms(expires_at: float) -> int:
        return max(1, int((expires_at - time.time()) * 1000))

    async def first_seen(self, key: str, expires_at: float) -> bool:
        if expires_at <= time.time():  # expired already: nothing to remember
            return True
        return bool(
            await self.client.set(self._key("delivery", key), "1", nx=True, px=self._ttl_ms(expires_at))
        )

    async def put_outcome(self, request_id: str, outcome: str, expires_at: float) -> bool:
        key = self._key("outcome", request_id)
        return bool(await self.client.set(key, outcome, nx=True, px=self._ttl_ms(expires_at)))

    async def outcomes(self, request_ids: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(request_ids))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            values = await self.client.mget([self._key("outcome", rid) for rid in chunk])
            found.update({rid: v.decode() for rid, v in zip(chunk, values, strict=True) if v is not None})
        return found

    async def put_token(self, token: str, binding: str, expires_at: float) -> None:
        milliseconds = int((expires_at - time.time()) * 1000)
        if milliseconds <= 0:  # expired already: a token that can never be used is not kept
            return
        await self.client.set(self._key("token", token), binding, px=milliseconds)

    async def take_token(self, token: str, binding: str) -> bool:
        return bool(await self.client.eval(self.TAKE_TOKEN, 1, self._key("token", token), binding))

    def _spending_keys(self, owner: str, day: str) -> builtins.list[str]:
        return [
            self._key("spent", f"{owner}:day:{day}"),
            self._key("spent", f"{owner}:month:{day[:7]}"),
            self._key("ledger", f"{owner}:{day}"),
        ]

    async def charge(
        self, owner: str, day: str, endpoint_id: str, amount: int, limits: dict[str, int]
    ) -> tuple[str, int] | None:
        period, spent = await self.client.eval(
            self.CHARGE,
            3,
            *self._spending_keys(owner, day),
            amount,
            limits.get("day", -1),
            limits.get("month", -1),
            endpoint_id,
            self.DAY_KEPT,
            self.MONTH_KEPT,
            self.LEDGER_KEPT,
        )
        period = period.decode() if isinstance(period, bytes) else period
        return (period, int(spent)) if period else None

    async def adjust(
        self, owner: str, day: str, endpoint_id: str, *, charged: int, estimated: int = 0, calls: int = 0
    ) -> None:
        day_key, month_key, ledger_key = self._spending_keys(owner, day)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incrby(day_key, charged)
            pipe.expire(day_key, self.DAY_KEPT)
            pipe.incrby(month_key, charged)
            pipe.expire(month_key, self.MONTH_KEPT)
            for name, value in (("calls", calls), ("estimated", estimated), ("charged", charged)):
                pipe.hincrby(ledger_key, f"{endpoint_id}|{name}", value)
            pipe.expire(ledger_key, self.LEDGER_KEPT)
            await pipe.execute()

    async def spent(self, owner: str, day: str) -> dict[str, int]:
        day_spent, month_spent = await self.client.mget(self._spending_keys(owner, day)[:2])
        return {"day": int(day_spent or 0), "month": int(month_spent or 0)}

    async def ledger(self, owner: str, first_day: str, last_day: str) -> builtins.list[LedgerRow]:
        import datetime as dt

        first, last = dt.date.fromisoformat(first_day), dt.date.fromisoformat(last_day)
        days = [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
        async with self.client.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(self._key("ledger", f"{owner}:{day}"))
            found = await pipe.execute()
        rows = []
        for day, values in zip(days, found, strict=True):
            by_endpoint: dict[str, dict[str, int]] = {}
            for name, value in values.items():
                endpoint_id, _, field_name = name.decode().rpartition("|")
                by_endpoint.setdefault(endpoint_id, {})[field_name] = int(value)
            rows += [
                LedgerRow(day, endpoint_id, n.get("calls", 0), n.get("estimated", 0), n.get("charged", 0))
                for endpoint_id, n in sorted(by_endpoint.items())
            ]
        return rows

    async def aclose(self) -> None:
        for client in (self._client, self._lease_client):
            if client is not None:
                await client.aclose()
        self._client = self._lease_client = None
