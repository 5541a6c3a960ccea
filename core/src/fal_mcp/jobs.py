"""The job tools: submit_job, check_job, cancel_job, list_jobs.

Every fal request the server starts is a job in the job store (store.py), owned by the caller (the
principal of owners.py); the runner (runner.py) follows it to its end even when the call that started
it has returned. These tools read and act on the store, so any replica sharing it answers, and a
result is never lost: a job nobody follows any more (a restart, a lost replica) is taken over on the
first `check_job` (if no replica's sweep took it first), its output fetched from fal by request id,
saved and recorded; one another replica follows is watched in the store until it ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from .errors import ToolError
from .outputs import ToolInput
from .store import JobRecord
from .types import Tool, ToolHints, ToolResult

if TYPE_CHECKING:
    from .context import ToolContext
    from .runner import Call
    from .server import ToolTable


class SubmitJobInput(ToolInput):
    tool: str = Field(
        min_length=1,
        max_length=64,
        description="Any tool but the job tools",
    )
    arguments: dict[str, Any] = Field(default_factory=dict, description="That tool's arguments")


class JobInput(ToolInput):
    job_id: str = Field(min_length=5, max_length=100)


class CheckJobInput(JobInput):
    wait_seconds: float = Field(
        0,
        ge=0,
        le=300,
        description="Wait this long for it to finish",
    )


class JobStatus(BaseModel):
    model_config = ConfigDict(defer_build=True)

    job_id: str
    status: str = Field(description="submitted, queued, running, done, failed or cancelled")
    tool: str
    endpoint: str
    request_id: str
    progress: str | None = Field(None, description="The latest queue position or log line")
    error: str | None = None
    created_at: float | None = None
    updated_at: float | None = None


def status_of(record: JobRecord, live: Call | None = None) -> JobStatus:
    """A job's status; `live`, the call following it in this process, knows its latest progress."""
    progress = live.latest if live is not None and not record.finished else record.progress
    return JobStatus(
        job_id=record.job_id,
        status=record.status,
        tool=record.tool,
        endpoint=record.endpoint_id,
        request_id=record.request_id,
        progress=progress,
        error=record.error,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def table_of(ctx: ToolContext) -> ToolTable:
    """The tool table serving the call: the job tools act on its store and runner."""
    if ctx.table is None:  # a context made outside a server (a pack's own test)
        raise ToolError("the job tools need the server's tool table", kind="refused")
    return ctx.table


async def owned(ctx: ToolContext, job_id: str) -> JobRecord:
    """The caller's job; another owner's is answered exactly like one that does not exist."""
    record = await table_of(ctx).store.get(job_id)
    if record is None or record.owner != ctx.owner.key:
        raise ToolError(
            "job_id: no such job (a job id is valid for the client that started the job, on this "
            "server or a replica sharing its job store, until the job is forgotten)",
            kind="refused",
        )
    return record


async def submit_job(args: SubmitJobInput, ctx: ToolContext) -> ToolResult:
    tool, arguments, table = args.tool, args.arguments, table_of(ctx)
    if tool in JOB_TOOL_NAMES:
        raise ToolError(f"tool: {tool} cannot run as a job", kind="refused")
    from mcp.types import CallToolResult

    from .spending import NeedsInput

    asker = ctx.call.asker if ctx.call is not None else None  # the user of this request answers for the job
    if ctx.confirm_token and "confirm" not in arguments:  # given to submit_job: it is the job's
        arguments = {**arguments, "confirm": ctx.confirm_token}
    call = await table.start(
        tool,
        arguments,
        owner=ctx.owner,
        allowed_dirs=ctx.client_roots,
        record_now=True,
        asker=asker,
        fal_key=ctx.fal_key,
    )
    outcome = await table.runner.wait(call, handoff=0)  # until fal took it: questions are asked meanwhile
    if not isinstance(outcome, CallToolResult):  # a question for the client: submit_job answers with it
        raise NeedsInput(outcome)
    if outcome.is_error:  # the tool's failure as its own call would have reported it, of the same kind
        from mcp.types import TextContent

        known = call.error if isinstance(call.error, ToolError) else ToolError("")
        first = outcome.content[0]  # a failure is always one text
        raise ToolError(
            first.text if isinstance(first, TextContent) else "", kind=known.kind, status=known.status
        )
    record = await table.store.get(call.job_id) if call.job_id is not None else None
    if record is None:  # record_now: the job is in the store before start returns
        raise ToolError(f"{tool} was not recorded as a job")
    status = status_of(record)
    if record.finished:  # done without a fal job (local work): its result is stored already
        return ToolResult(
            f"{tool} finished at once (no fal job was needed); check_job with job_id "
            f"{record.job_id} returns its result:\n{record.result['text'] if record.result else ''}",
            status,
        )
    return ToolResult(
        f"Submitted {tool} as a background job ({call.endpoint_id}, fal request {call.request_id}). "
        f"Get its result with check_job and job_id {record.job_id}.",
        status,
    )


async def check_job(args: CheckJobInput, ctx: ToolContext) -> ToolResult:
    record = await owned(ctx, args.job_id)
    table = table_of(ctx)
    runner = table.runner
    wait = min(args.wait_seconds, ctx.settings.check_wait_max)
    followed = True
    if not record.finished:
        # followed here from now on (where users' keys pay, only with the key this request brought)
        call = runner.live.get(record.job_id) or await runner.take_over(record, ctx.fal_key)
        followed = call is not None
        if call is not None and wait > 0:
            with anyio.move_on_after(wait):
                await call.finished.wait()
        elif call is None:  # another replica follows it (watched in the store), or none can
            record, followed = await runner.wait_for(record, wait, ctx.fal_key)
        record = await owned(ctx, args.job_id)
        from mcp.types import CallToolResult, TextContent

        outcome = call.outcome if call is not None and call.finished.is_set() else None
        if isinstance(outcome, CallToolResult) and outcome.is_error and not record.finished:
            # the job is as it was (e.g. fal refused the key this request brought to follow it)
            first = outcome.content[0]  # a failure is always one text
            reason = first.text if isinstance(first, TextContent) else ""
            return ToolResult(f"Job {record.status}, but following it failed: {reason}", status_of(record))
    if record.status == "done" and record.result is not None:
        tool = table.registry.tools.get(record.tool)
        result = await table.replayed(tool, record.result) if tool is not None else None
        if result is not None:
            result.text = f"Job done.\n{result.text}"
            return result
    status = status_of(record, runner.live.get(record.job_id))
    webhooks = table.webhooks
    if not record.finished and webhooks is not None and record.request_id:
        # followed by webhook, no status stream: fal is asked once, now (queue position, latest log line)
        asked = await webhooks.status_now(record.endpoint_id, record.request_id, ctx.fal_key)
        status.progress = asked or status.progress
    if record.status == "failed":
        return ToolResult(f"Job failed: {record.error}", status)
    if record.status == "cancelled":
        return ToolResult("Job cancelled.", status)
    if not followed and table.keys.required:
        from .fal_keys import missing_key_message

        return ToolResult(
            f"Job {record.status} when last seen ({record.endpoint_id}); nobody follows it now. To follow it "
            f"to its end, call check_job again with your fal key. {missing_key_message(ctx.settings)}",
            status,
        )
    return ToolResult(
        f"Job {record.status}{': ' + status.progress if status.progress else ''} "
        f"({record.endpoint_id}). Ask again with check_job (wait_seconds up to "
        f"{ctx.settings.check_wait_max:g} waits for it).",
        status,
    )


async def cancel_job(args: JobInput, ctx: ToolContext) -> ToolResult:
    record = await owned(ctx, args.job_id)
    if record.finished:
        return ToolResult(
            f"Job {record.job_id} had already ended ({record.status}); nothing to cancel.", status_of(record)
        )
    cancelled = await table_of(ctx).runner.cancel(record, ctx.fal_key)
    record = await owned(ctx, args.job_id)
    text = (
        f"Cancelled fal request {record.request_id} ({record.endpoint_id})."
        if cancelled
        else f"Could not cancel fal request {record.request_id} ({record.endpoint_id}); it may have finished "
        "already."
    )
    return ToolResult(text, status_of(record))


class NoInput(ToolInput):
    pass


class ListJobsInput(ToolInput):
    limit: int = Field(20, ge=1, le=100, description="How many of your most recent jobs")


class JobList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    jobs: list[JobStatus]


async def list_jobs(args: ListJobsInput, ctx: ToolContext) -> ToolResult:
    records = await table_of(ctx).store.list(ctx.owner.key, args.limit) if ctx.owner.listable else []
    jobs = [status_of(record) for record in records]
    if not jobs:  # said in words: not a heading with nothing under it
        text = (
            "You have no jobs here (submit_job starts one; a call that runs long is handed off as one)."
            if ctx.owner.listable
            else "No jobs can be listed for you: this server cannot recognise you again from one request to "
            "the next (no session, no token). check_job still finds a job by its id."
        )
        return ToolResult(text, JobList(jobs=[]))
    lines = [f"Your {len(jobs)} most recent job{'s' if len(jobs) != 1 else ''}:"]
    lines += [
        f"- {job.job_id}: {job.tool} ({job.endpoint}) {job.status}"
        + (f", {job.progress}" if job.progress and job.status != "done" else "")
        for job in jobs
    ]
    return ToolResult("\n".join(lines), JobList(jobs=jobs))


TOOLS = [
    Tool(
        "submit_job",
        "Submit a background job",
        "Start a tool call in the background; returns a job id for check_job at once.",
        SubmitJobInput,
        submit_job,
        output_model=JobStatus,
        category="utility",
    ),
    Tool(
        "check_job",
        "Check a background job",
        "A job's state, and its result once done.",
        CheckJobInput,
        check_job,
        hints=ToolHints(read_only=True, idempotent=True),
        category="utility",
    ),
    Tool(
        "cancel_job",
        "Cancel a background job",
        "Cancel a job and its fal request.",
        JobInput,
        cancel_job,
        output_model=JobStatus,
        hints=ToolHints(destructive=True, idempotent=True),
        category="utility",
    ),
    Tool(
        "list_jobs",
        "List your jobs",
        "Your most recent jobs, newest first.",
        ListJobsInput,
        list_jobs,
        output_model=JobList,
        hints=ToolHints(read_only=True, idempotent=True),
        category="utility",
    ),
]
JOB_TOOL_NAMES = {tool.name for tool in TOOLS}
