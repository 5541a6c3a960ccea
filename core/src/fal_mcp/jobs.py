"""Background jobs: submit any generation tool's call and come back for the result.

A job id carries everything needed to find the job on fal and to finish the
tool's work: the tool, its (validated, media-resolved) arguments, the endpoint
and the fal request id, compressed and signed with HMAC. So any replica of a
stateless deployment that shares the secret can answer `check_job`; no job table
is needed for correctness, and a client cannot point a job id at a request of
its own choosing.

How a tool runs as a job: its handler runs with `ctx.job = SUBMIT`; its first
`ctx.run()` submits and stops the handler (JobSubmitted). When fal reports the
job done, the handler runs again with a `Replay` whose first `ctx.run()` hands
back the stored output, so the result is exactly the one the tool returns.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import zlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, model_validator

from .errors import ToolError
from .gateway import FalResult
from .outputs import ToolInput
from .types import Tool, ToolHints, ToolResult

PREFIX = "job_"
SUBMIT = "submit"
_PROCESS_SECRET = secrets.token_bytes(32)


class JobSubmitted(Exception):
    """Stops a handler running as a job once its fal request is submitted."""

    def __init__(self, endpoint_id: str, request_id: str, arguments: dict) -> None:
        super().__init__(endpoint_id, request_id)
        self.endpoint_id, self.request_id, self.arguments = endpoint_id, request_id, arguments


@dataclass
class Replay:
    endpoint_id: str
    request_id: str
    data: dict
    used: bool = False


async def run_as_job(ctx, endpoint_id: str, arguments: dict) -> FalResult | None:
    """ctx.run() in a job: submit and stop, or hand back a finished job's output (None: run normally)."""
    if ctx.job == SUBMIT:
        request_id = await ctx.gateway.submit(endpoint_id, arguments)
        raise JobSubmitted(endpoint_id, request_id, ctx.arguments.model_dump(mode="json", exclude_unset=True))
    replay = ctx.job
    if isinstance(replay, Replay) and not replay.used and replay.endpoint_id == endpoint_id:
        replay.used = True
        return FalResult(endpoint_id, replay.request_id, replay.data)
    return None  # a second fal call in the same tool runs in the foreground


# -- job ids --------------------------------------------------------------------------


def _secret(settings) -> bytes:
    """FAL_MCP_JOB_SECRET; else derived from the fal key (replicas share it); else this process only."""
    explicit = os.environ.get("FAL_MCP_JOB_SECRET", "").strip()
    if explicit:
        return explicit.encode()
    if settings.fal_key:
        return hashlib.sha256(b"fal-mcp job ids\0" + settings.fal_key.encode()).digest()
    return _PROCESS_SECRET


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_job(settings, tool: str, arguments: dict, endpoint_id: str, request_id: str) -> str:
    payload = json.dumps({"t": tool, "a": arguments, "e": endpoint_id, "r": request_id, "s": int(time.time())},
                         separators=(",", ":")).encode()
    body = _b64(zlib.compress(payload, 9))
    signature = _b64(hmac.new(_secret(settings), body.encode(), hashlib.sha256).digest()[:18])
    return f"{PREFIX}{body}.{signature}"


def decode_job(settings, job_id: str) -> dict:
    body, _, signature = job_id.removeprefix(PREFIX).partition(".")
    expected = _b64(hmac.new(_secret(settings), body.encode(), hashlib.sha256).digest()[:18])
    if not job_id.startswith(PREFIX) or not hmac.compare_digest(signature, expected):
        raise ToolError("job_id: not a job id issued by this server (or by a replica sharing its secret)")
    try:
        return json.loads(zlib.decompress(_unb64(body)))
    except (ValueError, zlib.error):
        raise ToolError("job_id: the job id is damaged") from None


# -- the tools ----------------------------------------------------------------------------


class SubmitJobInput(ToolInput):
    tool: str | None = Field(None, max_length=64,
                             description="A generation tool to run in the background, e.g. generate_video")
    arguments: dict[str, Any] = Field(default_factory=dict, description="That tool's arguments")
    model: str | None = Field(None, max_length=200, description="Or: any fal model (as for run_model)")
    input: dict[str, Any] | None = Field(None, description="The model's input (with `model`)")

    @model_validator(mode="after")
    def one_form(self):
        if (self.tool is None) == (self.model is None):
            raise ValueError("give either `tool` (with `arguments`) or `model` (with `input`)")
        if self.model is not None and self.input is None:
            raise ValueError("`model` needs `input`")
        return self


class JobInput(ToolInput):
    job_id: str = Field(min_length=5, max_length=200_000, description="The id submit_job returned")


class JobStatus(BaseModel):
    job_id: str
    status: str = Field(description="submitted, queued, running, done, failed or cancelled")
    tool: str
    endpoint: str
    request_id: str
    position: int | None = None
    log: str | None = None
    error: str | None = None


async def submit_job(args: SubmitJobInput, ctx) -> ToolResult:
    tool, arguments = (args.tool, args.arguments) if args.tool else ("run_model", {"model": args.model,
                                                                                 "input": args.input})
    if tool in JOB_TOOL_NAMES:
        raise ToolError(f"tool: {tool} cannot run as a job")
    try:
        ran_tool, result = await ctx.table.invoke(tool, arguments, job=SUBMIT)
    except JobSubmitted as submitted:
        job_id = encode_job(ctx.settings, tool, submitted.arguments, submitted.endpoint_id, submitted.request_id)
        status = JobStatus(job_id=job_id, status="submitted", tool=tool, endpoint=submitted.endpoint_id,
                           request_id=submitted.request_id)
        ctx.table.jobs.append(status.model_dump())
        return ToolResult(f"Submitted {tool} as a background job ({submitted.endpoint_id}, fal request "
                          f"{submitted.request_id}). Check it with check_job and this job_id:\n{job_id}", status)
    # the tool finished without a fal job (local work): its result is here already
    packaged = await ctx.table.package(ran_tool, result)
    return ToolResult(f"{tool} finished at once (no fal job was needed):\n{packaged.content[0].text}",
                      packaged.structured_content)


async def check_job(args: JobInput, ctx) -> ToolResult:
    from fal_client import InProgress, Queued

    job = decode_job(ctx.settings, args.job_id)
    facts = dict(job_id=args.job_id, tool=job["t"], endpoint=job["e"], request_id=job["r"])
    try:
        status = await ctx.gateway.status(job["e"], job["r"])
    except ToolError as exc:
        state = "cancelled" if "cancel" in str(exc).lower() else "failed"
        return ToolResult(f"Job {state}: {exc}", JobStatus(status=state, error=str(exc), **facts))
    if isinstance(status, Queued):
        return ToolResult(f"Job queued at position {status.position} ({job['e']}).",
                          JobStatus(status="queued", position=status.position, **facts))
    if isinstance(status, InProgress):
        last = (status.logs or [{}])[-1].get("message") if status.logs else None
        return ToolResult(f"Job running{': ' + last if last else ''} ({job['e']}).",
                          JobStatus(status="running", log=last, **facts))
    finished = await ctx.gateway.result(job["e"], job["r"])
    tool, result = await ctx.table.invoke(job["t"], job["a"], job=Replay(job["e"], job["r"], finished.data))
    result.text = f"Job done.\n{result.text}"
    return result


async def cancel_job(args: JobInput, ctx) -> ToolResult:
    job = decode_job(ctx.settings, args.job_id)
    cancelled = await ctx.gateway.cancel(job["e"], job["r"])
    state = "cancelled" if cancelled else "failed"
    text = (f"Cancelled fal request {job['r']} ({job['e']})." if cancelled else
            f"Could not cancel fal request {job['r']} ({job['e']}); it may have finished already.")
    return ToolResult(text, JobStatus(job_id=args.job_id, status=state, tool=job["t"], endpoint=job["e"],
                                      request_id=job["r"]))


class NoInput(ToolInput):
    pass


class JobList(BaseModel):
    jobs: list[JobStatus]


async def list_jobs(args: NoInput, ctx) -> ToolResult:
    jobs = [JobStatus(**job) for job in ctx.table.jobs]
    lines = [f"{len(jobs)} job(s) submitted by this server in this run:"]
    lines += [f"- {job.tool} ({job.endpoint}, fal request {job.request_id}): {job.job_id}" for job in jobs]
    return ToolResult("\n".join(lines), JobList(jobs=jobs))


TOOLS = [
    Tool("submit_job", "Submit a background job",
         "Start a generation tool (or any fal model, as with run_model) in the background and return a job id "
         "at once, so a long job (video, music) does not block the conversation. Follow it with check_job.",
         SubmitJobInput, submit_job, output_model=JobStatus, category="utility"),
    Tool("check_job", "Check a background job",
         "Where a background job is: queued (position), running (latest log), done (the same result the tool "
         "would have returned), failed (why) or cancelled.", JobInput, check_job,
         hints=ToolHints(read_only=True, idempotent=True), category="utility"),
    Tool("cancel_job", "Cancel a background job", "Cancel a background job's fal request.", JobInput, cancel_job,
         output_model=JobStatus, hints=ToolHints(destructive=True, idempotent=True), category="utility"),
    Tool("list_jobs", "List background jobs", "The background jobs this server submitted in this run.",
         NoInput, list_jobs, output_model=JobList, hints=ToolHints(read_only=True, idempotent=True),
         category="utility"),
]
JOB_TOOL_NAMES = {tool.name for tool in TOOLS}
