"""Tool calls that outlive their request.

Every call runs as a task of its own; the request that started it waits for it, sending heartbeat
progress, and hands it off (a normal result carrying the job id) when it has run longer than
FAL_MCP_HANDOFF_AFTER. The job keeps running and is still followed here; its result is saved and
recorded in the job store when it finishes, for `check_job`, `tasks/result` and `list_jobs`.

Who may stop a paid job: the client, by cancelling before the hand-off or by `cancel_job` after it;
the operator's timeout (FAL_MCP_TIMEOUT). Never a dropped connection after the hand-off, nor a server
shutting down: it leaves unfinished jobs in the store, for the other replicas or the next start.

Replicas sharing the store (store.py): each runner is one replica, with an id and a lease it renews
every third of FAL_MCP_LEASE_TTL; a job it records names it as the job's follower. Every
FAL_MCP_SWEEP_INTERVAL seconds each replica sweeps the store for unfinished jobs whose follower's lease
has lapsed (a replica killed, or stopped: a replica that stops drops its lease), claims them (one
replica wins each) and follows them to their end. `check_job` and the task methods take a job over
the same way, or watch the store while another replica follows it. Only a job's follower settles its
cost and records its end, in one conditional step (`store.finish`): a job ends once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .errors import ToolError
from .gateway import FalResult
from .owners import Principal
from .store import JobRecord

if TYPE_CHECKING:
    from mcp.types import CallToolResult, InputRequiredResult

    from .context import ToolContext
    from .fal_keys import FalKey
    from .server import ToolTable
    from .spending import Asker, Spend
    from .store import JobStore
    from .types import Tool, ToolResult

log = logging.getLogger(__name__)
JOB_PREFIX = "job_"
# Answers to wait for before a request gives up on a job id it does not follow.
PRUNE_EVERY = 3600.0
STORE_PROGRESS_EVERY = 5.0
# Jobs one sweep takes over at most (a random sample of those left, so that replicas share them out);
# the next sweep takes more.
TAKEOVER_BATCH = 100


def replica_id() -> str:
    """This process's name among the replicas: its host and pid (to find it in logs), and randomness."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


def new_job_id() -> str:
    """128 random bits: a job id reveals nothing of the call and cannot be guessed."""
    return JOB_PREFIX + secrets.token_urlsafe(16)


@dataclass
class Replay:
    """Hands a finished fal request's output to the first `ctx.run` of a handler run again to finish
    a job (after a restart, or on another replica): the tool's own code makes the same result."""

    endpoint_id: str
    request_id: str
    data: dict
    spend: Spend | None = None  # its estimate and charge, to settle with the output
    used: bool = False

    def take(self, endpoint_id: str) -> FalResult | None:
        if self.used or endpoint_id != self.endpoint_id:
            return None  # a second fal call in the same tool runs normally
        self.used = True
        return FalResult(endpoint_id, self.request_id, self.data)


class Call:
    """One tool call: its task, its job (once recorded) and who is waiting for it."""

    def __init__(self, runner: Runner, tool: Tool, context: ToolContext, asker: Asker | None = None) -> None:
        self.runner, self.tool, self.context = runner, tool, context
        self.owner: Principal = context.owner
        self.job_id: str | None = None
        self.submitted = False  # fal accepted a request of this call
        self.admitted = False  # holds a place among the calls in flight (admission.py) until it ends
        self.endpoint_id = ""
        self.request_id = ""
        self.latest = "Starting"
        self.started = time.monotonic()
        self.outcome: CallToolResult | InputRequiredResult | None = None  # once finished
        # How to ask the user (spending.py), while the request that started the call waits for it.
        self.asker = asker
        self.consented = False  # the user agreed to this call's spending
        self.spend: Spend | None = None  # the estimate and charge of its fal request, once submitted
        self.error: Exception | None = None  # what it failed with, if it did (a ToolError says its kind)
        self.finished = anyio.Event()
        self._changed = anyio.Event()
        self.cancelled_by_client = False  # the client asked for the job to be stopped
        self.cancel_fal = False  # ... and the fal request is cancelled where the task stops
        self.task: asyncio.Task | None = None
        # Stopping a call cancels this scope, never the task itself: asyncio's own Task.cancel() goes
        # through shielded scopes, and would break off a submit fal has taken before it is recorded.
        self.scope: anyio.CancelScope | None = None
        self.stopping = False
        self._report = context.report_progress  # the waiting request's progress callback, if any
        self._steps = 0
        self._status, self._stored_at = "submitted", 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def changed(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_change(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self._changed.wait()

    async def report(self, message: str) -> None:
        """To the waiting request, if any; progress values only grow, as MCP requires."""
        self._steps += 1
        if self._report is not None:
            try:
                await self._report(self._steps, None, message)
            except Exception as exc:  # the request's stream is gone: the job goes on
                log.debug("progress not delivered: %s", exc)
                self._report = None

    def stop(self) -> None:
        """Cancel the call's work (not while it submits to fal and records the job: that is shielded)."""
        self.stopping = True
        if self.scope is not None:
            self.scope.cancel()

    def detach(self) -> None:
        """The request returned (hand-off): nobody receives this call's progress, nor answers questions."""
        self._report = None
        self.asker = None

    async def progress(self, message: str) -> None:
        self.latest = message
        await self.report(message)
        status = "queued" if message.startswith("In queue") else "running"
        # The store hears of a change of status at once, of other progress at most every STORE_PROGRESS_EVERY
        # seconds (readers in this process see `latest` of the live call).
        due = time.monotonic() - self._stored_at >= STORE_PROGRESS_EVERY
        if (
            self.job_id is not None
            and self.submitted
            and message != "Done"
            and (status != self._status or due)
        ):
            self._status, self._stored_at = status, time.monotonic()
            await self.runner.store.update(self.job_id, status=status, progress=message)

    async def on_submit(self, endpoint_id: str, request_id: str, spend: Spend) -> None:
        self.submitted, self.endpoint_id, self.request_id = True, endpoint_id, request_id
        self.spend = spend
        self._status, self._stored_at = "queued", time.monotonic()
        announced = self.job_id is not None and self.job_id in self.runner.live
        await self.runner.record(self, status="queued")
        if not announced:  # the id in hand, should this call be cut off before its answer (a lost replica)
            await self.report(f"Recorded as job {self.job_id}: check_job with this id gets its result")
        self.changed()


class Runner:
    """The calls of one ToolTable: started, waited for, handed off, resumed."""

    def __init__(self, table: ToolTable) -> None:
        self.table = table
        self.settings = table.settings
        self.live: dict[str, Call] = {}  # job id -> the call following it in this process
        self.replica = replica_id()  # the follower its jobs name, with a lease in the store
        self._leased = False  # the lease is taken (before the first job naming this replica is recorded)
        self._claiming: set[str] = set()  # jobs this process is claiming now (not followed twice here)
        self._tasks: set[asyncio.Task] = set()
        self._running: set[Call] = set()  # calls whose work runs now (aclose stops them)
        self._closing = False
        self._last_prune = 0.0
        from .admission import Admission

        self.admission = Admission()  # calls in flight against the open-files budget: refused before fal

    @property
    def store(self) -> JobStore:
        return self.table.store

    # -- starting and waiting ---------------------------------------------------------------------

    async def start(
        self, tool: Tool, context: ToolContext, *, record_now: bool = False, asker: Asker | None = None
    ) -> Call:
        """Run the handler in a task of its own. `record_now`: the job is recorded before this returns (a
        job or task the client asked for), not only when fal accepts a request. `asker`: how to ask the
        user of the waiting request (spending.py)."""
        call = Call(self, tool, context, asker)
        context.call = call
        if record_now:
            await self.record(call, status="submitted")
        call.task = self._spawn(self._stoppable(call, self._run(call)))
        return call

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _stoppable(self, call: Call, work) -> None:
        """Run a call's work in a cancel scope that Call.stop cancels (its own handler re-raises the
        cancellation, which ends here)."""
        from . import memory

        if not self._running:
            memory.went_busy()
        self._running.add(call)
        try:
            with anyio.CancelScope() as scope:
                call.scope = scope
                if call.stopping:
                    scope.cancel()
                await work
        finally:
            self._running.discard(call)
            if not self._running:
                memory.went_idle()
            if call.admitted:
                call.admitted = False
                self.admission.release()

    async def _run(self, call: Call) -> None:
        from .spending import NeedsInput

        try:
            result = await call.tool.handler(call.context.arguments, call.context)
            call.latest = "Saving the result"  # previews and saved files: heartbeats say so meanwhile
            ours = await self._ours(call)
            receipt = await with_receipt(result, call.context) if ours else None
            outcome = await self.table.package(call.tool, result, call.owner)
            if ours:
                await self._conclude(
                    call,
                    status="done",
                    progress="Done",
                    result=stored_result(result),
                    cost=receipt,
                    endpoint_id=call.endpoint_id,
                    request_id=call.request_id,
                )
            call.latest = "Done"  # no heartbeat after this
            await call.report("Done")
        except asyncio.CancelledError:
            if call.cancelled_by_client and call.job_id is not None:
                with anyio.CancelScope(shield=True):
                    await self.store.update(
                        call.job_id, status="cancelled", progress="Cancelled by the client"
                    )
            self._finish(
                call,
                self.table.failure(call.tool.name, ToolError("The call was cancelled.", kind="cancelled")),
            )
            raise
        except NeedsInput as question:  # nothing submitted: the client calls again with the answer
            outcome = question.result
            await self._conclude(
                call, status="failed", error="Not submitted: the user's confirmation was asked first"
            )
        except Exception as exc:
            outcome = self.table.failure(call.tool.name, exc)
            call.error = exc.with_traceback(None)  # kept for its kind; its frames would hold the call
            if await self._ours(call):
                await settle_spent(call.context)
                await self._conclude(call, status="failed", error=outcome.content[0].text)
        self._finish(call, outcome)

    async def _ours(self, call: Call) -> bool:
        """Whether this replica still follows the call's job, checked before its cost is settled: one
        that lost it (its lease lapsed while it was stalled, and another replica claimed the job) leaves
        the settling and the recording to that one. True without a job, or when the store cannot say
        (the result is not withheld for that)."""
        if call.job_id is None:
            return True
        try:
            if await self.store.claim(call.job_id, self.replica) is not None:
                return True
        except Exception as exc:
            log.warning("could not check who follows job %s: %s", call.job_id, exc)
            return True
        log.warning(
            "replica %s: job %s ended here but another replica follows it (or it ended there): its result "
            "is recorded there, not here",
            self.replica,
            call.job_id,
        )
        return False

    async def _conclude(self, call: Call, **changes) -> None:
        """Record the end of the call's job (if it has one), by this replica only while it follows it."""
        if call.job_id is None:
            return
        try:
            if await self.store.finish(call.job_id, self.replica, **changes) is None:
                log.warning(
                    "replica %s: job %s had ended or was taken over: its end (%s) is not recorded again",
                    self.replica,
                    call.job_id,
                    changes.get("status"),
                )
        except Exception as exc:  # the call's outcome still reaches a waiting client
            log.warning("could not record the end of job %s: %s", call.job_id, exc)

    def _finish(self, call: Call, outcome: CallToolResult | InputRequiredResult) -> None:
        if call.job_id is not None:
            self.live.pop(call.job_id, None)
        # The context and its call refer to each other: broken here, so a finished call (its previews
        # included) is freed at once, not when the rarely run cycle collector gets to it.
        call.context.call = None
        call.outcome = outcome
        call.finished.set()
        call.changed()

    async def record(self, call: Call, *, status: str) -> None:
        """The call's job in the store: created on first sight, then kept up to date."""
        estimate = call.spend.to_json() if call.spend is not None else None
        if call.job_id is not None and call.job_id in self.live:
            await self.store.update(
                call.job_id,
                status=status,
                endpoint_id=call.endpoint_id,
                request_id=call.request_id,
                estimate=estimate,
            )
            return
        call.job_id = call.job_id or new_job_id()
        validated = call.context.arguments
        if validated is None:  # ToolTable.start validates them before the call starts
            raise RuntimeError(f"{call.tool.name}: a call is recorded only once its arguments are validated")
        arguments = validated.model_dump(mode="json", exclude_unset=True)
        await self.hold_lease()  # before any job names this replica: else another could claim it at once
        # Known as live before it is in the store, so that no sweep of this process takes it for a job
        # nobody follows.
        self.live[call.job_id] = call
        try:
            await self.store.add(
                JobRecord(
                    job_id=call.job_id,
                    owner=call.owner.key,
                    tool=call.tool.name,
                    arguments=arguments,
                    endpoint_id=call.endpoint_id,
                    request_id=call.request_id,
                    status=status,
                    progress=call.latest,
                    estimate=estimate,
                    follower=self.replica,
                )
            )
        except BaseException:
            self.live.pop(call.job_id, None)
            raise
        await self._prune_now_and_then()

    async def wait(self, call: Call, handoff: float | None) -> CallToolResult | InputRequiredResult:
        """Wait for `call` in the request that started it: its outcome, or a hand-off once a fal job
        has run `handoff` seconds (None: never). Heartbeats go out every FAL_MCP_HEARTBEAT seconds.
        If the request is cancelled (the client cancelled or left) before the hand-off, so is the job."""
        heartbeat = self.settings.heartbeat
        next_beat = heartbeat
        try:
            while not call.finished.is_set():
                if handoff is not None and call.submitted and call.elapsed >= handoff:
                    call.detach()
                    return self.handoff_result(call)
                deadline = min(next_beat, handoff if handoff is not None and call.submitted else next_beat)
                await call.wait_change(max(0.0, deadline - call.elapsed))
                if call.elapsed >= next_beat and not call.finished.is_set() and call.latest != "Done":
                    await call.report(f"{call.latest} ({call.elapsed:.0f} s)")
                    next_beat = call.elapsed + heartbeat
            if call.outcome is None:  # set just before `finished` is
                raise RuntimeError(f"{call.tool.name}: the call finished without an outcome")
            return call.outcome
        except anyio.get_cancelled_exc_class():
            # the client cancelled or left; not a server shutting down, which ends requests too
            if not call.finished.is_set() and call.task is not None and not self._closing:
                call.cancelled_by_client = call.cancel_fal = True
                call.stop()
            raise

    def handoff_result(self, call: Call) -> CallToolResult:
        from mcp import types

        from .outputs import GenerationOutput, JobHandoff

        wait = self.settings.check_wait_max
        text = (
            f"{call.tool.name} is still running after {call.elapsed:.0f} s ({call.endpoint_id}, fal request "
            f"{call.request_id}): {call.latest}. It keeps running here and its result will be kept. Get it "
            f"with check_job and job_id {call.job_id} (with wait_seconds up to {wait:g} to wait for it), or "
            "find it with list_jobs."
        )
        structured = None
        handoff = JobHandoff(
            job_id=call.job_id or "", status="running", progress=call.latest, how="check_job with this job_id"
        )
        output_model = call.tool.output_model
        if output_model is not None and issubclass(output_model, GenerationOutput):
            # The tool's own output model (run_model's adds fields): what its output schema declares.
            model_field = call.tool.model_field
            try:
                structured = output_model(
                    files=[],
                    endpoint=call.endpoint_id,
                    request_id=call.request_id,
                    model=getattr(call.context.arguments, model_field, None) if model_field else None,
                    job=handoff,
                    notes=[text],
                ).model_dump(mode="json")
            except ValueError as exc:  # fields a hand-off cannot fill: the pack must give them defaults
                log.warning("%s: its output model cannot carry a hand-off: %s", call.tool.name, exc)
        elif output_model is None:
            structured = handoff.model_dump(mode="json")
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=structured, is_error=False
        )

    # -- jobs not followed by this process -------------------------------------------------------------

    def resume(self, record: JobRecord, fal_key: FalKey | None = None) -> Call | None:
        """Follow a job this process did not start (a restart, another replica) to its end, finish the
        tool's work with its output (Replay), save and record the result. The call following it if it is
        followed here; None if it cannot be: an unknown tool, or, where users' keys pay (fal_keys.py), no
        `fal_key` of its owner's (the store never holds one)."""
        if record.job_id in self.live or record.finished:
            return self.live.get(record.job_id)
        tool = self.table.registry.tools.get(record.tool)
        if tool is None or (fal_key is None and self.table.keys.required):
            return None
        context = self.table.new_context(tool, owner=Principal(record.owner), fal_key=fal_key)
        call = Call(self, tool, context)
        context.call = call
        call.job_id, call.submitted = record.job_id, True
        call.endpoint_id, call.request_id, call.latest = (
            record.endpoint_id,
            record.request_id,
            record.progress or "",
        )
        self.live[record.job_id] = call
        call.task = self._spawn(self._stoppable(call, self._resume(call, record)))
        return call

    async def _resume(self, call: Call, record: JobRecord) -> None:
        try:
            if not record.request_id:
                raise ToolError(
                    "the server stopped before fal accepted this job: nothing was submitted or spent"
                )
            fal = await self.table.gateway.follow(
                record.endpoint_id,
                record.request_id,
                progress=call.progress,
                timeout=self.settings.timeout_for(call.tool.category),
                key=call.context.fal_key,
            )
            from .spending import Spend

            context = call.context
            context.arguments = await self.table.validate(call.tool, record.arguments)
            spend = Spend.from_json(record.estimate) if record.estimate else None
            context.job = Replay(record.endpoint_id, record.request_id, fal.data, spend)
            result = await call.tool.handler(context.arguments, context)
            ours = await self._ours(call)
            receipt = await with_receipt(result, context) if ours else None
            outcome = await self.table.package(call.tool, result, call.owner)
            if ours:
                await self._conclude(
                    call, status="done", progress="Done", result=stored_result(result), cost=receipt
                )
                log.info(
                    "replica %s finished job %s (fal request %s)", self.replica, call.job_id, call.request_id
                )
        except asyncio.CancelledError:
            self._finish(
                call,
                self.table.failure(
                    call.tool.name, ToolError("The server stopped following it.", kind="cancelled")
                ),
            )
            raise
        except Exception as exc:
            outcome = self.table.failure(call.tool.name, exc)
            call.error = exc.with_traceback(None)  # kept for its kind; its frames would hold the call
            if _refused_the_key(exc, self.table):
                # the key this request brought is not one fal follows the job with: the job is as it was,
                # for its owner to follow with the right key (through any replica: it is let go)
                log.info("a job could not be followed with the key of the request that asked for it")
                await self._let_go(call)
            else:
                await self._conclude(call, status="failed", error=outcome.content[0].text)
        self._finish(call, outcome)

    async def _let_go(self, call: Call) -> None:
        """This replica no longer follows the call's job: any replica may claim it at once."""
        if call.job_id is None:
            return
        try:
            await self.store.update(call.job_id, follower="")
        except Exception as exc:
            log.warning("could not let job %s go: %s", call.job_id, exc)

    async def take_over(self, record: JobRecord, fal_key: FalKey | None = None) -> Call | None:
        """The call following the job here: the one that does already, or, if the store lets this replica
        claim the job (nobody follows it, or its follower's lease has lapsed), a new one (`resume`). None
        if another replica follows it, or it cannot be followed here (`resume`'s reasons)."""
        job_id = record.job_id
        if job_id in self.live or record.finished:
            return self.live.get(job_id)
        if (
            job_id in self._claiming
            or record.tool not in self.table.registry.tools
            or (fal_key is None and self.table.keys.required)
        ):
            return None
        self._claiming.add(job_id)
        try:
            await self.hold_lease()
            claimed = await self.store.claim(job_id, self.replica)
        finally:
            self._claiming.discard(job_id)
        if claimed is None:
            return self.live.get(job_id)
        if record.follower and record.follower != self.replica:
            log.info(
                "replica %s takes over job %s (%s, fal request %s) from %s, whose lease lapsed",
                self.replica,
                job_id,
                claimed.endpoint_id,
                claimed.request_id or "none",
                record.follower,
            )
        return self.resume(claimed, fal_key)

    async def wait_for(
        self, record: JobRecord, wait: float | None, fal_key: FalKey | None = None
    ) -> tuple[JobRecord, bool]:
        """The job's record once it has ended, or as it is when `wait` seconds (None: no limit) have
        passed; and whether a replica follows it. A job nobody follows is taken over here (`take_over`);
        one another replica follows is watched in the store. Returns at once, with False, when nobody
        follows the job and this replica cannot (its tool, or its owner's key, is not here)."""
        job_id = record.job_id
        deadline = anyio.current_time() + (wait if wait is not None else float("inf"))
        pause = 0.05
        while not record.finished:
            call = self.live.get(job_id) or await self.take_over(record, fal_key)
            if call is not None:
                with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                    await call.finished.wait()
                record = await self.store.get(job_id) or record
                if record.finished or not call.finished.is_set():
                    return record, True
                # It ended here without being recorded: fal refused the key it was followed with (the
                # job was let go), or another replica took it over meanwhile. Not followed again here.
                followed = bool(record.follower) and bool(await self.store.alive([record.follower]))
                return record, followed
            record = await self.store.get(job_id) or record
            if record.finished:
                break
            followed = bool(record.follower) and bool(await self.store.alive([record.follower]))
            left = deadline - anyio.current_time()
            if not followed or left <= 0:
                return record, followed
            await anyio.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)
        return record, True

    # -- replicas: the lease, and taking over what a lost one followed ----------------------------------

    async def hold_lease(self) -> None:
        """Take this replica's lease, once, and keep renewing it while the runner runs."""
        if self._leased:
            return
        await self.store.hold_lease(self.replica, self.settings.lease_ttl)
        if not self._leased:
            self._leased = True
            self._spawn(self._renew_lease())
            log.info(
                "replica %s holds a lease in the job store (%g s, renewed every %g s)",
                self.replica,
                self.settings.lease_ttl,
                self.settings.lease_ttl / 3,
            )

    async def _renew_lease(self) -> None:
        ttl = self.settings.lease_ttl
        renewed = time.monotonic()
        while True:
            await anyio.sleep(ttl / 3)
            try:
                await self.store.hold_lease(self.replica, ttl)
            except Exception as exc:  # tried again in a third of the TTL; past it, others take over
                log.warning(
                    "replica %s could not renew its lease in the job store (%s): past %g s, other replicas "
                    "take over its jobs",
                    self.replica,
                    exc,
                    ttl,
                )
                continue
            now = time.monotonic()
            if now - renewed > ttl:  # stalled, or the store was out of reach, for longer than the lease
                log.warning(
                    "replica %s renewed its lease %.1f s after the last time, past its %g s: other replicas "
                    "may have taken over jobs it follows (each job's end is still recorded once, by the "
                    "replica that follows it now); raise FAL_MCP_LEASE_TTL if this recurs",
                    self.replica,
                    now - renewed,
                    ttl,
                )
            renewed = now

    def start_resuming(self) -> None:
        """At start, without holding the server up: take this replica's lease, then sweep the store now
        and every FAL_MCP_SWEEP_INTERVAL seconds for jobs nobody follows (`sweep`). Where users' keys pay
        (fal_keys.py) there is no sweep: such a job is followed again when its owner asks for it with
        their key, through any replica."""

        async def keep_sweeping() -> None:
            while True:
                try:
                    await self.hold_lease()
                    if self.table.keys.required:
                        return
                    await self.sweep()
                except Exception as exc:  # the store is unreachable: tried again at the next sweep
                    log.warning("replica %s could not sweep the job store: %s", self.replica, exc)
                await anyio.sleep(self.settings.sweep_interval)

        self._spawn(keep_sweeping())

    async def sweep(self) -> int:
        """Take over the unfinished jobs whose follower's lease has lapsed (a replica lost, or stopped, or
        a previous run of this server) or that name none (recorded before replicas had leases): each is
        claimed (of several replicas, one wins) and followed to its end. At most TAKEOVER_BATCH at a
        time. How many were taken over."""
        records = [r for r in await self.store.unfinished() if r.job_id not in self.live]
        others = {r.follower for r in records if r.follower and r.follower != self.replica}
        alive = await self.store.alive(others) if others else set()
        left = [r for r in records if r.follower not in alive and r.tool in self.table.registry.tools]
        if not left:
            return 0
        batch = random.sample(left, min(len(left), TAKEOVER_BATCH))
        taken = [record for record in batch if await self.take_over(record) is not None]
        if taken:
            lost = sorted({r.follower or "before leases" for r in taken})
            log.warning(
                "replica %s took over %d unfinished job(s) left by %s (of %d nobody followed)",
                self.replica,
                len(taken),
                ", ".join(lost),
                len(left),
            )
        return len(taken)

    async def cancel(self, record: JobRecord, fal_key: FalKey | None = None) -> bool:
        """Cancel a job at the client's request: its task here if it runs here, and its fal request (with
        the key of the call following it here, else `fal_key`, the requesting owner's). ToolError, with
        nothing done, when users' keys pay and there is none."""
        from .fal_keys import KeyRefused, missing_key_message

        call = self.live.get(record.job_id)
        if call is not None and call.context.fal_key is not None:
            fal_key = call.context.fal_key
        if fal_key is None and self.table.keys.required and record.request_id:
            raise KeyRefused(
                f"Cancelling this job on fal needs your fal key. {missing_key_message(self.settings)}"
            )
        if call is not None and call.task is not None and not call.finished.is_set():
            call.cancelled_by_client = True  # the fal request is cancelled below, once
            call.stop()
            await call.finished.wait()
            record = await self.store.get(record.job_id) or record  # its request id, if fal had just taken it
        cancelled = (
            await self.table.gateway.cancel(record.endpoint_id, record.request_id, key=fal_key)
            if record.request_id
            else True
        )
        await self.store.update(record.job_id, status="cancelled", progress="Cancelled by the client")
        return cancelled

    async def _prune_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        try:
            await self.store.prune(self.settings.job_retention, self.settings.jobs_per_owner)
        except Exception as exc:  # retention can wait for the next time
            log.warning("could not prune the job store: %s", exc)

    def shutting_down(self) -> None:
        """The server is stopping (SIGTERM): the requests it ends from now on (their connections closed)
        do not cancel their calls' fal jobs, as a client that cancels does. The jobs stay in the store,
        for the other replicas (this one lets its lease go as it closes) or the next start."""
        self._closing = True

    async def aclose(self) -> None:
        """Stop following: the jobs stay unfinished in the store (never cancelled on fal)."""
        self._closing = True
        tasks = list(self._tasks)
        calls = {call.task for call in self._running}
        for call in list(self._running):
            call.stop()
        for task in tasks:
            if task not in calls:  # not a call's: nothing of it is shielded
                task.cancel()
        for task in tasks:
            with anyio.CancelScope(shield=True):
                try:
                    await task
                except BaseException:  # noqa: S110 (cancelled or failed: either way it is stopped)
                    pass
        if self._leased:  # the jobs it followed are left to the other replicas (or the next start) now
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.drop_lease(self.replica)
                    log.info("replica %s stopped and let its lease go", self.replica)
                except Exception as exc:  # it lapses by itself
                    log.warning("replica %s could not let its lease go: %s", self.replica, exc)


def _refused_the_key(exc: Exception, table: ToolTable) -> bool:
    """fal refused the key a user's request brought to follow a job (401, 403): not the job's failure."""
    return table.keys.required and isinstance(exc, ToolError) and exc.status in (401, 403)


async def settle_spent(context: ToolContext) -> None:
    """A call that failed after fal answered some of its requests: they were paid for, so the ledger
    has them (spending.settle_call) though the result has no receipt."""
    from .spending import settle_call

    if context.spent:
        try:
            await settle_call(context, None)
        except Exception as exc:  # the failure itself is what the caller must hear of
            log.warning("could not settle the cost of a failed call: %s", exc)


async def with_receipt(result: ToolResult, context: ToolContext) -> dict | None:
    """The call's receipt (spending.py) added to its result, structured and in words; returned as the job
    store keeps it."""
    from .outputs import GenerationOutput
    from .spending import describe, settle_call

    output = result.structured if isinstance(result.structured, GenerationOutput) else None
    receipt = await settle_call(context, output.files if output is not None else None)
    if receipt is None:
        return None
    if output is not None:
        output.cost = receipt
    result.text = f"{result.text}\n{describe(receipt)}"
    return receipt.model_dump(mode="json")


def stored_result(result: ToolResult) -> dict:
    """What the store keeps of a finished call: the handler's text and structured content, after its
    files were saved (previews are made again when it is read: they are large, and can be)."""
    from pydantic import BaseModel

    structured = result.structured
    if isinstance(structured, BaseModel):
        structured = structured.model_dump(mode="json")
    return {"text": result.text, "structured": structured}
