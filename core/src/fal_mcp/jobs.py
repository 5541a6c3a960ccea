"""Background jobs: submit any generation tool's call and come back for the result.

A job id carries everything needed to find the job on fal and to finish the
tool's work: the tool, its (validated, media-resolved) arguments, the endpoint
the fal request id, its owner and its expiry, compressed and encrypted with
AES-GCM. So any replica of a stateless deployment that shares the secret can
answer `check_job`; no job table is needed for correctness; a job id reveals
nothing of the call, and no client can forge one, point one at a request of its
choosing, or use another client's.

How a tool runs as a job: its handler runs with `ctx.job = SUBMIT`; its first
`ctx.run()` submits and stops the handler (JobSubmitted). When fal reports the
job done, the handler runs again with a `Replay` whose first `ctx.run()` hands
back the stored output, so the result is exactly the one the tool returns.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import time
import zlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, model_validator

from .errors import ToolError
from .gateway import FalResult
from .outputs import ToolInput
from .owners import Principal
from .types import Tool, ToolHints, ToolResult

PREFIX = "job_"
SUBMIT = "submit"


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


@functools.cache
def _process_secret() -> bytes:
    return secrets.token_bytes(32)


def _key(settings) -> bytes:
    """The AES-256 key of job ids: from FAL_MCP_JOB_SECRET (replicas share it; at least 32
    characters, checked at start), else random for this process."""
    secret = settings.job_secret.encode() if settings.job_secret else _process_secret()
    return hashlib.sha256(b"fal-mcp job ids\0" + secret).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_job(settings, owner: Principal, tool: str, arguments: dict, endpoint_id: str, request_id: str) -> str:
    """An opaque job id: the job's facts encrypted and authenticated (AES-GCM), so it reveals nothing
    of the call, cannot be forged or altered, names its owner and expires after FAL_MCP_JOB_TTL_HOURS."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    payload = json.dumps({"t": tool, "a": arguments, "e": endpoint_id, "r": request_id, "o": owner.key,
                          "x": int(time.time() + settings.job_ttl)}, separators=(",", ":")).encode()
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_key(settings)).encrypt(nonce, zlib.compress(payload, 9), PREFIX.encode())
    return PREFIX + _b64(nonce + sealed)


def decode_job(settings, job_id: str, owner: Principal) -> dict:
    """The facts of `owner`'s job `job_id`; ToolError, the same for every kind of refusal (forged,
    damaged, expired, another owner's), so a refusal tells nothing about other owners' jobs."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    unknown = ToolError("job_id: no such job (job ids are valid for the client that submitted the job, on this "
                        "server or a replica sharing its FAL_MCP_JOB_SECRET, until they expire)")
    try:
        raw = _unb64(job_id.removeprefix(PREFIX))
        if not job_id.startswith(PREFIX) or len(raw) < 29:
            raise unknown
        job = json.loads(zlib.decompress(AESGCM(_key(settings)).decrypt(raw[:12], raw[12:], PREFIX.encode())))
    except (InvalidTag, ValueError, zlib.error):
        raise unknown from None
    if job.get("o") != owner.key:
        raise unknown
    if job.get("x", 0) < time.time():
        raise ToolError("job_id: this job id has expired (FAL_MCP_JOB_TTL_HOURS); its files stay at the URLs "
                        "given when it finished")
    return job


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
        ran_tool, result = await ctx.table.invoke(tool, arguments, job=SUBMIT, owner=ctx.owner,
                                                  allowed_dirs=ctx.client_roots)
    except JobSubmitted as submitted:
        job_id = encode_job(ctx.settings, ctx.owner, tool, submitted.arguments, submitted.endpoint_id,
                            submitted.request_id)
        status = JobStatus(job_id=job_id, status="submitted", tool=tool, endpoint=submitted.endpoint_id,
                           request_id=submitted.request_id)
        ctx.table.jobs.append((ctx.owner.key, status.model_dump()))
        return ToolResult(f"Submitted {tool} as a background job ({submitted.endpoint_id}, fal request "
                          f"{submitted.request_id}). Check it with check_job and this job_id:\n{job_id}", status)
    # the tool finished without a fal job (local work): its result is here already
    packaged = await ctx.table.package(ran_tool, result, ctx.owner)
    return ToolResult(f"{tool} finished at once (no fal job was needed):\n{packaged.content[0].text}",
                      packaged.structured_content)


async def check_job(args: JobInput, ctx) -> ToolResult:
    from fal_client import InProgress, Queued

    job = decode_job(ctx.settings, args.job_id, ctx.owner)
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
    tool, result = await ctx.table.invoke(job["t"], job["a"], job=Replay(job["e"], job["r"], finished.data),
                                          owner=ctx.owner)
    result.text = f"Job done.\n{result.text}"
    return result


async def cancel_job(args: JobInput, ctx) -> ToolResult:
    job = decode_job(ctx.settings, args.job_id, ctx.owner)
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
    jobs = [JobStatus(**job) for key, job in ctx.table.jobs if ctx.owner.listable and key == ctx.owner.key]
    lines = [f"{len(jobs)} job(s) you submitted to this server in this run:"]
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
