"""Tool calls that outlive their request.

Every call runs as a task of its own; the request that started it waits for it, sending heartbeat
progress, and hands it off (a normal result carrying the job id) when it has run longer than
FAL_MCP_HANDOFF_AFTER. The job keeps running and is still followed here; its result is saved and
recorded in the job store when it finishes, for `check_job`, `tasks/result` and `list_jobs`.

Who may stop a paid job: the client, by cancelling before the hand-off or by `cancel_job` after it;
the operator's timeout (FAL_MCP_TIMEOUT). Never a dropped connection after the hand-off, nor a server
shutting down: it leaves unfinished jobs in the store, and the next start follows them again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
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
    from .server import ToolTable
    from .spending import Asker, Spend
    from .store import JobStore
    from .types import Tool, ToolResult

log = logging.getLogger(__name__)
JOB_PREFIX = "job_"
# Answers to wait for before a request gives up on a job id it does not follow.
PRUNE_EVERY = 3600.0
STORE_PROGRESS_EVERY = 5.0


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
        await self.runner.record(self, status="queued")
        self.changed()


class Runner:
    """The calls of one ToolTable: started, waited for, handed off, resumed."""

    def __init__(self, table: ToolTable) -> None:
        self.table = table
        self.settings = table.settings
        self.live: dict[str, Call] = {}  # job id -> the call following it in this process
        self._tasks: set[asyncio.Task] = set()
        self._running: set[Call] = set()  # calls whose work runs now (aclose stops them)
        self._closing = False
        self._last_prune = 0.0

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
        self._running.add(call)
        try:
            with anyio.CancelScope() as scope:
                call.scope = scope
                if call.stopping:
                    scope.cancel()
                await work
        finally:
            self._running.discard(call)

    async def _run(self, call: Call) -> None:
        from .spending import NeedsInput

        try:
            result = await call.tool.handler(call.context.arguments, call.context)
            call.latest = "Saving the result"  # previews and saved files: heartbeats say so meanwhile
            receipt = await with_receipt(result, call.context)
            outcome = await self.table.package(call.tool, result, call.owner)
            if call.job_id is not None:
                await self.store.update(
                    call.job_id,
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
            if call.job_id is not None:
                await self.store.update(
                    call.job_id,
                    status="failed",
                    error="Not submitted: the user's confirmation was asked first",
                )
        except Exception as exc:
            call.error, outcome = exc, self.table.failure(call.tool.name, exc)
            await settle_spent(call.context)
            if call.job_id is not None:
                await self.store.update(call.job_id, status="failed", error=outcome.content[0].text)
        self._finish(call, outcome)

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
            )
        )
        self.live[call.job_id] = call
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
            if not call.finished.is_set() and call.task is not None:
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
        if call.tool.output_model is GenerationOutput:
            model_field = call.tool.model_field
            structured = GenerationOutput(
                files=[],
                endpoint=call.endpoint_id,
                request_id=call.request_id,
                model=getattr(call.context.arguments, model_field, None) if model_field else None,
                job=handoff,
                notes=[text],
            ).model_dump(mode="json")
        elif call.tool.output_model is None:
            structured = handoff.model_dump(mode="json")
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=structured, is_error=False
        )

    # -- jobs not followed by this process -------------------------------------------------------------

    def resume(self, record: JobRecord) -> Call | None:
        """Follow a job this process did not start (a restart, another replica) to its end, finish the
        tool's work with its output (Replay), save and record the result. None if it is followed here."""
        if record.job_id in self.live or record.finished:
            return self.live.get(record.job_id)
        tool = self.table.registry.tools.get(record.tool)
        if tool is None:
            return None
        context = self.table.new_context(tool, owner=Principal(record.owner))
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
            )
            from .spending import Spend

            context = call.context
            context.arguments = await self.table.validate(call.tool, record.arguments)
            spend = Spend.from_json(record.estimate) if record.estimate else None
            context.job = Replay(record.endpoint_id, record.request_id, fal.data, spend)
            result = await call.tool.handler(context.arguments, context)
            receipt = await with_receipt(result, context)
            outcome = await self.table.package(call.tool, result, call.owner)
            await self.store.update(
                record.job_id, status="done", progress="Done", result=stored_result(result), cost=receipt
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
            call.error, outcome = exc, self.table.failure(call.tool.name, exc)
            await self.store.update(record.job_id, status="failed", error=outcome.content[0].text)
        self._finish(call, outcome)

    def start_resuming(self) -> None:
        """At start, without holding the server up: follow again every unfinished job in the store."""

        async def resume() -> None:
            try:
                await self.resume_unfinished()
            except Exception as exc:  # the store is unreachable: check_job resumes jobs one by one later
                log.warning("could not read unfinished jobs from the job store: %s", exc)

        self._spawn(resume())

    async def resume_unfinished(self) -> int:
        """Follow again every unfinished job in the store."""
        records = await self.store.unfinished()
        for record in records:
            self.resume(record)
        if records:
            log.info("following %d unfinished job(s) again", len(records))
        return len(records)

    async def cancel(self, record: JobRecord) -> bool:
        """Cancel a job at the client's request: its task here if it runs here, and its fal request."""
        call = self.live.get(record.job_id)
        if call is not None and call.task is not None and not call.finished.is_set():
            call.cancelled_by_client = True  # the fal request is cancelled below, once
            call.stop()
            await call.finished.wait()
            record = await self.store.get(record.job_id) or record  # its request id, if fal had just taken it
        cancelled = (
            await self.table.gateway.cancel(record.endpoint_id, record.request_id)
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
