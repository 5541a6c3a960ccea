"""Long tool calls served as MCP tasks, for clients that ask for them. A task id is a job id: the job
store answers for it, so any replica sharing the store does, and a task survives a restart.

- 2025-11-25: a `tools/call` with `params.task` is answered with `{"task": Task}` at once; then
  `tasks/get`, `tasks/result` (waits until the task ends), `tasks/list`, `tasks/cancel`. Tools that
  may start fal jobs advertise `execution.taskSupport: "optional"`.
- 2026-07-28: the `io.modelcontextprotocol/tasks` extension (SEP-2663): a client that declares it in a
  request's capabilities gets `{"resultType": "task", ...}` for a generation call; then `tasks/get`
  (with the result or error inline), `tasks/update`, `tasks/cancel`.

The SDK has the 2025 wire models but reshapes every 2025 `tools/call` result as a CallToolResult, so a
middleware hands the created task back instead (`answer_created_task`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from .outputs import GenerationOutput
from .store import JobRecord

EXTENSION = "io.modelcontextprotocol/tasks"
RELATED_TASK = "io.modelcontextprotocol/related-task"
LEGACY_VERSION = "2025-11-25"
POLL_INTERVAL_MS = 1000
# the 2025-era task a tools/call created, handed from the handler to the middleware
_created: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "fal_mcp_created_task", default=None
)

# How build_server's tools/call handler starts a call as a task: (ctx, params, allowed_dirs, fal_key) ->
# the 2026-era answer, or None once the 2025-era one is handed to the middleware.
StartTask = Callable[[Any, Any, Callable[[], Awaitable[list[str] | None]], Any], Awaitable[Any]]


def task_support(tool) -> str:
    """Generation tools (the ones that start fal jobs) may run as tasks; the rest answer at once."""
    return "optional" if tool.output_model is GenerationOutput else "forbidden"


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def task_status(record: JobRecord) -> str:
    return {"done": "completed", "failed": "failed", "cancelled": "cancelled"}.get(record.status, "working")


def wire_task(record: JobRecord, ttl_ms: int, modern: bool) -> dict[str, Any]:
    """The Task of a job, as each era spells it (a dict: the 2025 `ttl` is required and may be null)."""
    task: dict[str, Any] = {
        "taskId": record.job_id,
        "status": task_status(record),
        "createdAt": _time(record.created_at),
        "lastUpdatedAt": _time(record.updated_at),
    }
    message = record.error if record.status == "failed" else record.progress
    if message:
        task["statusMessage"] = message[:500]
    task.update(
        {"ttlMs": ttl_ms, "pollIntervalMs": POLL_INTERVAL_MS}
        if modern
        else {"ttl": ttl_ms, "pollInterval": POLL_INTERVAL_MS}
    )
    return task


def is_modern(ctx) -> bool:
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def declared(ctx) -> bool:
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and EXTENSION in capabilities.extensions)


def _require_extension(ctx) -> None:
    from mcp.shared.exceptions import MCPError
    from mcp_types import MISSING_REQUIRED_CLIENT_CAPABILITY

    if not declared(ctx):
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message="Missing required client capability",
            data={"requiredCapabilities": {"extensions": {EXTENSION: {}}}},
        )


def _method_not_found(name: str):
    from mcp.shared.exceptions import MCPError
    from mcp_types import METHOD_NOT_FOUND

    return MCPError(code=METHOD_NOT_FOUND, message="Method not found", data=name)


def wants_task(ctx, params, tool) -> bool:
    """Whether this tools/call runs as a task; MCPError when the request asks what the tool refuses."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import METHOD_NOT_FOUND

    support = task_support(tool)
    if is_modern(ctx):  # params.task means nothing in this era
        return support != "forbidden" and declared(ctx)
    asked = params.task is not None and ctx.protocol_version == LEGACY_VERSION
    if asked and support == "forbidden":
        raise MCPError(code=METHOD_NOT_FOUND, message=f"{tool.name} does not run as a task")
    return asked


def serve_tasks(server, table, owner_of) -> StartTask:
    """Add the task methods, the middleware and the capabilities of both eras to a low-level Server;
    the function build_server's tools/call handler starts a task with."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import (
        INVALID_PARAMS,
        CancelTaskRequestParams,
        GetTaskPayloadRequestParams,
        GetTaskRequestParams,
        PaginatedRequestParams,
        RequestParams,
        ServerTasksCapability,
        ServerTasksRequestsCapability,
        TasksCallCapability,
        TasksCancelCapability,
        TasksListCapability,
        TasksToolsCapability,
        methods,
    )

    ttl_ms = int(table.settings.job_retention * 1000)

    async def record_of(ctx, task_id: str) -> JobRecord:
        record = await table.store.get(task_id)
        if record is None or record.owner != owner_of(ctx).key:  # another owner's task is no task
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found")
        return record

    async def key_of(ctx):
        """The fal key of this request (fal_keys.py), None where there is none: a task not followed here
        is followed again only with its owner's key."""
        from .fal_keys import request_headers

        return await table.keys.key_or_none(owner_of(ctx), request_headers(ctx))

    async def finished(ctx, record: JobRecord, wait: float | None) -> JobRecord:
        """The record once the job has ended (followed here from now on if nobody follows it and the
        request brings the key it needs; watched in the store while another replica follows it), or as
        it is when `wait` seconds pass first."""
        if record.finished:
            return record
        found, _ = await table.runner.wait_for(record, wait, await key_of(ctx))
        return found

    async def result_of(record: JobRecord) -> dict:
        """The job's CallToolResult, as the tool call would have answered it."""
        from mcp import types

        tool = table.registry.tools.get(record.tool)
        if record.status == "done" and record.result is not None and tool is not None:
            result = await table.package(tool, await table.replayed(tool, record.result), _owner(record))
        else:
            text = record.error or (
                "The task was cancelled." if record.status == "cancelled" else "No result."
            )
            result = types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def start_task(
        ctx, params, allowed_dirs: Callable[[], Awaitable[list[str] | None]], fal_key=None
    ) -> Any:
        """Start the call as a task (paid with `fal_key`, fal_keys.py): its job is recorded before the
        answer goes out."""
        call = await table.start(
            params.name,
            params.arguments,
            owner=owner_of(ctx),
            allowed_dirs=allowed_dirs,
            record_now=True,
            fal_key=fal_key,
        )
        record = await table.store.get(call.job_id)
        if is_modern(ctx):
            return {"resultType": "task", **wire_task(record, ttl_ms, modern=True)}
        box = _created.get()
        if box is None:  # the 2025 era's answer goes through answer_created_task, which sets the box
            raise RuntimeError("a 2025-era task was started outside answer_created_task")
        box["result"] = {"task": wire_task(record, ttl_ms, modern=False)}
        return None

    async def tasks_get(ctx, params: GetTaskRequestParams):
        if is_modern(ctx):
            _require_extension(ctx)
        record = await record_of(ctx, params.task_id)
        if not record.finished and record.job_id not in table.runner.live:
            record = await finished(ctx, record, 0)  # follow it here: nobody else may be
        if not is_modern(ctx):
            return wire_task(record, ttl_ms, modern=False)
        answer = {"resultType": "complete", **wire_task(record, ttl_ms, modern=True)}
        if record.status == "failed":
            answer["status"] = "completed"  # a tool error is a result in this era, not a JSON-RPC error
        if record.finished and record.status != "cancelled":
            answer["result"] = await result_of(record)
        return answer

    async def tasks_result(ctx, params: GetTaskPayloadRequestParams):
        if is_modern(ctx):
            raise _method_not_found("tasks/result")
        record = await finished(ctx, await record_of(ctx, params.task_id), None)
        if not record.finished:  # nobody follows it, and this request brought no key to follow it with
            from .fal_keys import missing_key_message

            raise MCPError(
                code=INVALID_PARAMS,
                message=f"The task is still running. {missing_key_message(table.settings)}",
            )
        payload = methods.serialize_server_result("tools/call", ctx.protocol_version, await result_of(record))
        return {**payload, "_meta": {**payload.get("_meta", {}), RELATED_TASK: {"taskId": record.job_id}}}

    async def tasks_list(ctx, params: PaginatedRequestParams):
        if is_modern(ctx):
            raise _method_not_found("tasks/list")
        owner = owner_of(ctx)
        records = await table.store.list(owner.key, 100) if owner.listable else []
        return {"tasks": [wire_task(record, ttl_ms, modern=False) for record in records]}

    async def tasks_cancel(ctx, params: CancelTaskRequestParams):
        if is_modern(ctx):
            _require_extension(ctx)
        record = await record_of(ctx, params.task_id)
        if record.finished:
            if is_modern(ctx):
                return {}
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"Cannot cancel task: already in terminal status '{task_status(record)}'",
            )
        from .errors import ToolError

        try:
            await table.runner.cancel(record, await key_of(ctx))
        except ToolError as exc:  # it needs the owner's fal key, which this request did not bring
            raise MCPError(code=INVALID_PARAMS, message=f"Cannot cancel task: {exc}") from None
        if is_modern(ctx):
            return {}
        return wire_task(await table.store.get(record.job_id) or record, ttl_ms, modern=False)

    class UpdateTaskParams(RequestParams):
        task_id: str
        input_responses: dict[str, Any] = {}

    async def tasks_update(ctx, params: UpdateTaskParams):
        if not is_modern(ctx):
            raise _method_not_found("tasks/update")
        _require_extension(ctx)
        await record_of(ctx, params.task_id)
        return {}  # this server never asks for input mid-task: nothing to update

    server.add_request_handler("tasks/get", GetTaskRequestParams, tasks_get)
    server.add_request_handler("tasks/result", GetTaskPayloadRequestParams, tasks_result)
    server.add_request_handler("tasks/list", PaginatedRequestParams, tasks_list)
    server.add_request_handler("tasks/cancel", CancelTaskRequestParams, tasks_cancel)
    server.add_request_handler("tasks/update", UpdateTaskParams, tasks_update)
    server.middleware.append(answer_created_task)
    server.extensions[EXTENSION] = {}  # 2026: server/discover (the 2025 surface drops it)
    plain_capabilities = server.get_capabilities

    def capabilities(*args, **kwargs):
        found = plain_capabilities(*args, **kwargs)
        found.tasks = ServerTasksCapability(  # 2025: initialize (the 2026 surface drops it)
            list=TasksListCapability(),
            cancel=TasksCancelCapability(),
            requests=ServerTasksRequestsCapability(tools=TasksToolsCapability(call=TasksCallCapability())),
        )
        return found

    server.get_capabilities = capabilities
    return start_task  # used by build_server's tools/call handler


async def answer_created_task(ctx, call_next):
    """2025 era: the SDK reshapes a tools/call result as a CallToolResult; the task a handler created
    is handed back here instead of that placeholder."""
    if ctx.method != "tools/call":
        return await call_next(ctx)
    box: dict[str, Any] = {}
    token = _created.set(box)
    try:
        result = await call_next(ctx)
    finally:
        _created.reset(token)
    return box.get("result", result)


def _owner(record: JobRecord):
    from .owners import Principal

    return Principal(record.owner)
