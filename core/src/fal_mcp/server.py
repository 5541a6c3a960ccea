"""The MCP server: one tool table, built from the registry, served over any transport.

Validation, the model choice and the mapping of failures to isError results
happen here, once, for every tool of every pack.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from .config import Settings
from .context import ToolContext
from .errors import ArgumentError, ToolError, scrub, shown
from .gateway import FalGateway
from .outputs import GenerationOutput, OutputFile
from .owners import STDIO, Principal
from .plugins import Registry
from .runner import Call, Runner
from .store import open_store
from .types import Tool, ToolResult

if TYPE_CHECKING:
    from anyio import CancelScope
    from mcp.types import Tool as McpTool

    from .fal_keys import FalKey
    from .spending import Asker

    # (owner or session, request id) -> the cancel scopes of the calls running under that id
    InFlight = dict[tuple[str, str], set[CancelScope]]

log = logging.getLogger(__name__)
SERVER_NAME = "fal-mcp"
# What every tool has in common, said once here instead of in every tool's listing.
INSTRUCTIONS = (
    "Generate and edit images, video and audio with fal.ai models. Media inputs (image_url, video_url, "
    "...) take an https URL, a data: URI or a local file path inside the allowed directories. A setting "
    "the chosen model does not take, or a length it cannot make, is adapted or dropped, and the result's "
    "notes say so. Generation results give each file's URL and size, the endpoint, seed and cost; a "
    "call still running after a while returns a job_id for check_job instead."
)
# The longest message kept for one invalid field (a validator may quote a huge value in its message).
FIELD_MESSAGE_LIMIT = 300


def default_store_url() -> str:
    """The job store when FAL_MCP_STORE is not set: a SQLite file in the user's state directory."""
    from .config import state_dir

    return f"sqlite:///{os.path.join(state_dir(), 'jobs.sqlite3')}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fal-mcp-core")
    except PackageNotFoundError:
        return "0"


def format_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        if len(where) > FIELD_MESSAGE_LIMIT:
            where = where[:FIELD_MESSAGE_LIMIT] + "..."
        message = error["msg"]
        if len(message) > FIELD_MESSAGE_LIMIT:
            message = message[:FIELD_MESSAGE_LIMIT] + "..."
        if error["type"] not in ("missing", "extra_forbidden") and "input" in error:
            message += f" (got {shown(error['input'])})"
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


CONFIRM_FIELD = {
    "type": "string",
    "description": "Only after the user agreed: the confirmation token a refusal of this call gave "
    "(FAL_MCP_CONFIRM_ABOVE)",
}


def client_schema(schema: dict[str, Any], *, descriptions: bool = True) -> dict[str, Any]:
    """A pydantic JSON schema as every MCP client reads it right, in few bytes: definitions inlined,
    so every property has its own top-level `type` (generic clients convert arguments by it); an
    optional field (`anyOf [T, null]`, default null) is T, simply not required, since leaving it out
    means null; pydantic's generated titles dropped (the property names say it), and with
    `descriptions=False` the descriptions too (an output schema types the result; the model reads the
    result itself)."""
    definitions = schema.get("$defs", {})

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            found = definitions[node["$ref"].rsplit("/", 1)[-1]]
            return clean({**found, **{k: v for k, v in node.items() if k != "$ref"}})
        variants = node.get("anyOf")
        if isinstance(variants, list) and {"type": "null"} in variants:
            rest = [v for v in variants if v != {"type": "null"}]
            optional = "default" in node and node["default"] is None  # leaving it out is null
            if len(rest) == 1 and (optional or isinstance(rest[0].get("type"), str)):
                merged = {**{k: v for k, v in node.items() if k != "anyOf"}, **rest[0]}
                if optional:
                    del merged["default"]
                else:  # required, and may be null
                    merged["type"] = [merged["type"], "null"]
                return clean(merged)
        return {
            key: clean(value)
            if key not in ("properties", "$defs")
            else {n: clean(v) for n, v in value.items()}
            for key, value in node.items()
            if key != "$defs"
            and not (key == "title" and isinstance(value, str))
            and not (key == "description" and not descriptions and isinstance(value, str))
        }

    return clean(schema)


def tool_annotations(hints):
    """The tool's hints, each only where it differs from MCP's default (read-only: false, destructive:
    true, idempotent: false, open world: true); every conversation pays for the bytes."""
    from mcp import types

    return types.ToolAnnotations(
        read_only_hint=True if hints.read_only else None,
        destructive_hint=False if not hints.destructive and not hints.read_only else None,
        idempotent_hint=True if hints.idempotent else None,
        open_world_hint=False if not hints.open_world else None,
    )


def output_schema(model) -> dict[str, Any]:
    """What a result always has, typed: the required fields, all the way down. The optional ones (a
    seed, notes, the receipt...) are left out, since a schema that does not forbid other fields still
    validates them, and spelling them out for every tool was half of what tools/list weighed."""

    def required_only(node: Any) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("properties"), dict):
                wanted = set(node.get("required", []))
                node = {**node, "properties": {k: v for k, v in node["properties"].items() if k in wanted}}
            return {key: required_only(value) for key, value in node.items()}
        if isinstance(node, list):
            return [required_only(item) for item in node]
        return node

    return required_only(client_schema(model.model_json_schema(), descriptions=False))


def model_summary(description: str) -> str:
    """A model's description without its display name ("FLUX.1 [dev]: higher quality" -> "higher
    quality"): the alias beside it names the model, and every conversation pays for the listing."""
    name, colon, rest = description.partition(": ")
    return rest if colon and len(name) <= 60 and rest else description


def input_schema(tool: Tool, registry: Registry, settings: Settings | None = None) -> dict[str, Any]:
    """The tool's schema as clients read it (client_schema), with the registered models as the model
    field's exact choices (aliases and endpoint ids), and `confirm` where a spending confirmation can be
    asked for."""
    from .spending import may_spend

    schema = client_schema(tool.input_model.model_json_schema())
    if settings is not None and settings.confirm_above is not None and may_spend(tool):
        schema.setdefault("properties", {})["confirm"] = CONFIRM_FIELD
    if tool.model_field:
        models = registry.models_for(tool.name)
        default = registry.default_model(tool.name)
        prop = schema.get("properties", {}).get(tool.model_field)
        if prop is not None and models:
            prop.pop("anyOf", None)
            prop["type"] = "string"
            prop["enum"] = list(dict.fromkeys([m.alias for m in models] + [m.endpoint_id for m in models]))
            if default:
                prop["default"] = default.alias
            prop["description"] = "; ".join(f"{m.alias}: {model_summary(m.description)}" for m in models)
    return schema


class Outputs:
    """The files this server run produced, exposed as MCP resources (fal-mcp://outputs/...), each
    visible to its owner only. Bounded: the oldest are forgotten first (the files stay on fal)."""

    PREFIX = "fal-mcp://outputs/"
    LIMIT = 2000

    def __init__(self) -> None:
        from collections import OrderedDict

        self.files: OrderedDict[str, tuple[str, OutputFile]] = OrderedDict()  # uri -> (owner key, file)

    def record(self, output: GenerationOutput, owner: Principal) -> None:
        for index, file in enumerate(output.files):
            uri = f"{self.PREFIX}{output.request_id}/{index}"
            self.files[uri] = (owner.key, file)
            self.files.move_to_end(uri)
        while len(self.files) > self.LIMIT:
            self.files.popitem(last=False)

    def file(self, uri: str, owner: Principal) -> OutputFile | None:
        """The owner's file at `uri`, else None (another owner's file is as unknown as a missing one)."""
        entry = self.files.get(uri)
        return entry[1] if entry is not None and entry[0] == owner.key else None

    def listing(self, owner: Principal):
        from mcp import types

        if not owner.listable:
            return []
        return [
            types.Resource(
                uri=uri,
                name=uri.removeprefix(self.PREFIX),
                mime_type=file.content_type,
                size=file.file_size,
                description=file.url,
            )
            for uri, (key, file) in self.files.items()
            if key == owner.key
        ]


class ToolTable:
    """The registry's tools as MCP sees them, and the one way to call them."""

    def __init__(self, registry: Registry, settings: Settings, gateway: FalGateway) -> None:
        self.registry = registry
        self.settings = settings
        self.gateway = gateway
        self._listing: list[McpTool] | None = None
        self.outputs = Outputs()
        self.calls_in_flight = 0  # tool calls running now (shown by /health)
        from .fal_keys import KeyResolver

        self.keys = KeyResolver(settings)  # whose fal key pays for each call (ConfigError: no start)
        self.store = open_store(settings.store_url or default_store_url())
        self.runner = Runner(self)
        # FAL_MCP_PUBLIC_URL: jobs followed by fal's webhooks, received at /fal/webhook (webhook_jobs.py)
        self.webhooks = None
        if settings.webhook_url:
            from .webhook_jobs import WebhookJobs

            self.webhooks = gateway.webhooks = WebhookJobs(self)

    def listing(self):
        from mcp import types

        from .tasks import task_support
        from .viewer import tool_meta

        if self._listing is None:
            self._listing = [
                types.Tool(
                    name=tool.name,
                    title=tool.title,
                    description=tool.description,
                    input_schema=input_schema(tool, self.registry, self.settings),
                    output_schema=output_schema(tool.output_model) if tool.output_model else None,
                    annotations=tool_annotations(tool.hints),
                    execution=(
                        types.ToolExecution(task_support=task_support(tool))
                        if task_support(tool) != "forbidden"
                        else None
                    ),  # absent means forbidden
                    _meta=tool_meta(tool),
                )
                for tool in self.registry.tools.values()
            ]
        return self._listing

    async def _resolve_media(self, tool: Tool, args: BaseModel, context: ToolContext) -> BaseModel:
        """Local paths and data: URIs in MediaUrl fields become fal storage URLs. LocalMediaUrl fields the
        tool reads itself in this call (ToolContext.read_media; media.read_here) are only checked for
        syntax and left as given: nothing of them is read or uploaded here."""
        from .media import MediaError, check_media_syntax, media_fields, read_here

        fields = media_fields(tool.input_model)
        local = read_here(args)
        updates = {}
        for name, is_list in fields.items():
            value = getattr(args, name)
            if value is None:
                continue
            resolved = []
            for index, item in enumerate(value if is_list else [value]):
                try:
                    if name in local:
                        check_media_syntax(item)
                    else:
                        resolved.append(await context.media_url(item))
                except MediaError as exc:
                    where = f"{name}[{index}]" if is_list else name
                    raise ArgumentError(where, str(exc), tool=tool.name) from None
                except ToolError as exc:  # the upload to fal storage failed: say which input
                    where = f"{name}[{index}]" if is_list else name
                    raise ToolError(
                        f"{where}: uploading it to fal storage failed: {exc}",
                        kind=exc.kind,
                        status=exc.status,
                    ) from None
            if name not in local:
                updates[name] = resolved if is_list else resolved[0]
        return args.model_copy(update=updates) if updates else args

    async def validate(self, tool: Tool, arguments: dict[str, Any] | None) -> BaseModel:
        """The tool's arguments checked against its input model (and its model choice); ToolError names
        each bad field."""
        try:
            args = tool.input_model.model_validate(arguments or {})
        except ValidationError as exc:  # one or more fields, each named in the message
            raise ToolError(
                f"Invalid arguments for {tool.name}: {format_validation_error(exc)}", kind="refused"
            ) from None
        if tool.model_field:
            try:
                self.registry.resolve_model(tool.name, getattr(args, tool.model_field))
            except ValueError as exc:
                raise ArgumentError(tool.model_field, str(exc), tool=tool.name) from None
        return args

    def new_context(
        self,
        tool: Tool,
        *,
        owner: Principal = STDIO,
        report_progress=None,
        allowed_dirs=None,
        fal_key: FalKey | None = None,
    ) -> ToolContext:
        return ToolContext(
            tool=tool,
            gateway=self.gateway,
            registry=self.registry,
            settings=self.settings,
            report_progress=report_progress,
            client_roots=allowed_dirs,
            table=self,
            owner=owner,
            fal_key=fal_key,
        )

    async def start(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        owner: Principal = STDIO,
        report_progress=None,
        allowed_dirs=None,
        record_now: bool = False,
        asker: Asker | None = None,
        fal_key: FalKey | None = None,
    ) -> Call:
        """Validate the arguments, resolve media inputs (in the caller's task: local files are read with
        the caller's roots), then start the handler in a task of its own (runner.py). Failures before
        the start raise (ToolError for anything the user can act on). `asker`: how to ask the user of
        the waiting request (spending.py); `fal_key`: whose fal key pays (fal_keys.py; None: the
        server's, refused where the operator chose users' keys)."""
        from .fal_keys import WITHOUT_KEY, KeyRefused, missing_key_message
        from .spending import may_spend

        tool = self.registry.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.registry.tools)) or "none"
            raise ToolError(f"Unknown tool {shown(name)}. Available tools: {known}.", kind="refused")
        if fal_key is None and self.keys.required and name not in WITHOUT_KEY:
            raise KeyRefused(missing_key_message(self.settings))  # before anything is read or sent
        arguments = dict(arguments or {})
        token = None
        if self.settings.confirm_above is not None and may_spend(tool) and "confirm" in arguments:
            token = arguments.pop("confirm")
            if not isinstance(token, str) or not token:
                raise ArgumentError("confirm", "must be the token a refusal of this call gave", tool=name)
        args = await self.validate(tool, arguments)
        context = self.new_context(
            tool, owner=owner, report_progress=report_progress, allowed_dirs=allowed_dirs, fal_key=fal_key
        )
        context.client_arguments, context.confirm_token = arguments, token
        context.arguments = await self._resolve_media(tool, args, context)
        return await self.runner.start(tool, context, record_now=record_now, asker=asker)

    async def call(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        report_progress=None,
        allowed_dirs=None,
        owner: Principal = STDIO,
        handoff: float | None | Literal["default"] = "default",
        asker: Asker | None = None,
        fal_key: FalKey | None = None,
    ):
        """Validate, run and package one tool call for `owner`. Returns a CallToolResult: the tool's
        result, or, when its job runs longer than `handoff` seconds (FAL_MCP_HANDOFF_AFTER by default;
        None: never), a result carrying the job id (runner.py); or, where the user must answer a
        question first (spending.py, 2026-era clients), an InputRequiredResult.

        `allowed_dirs`, when given, is an async function returning the client's roots; `asker`, how to
        ask the user; `fal_key`, whose fal key pays (fal_keys.py).
        """
        self.calls_in_flight += 1
        try:
            try:
                call = await self.start(
                    name,
                    arguments,
                    owner=owner,
                    report_progress=report_progress,
                    allowed_dirs=allowed_dirs,
                    asker=asker,
                    fal_key=fal_key,
                )
            except Exception as exc:
                return self.failure(name, exc)
            after = self.settings.handoff_after if isinstance(handoff, str) else handoff  # str: "default"
            return await self.runner.wait(call, after)
        finally:
            self.calls_in_flight -= 1

    async def replayed(self, tool: Tool, stored: dict[str, Any]) -> ToolResult:
        """A finished job's stored result as the tool's result again."""
        structured = stored.get("structured")
        if tool.output_model is not None and isinstance(structured, dict):
            structured = tool.output_model.model_validate(structured)
        return ToolResult(stored.get("text", ""), structured)

    async def __aenter__(self) -> ToolTable:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop following jobs (they stay unfinished in the store, resumed on the next start)."""
        await self.runner.aclose()
        if self.webhooks is not None:
            await self.webhooks.aclose()
        await self.store.aclose()

    def failure(self, name: str, exc: Exception):
        """The one mapping of a failed call to an isError result."""
        if isinstance(exc, ArgumentError):  # of the tool it names (submit_job starts another), else this one
            return _error(scrub(f"Invalid arguments for {exc.tool or name}: {exc}", self.settings.secrets()))
        if isinstance(exc, ToolError):
            return _error(scrub(str(exc), self.settings.secrets()))
        if isinstance(exc, ValidationError):
            return _error(f"{name} could not read fal's answer: {format_validation_error(exc)}")
        log.error("tool %s failed", name, exc_info=exc)
        return _error(
            scrub(f"Internal error in {name}: {type(exc).__name__}: {exc}", self.settings.secrets())
        )

    async def package(self, tool: Tool, result: ToolResult, owner: Principal):
        """A handler's result as MCP content: text, previews, file links, structured content."""
        from mcp import types

        images, text = list(result.images), result.text
        if isinstance(result.structured, GenerationOutput):
            from .delivery import deliver

            noted = len(result.structured.notes)
            images += await deliver(
                result.structured, tool=tool.name, settings=self.settings, http=self.gateway.downloads()
            )
            saved = [f"Saved: {file.local_path}" for file in result.structured.files if file.local_path]
            added = [f"Note: {note}" for note in result.structured.notes[noted:]]
            text = "\n".join([text, *saved, *added])
            self.outputs.record(result.structured, owner)
        content: list[Any] = [types.TextContent(type="text", text=text)]
        for data, mime_type in images:
            content.append(
                types.ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=mime_type)
            )
        if isinstance(result.structured, GenerationOutput):
            content += _file_links(result.structured)
        structured = result.structured
        if isinstance(structured, BaseModel):
            structured = structured.model_dump(mode="json")
        return types.CallToolResult(content=content, structured_content=structured, is_error=False)


def _file_links(output: GenerationOutput) -> list[Any]:
    """Resource links for every file, with its MIME type, and notes added while delivering."""
    from mcp import types

    links: list[Any] = []
    for index, file in enumerate(output.files):
        name = file.url.rstrip("/").rsplit("/", 1)[-1] or f"file-{index + 1}"
        links.append(
            types.ResourceLink(
                type="resource_link",
                uri=file.url,
                name=name,
                mime_type=file.content_type,
                size=file.file_size,
            )
        )
        if file.local_path:
            links.append(
                types.ResourceLink(
                    type="resource_link",
                    uri=Path(file.local_path).as_uri(),
                    name=Path(file.local_path).name,
                    mime_type=file.content_type,
                    size=file.file_size,
                )
            )
    return links


def _error(message: str):
    from mcp import types

    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


async def client_roots(session) -> list[str] | None:
    """The directories the client declared as MCP roots, if it declares any."""
    from urllib.parse import unquote, urlsplit

    capabilities = session.client_capabilities
    if capabilities is None or capabilities.roots is None:
        return None
    import warnings

    from mcp.shared.exceptions import MCPDeprecationWarning

    try:
        # Roots are deprecated in the 2026 era, and the SDK says so on every listing: not to our stderr.
        # (The warning is raised when the coroutine is made, so only that is inside the filter.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            listing_roots = session.list_roots()
        listing = await listing_roots
    except Exception as exc:  # an old or partial client: fall back to the configured directories
        log.info("could not list the client's roots: %s", exc)
        return None
    # Every declared root counts, even one that does not exist here: roots only narrow (media.narrow).
    return [
        unquote(urlsplit(str(root.uri)).path) for root in listing.roots if str(root.uri).startswith("file:")
    ] or None


def build_server(table: ToolTable, in_flight: InFlight | None = None, principal_of=None):
    """A low-level mcp Server whose tools are `table`'s.

    `principal_of(ctx)`, given by the HTTP transport, names the owner of a request (default: the
    stdio client). `in_flight`, given by the HTTP transport too, maps (owner or session, request
    id) to the cancel scope of each running call, so that a client that disconnects or sends
    `notifications/cancelled` on another connection can have its call cancelled.
    """
    import anyio
    from mcp import types
    from mcp.server import Server

    from . import viewer
    from .tasks import serve_tasks

    async def on_list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=table.listing())

    def owner(ctx) -> Principal:
        return principal_of(ctx) if principal_of is not None else STDIO

    async def on_call_tool(ctx, params: types.CallToolRequestParams):
        from .fal_keys import WITHOUT_KEY, KeyRefused, request_headers
        from .spending import asker_for
        from .tasks import wants_task

        principal = owner(ctx)
        headers = request_headers(ctx)
        # Whose fal key pays for this call: decided here, once per request, and carried by the call.
        try:
            fal_key = await table.keys.key_for(principal, headers)
        except KeyRefused as refusal:  # the job tools answer from the store without one
            if params.name not in WITHOUT_KEY:
                return table.failure(params.name, refusal)
            fal_key = None
        tool = table.registry.tools.get(params.name)
        if tool is not None and wants_task(ctx, params, tool):
            try:
                created = await start_task(ctx, params, lambda: client_roots(ctx.session), fal_key)
            except Exception as exc:
                return table.failure(params.name, exc)
            return created if created is not None else types.CallToolResult(content=[])  # see tasks.py

        def call():
            return table.call(
                params.name,
                params.arguments,
                ctx.session.report_progress,
                lambda: client_roots(ctx.session),
                owner=principal,
                asker=asker_for(ctx, params) if table.settings.confirm_above is not None else None,
                fal_key=fal_key,
            )

        session_id = headers.get("mcp-session-id") if in_flight is not None and headers is not None else None
        # Without a session (stateless HTTP) a cancel can only be matched to its call by the owner,
        # and only an owner that can be recognised again.
        scope_owner = session_id or (principal.key if in_flight is not None and principal.listable else None)
        if scope_owner is None or in_flight is None:  # a scope owner comes with in_flight only
            return await call()
        key = (scope_owner, str(ctx.request_id))
        with anyio.CancelScope() as scope:
            # a set: two calls of one token's holder may carry the same request id
            in_flight.setdefault(key, set()).add(scope)
            try:
                return await call()
            finally:
                scopes = in_flight.get(key, set())
                scopes.discard(scope)
                if not scopes:
                    in_flight.pop(key, None)
        return _error("The call was cancelled.")  # never delivered

    async def on_list_resources(ctx, params) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[viewer.resource(), *table.outputs.listing(owner(ctx))])

    async def on_list_resource_templates(ctx, params) -> types.ListResourceTemplatesResult:
        # Generic clients (the MCP Inspector) ask for it: the outputs' URIs, as a template.
        outputs = types.ResourceTemplate(
            uri_template=Outputs.PREFIX + "{request_id}/{index}",
            name="output",
            title="A file made for you",
            description="The index-th file of fal request request_id, made in this server run (resources/list "
            "lists yours)",
        )
        return types.ListResourceTemplatesResult(resource_templates=[outputs])

    async def on_set_logging_level(ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        # 2025-era clients may set a level once logging is advertised (the handler advertises it). This
        # server sends no notifications/message at any level (its logs go to stderr), so every level
        # holds as it is; an unknown level is refused by the SDK (-32602) before it gets here.
        return types.EmptyResult()

    async def on_read_resource(ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        from mcp.shared.exceptions import MCPError

        from .media import MediaError, fetch

        if str(params.uri) == viewer.VIEWER_URI:
            return viewer.read()

        file = table.outputs.file(str(params.uri), owner(ctx))
        if file is None:
            raise MCPError(
                code=-32002,
                message=f"Unknown resource {shown(str(params.uri), 200)}: "
                "list_resources shows your outputs of this run",
            )
        try:
            fetched = await fetch(
                file.url, trusted_urls=list(table.settings.urls.values()), http=table.gateway.downloads()
            )
        except MediaError as exc:
            raise MCPError(
                code=-32603, message=f"Could not read {shown(str(params.uri), 200)}: {exc}"
            ) from None
        return types.ReadResourceResult(
            contents=[
                types.BlobResourceContents(
                    uri=params.uri,
                    mime_type=file.content_type or fetched.content_type,
                    blob=base64.b64encode(fetched.data).decode(),
                )
            ]
        )

    server = Server(
        SERVER_NAME,
        version=_version(),
        title="fal.ai for MCP",
        instructions=INSTRUCTIONS,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
        on_list_resources=on_list_resources,
        on_read_resource=on_read_resource,
        on_list_resource_templates=on_list_resource_templates,
    )
    # Not the constructor's on_set_logging_level, which prints an MCPDeprecationWarning on every build.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, on_set_logging_level)
    server.middleware.append(request_state_boundary(table.settings, owner))
    viewer.advertise(server)
    start_task = serve_tasks(server, table, owner)
    return server


def request_state_boundary(settings: Settings, owner):
    """The SDK's seal on the state a 2026-era client carries between the rounds of one call (the spending
    confirmation's): a client can neither read nor forge it, and it is bound to the call's arguments and
    owner. Its key is FAL_MCP_STATE_KEY, else one derived from the fal key (so replicas sharing the key
    read each other's state, and a restart keeps it valid), else one made now."""
    import hashlib

    from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity

    secret: str | bytes = settings.state_key or (
        hashlib.sha256(b"fal-mcp request state\0" + settings.fal_key.encode()).hexdigest()
        if settings.fal_key
        else os.urandom(32)
    )
    security = RequestStateSecurity(keys=[secret], bind_principal=lambda ctx: owner(ctx).key)
    return RequestStateBoundary(security, default_audience=SERVER_NAME)


def protocol_error(problem: Exception):
    """The JSON-RPC 2.0 answer to a line that is not a message: -32700 if it is not JSON, else -32600,
    with the request's id when it has a usable one (so its sender is not left waiting), else null."""
    from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
    from pydantic import ValidationError

    errors = problem.errors(include_url=False) if isinstance(problem, ValidationError) else []
    if not errors or any(error["type"] == "json_invalid" for error in errors):
        return JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=PARSE_ERROR, message="Parse error"))
    sent: dict[str, Any] = next(
        (error["input"] for error in errors if isinstance(error.get("input"), dict)), {}
    )
    request_id = sent.get("id") if "method" in sent else None
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
        request_id = None
    return JSONRPCError(
        jsonrpc="2.0",
        id=request_id,
        error=ErrorData(
            code=INVALID_REQUEST,
            message="Invalid Request: not a JSON-RPC 2.0 request, notification or response",
        ),
    )


class _AnsweringMalformed:
    """The read side of the stdio transport, answering each line that is not a JSON-RPC message with
    the protocol's error (the SDK only logs and drops it, leaving a waiting sender waiting forever)."""

    def __init__(self, read_stream, write_stream) -> None:
        self.inner, self.write_stream = read_stream, write_stream

    def __getattr__(self, name):  # last_context and the rest of the stream's interface
        return getattr(self.inner, name)

    async def receive(self):
        from mcp.shared.message import SessionMessage

        while True:
            item = await self.inner.receive()
            if not isinstance(item, Exception):
                return item
            log.info("malformed JSON-RPC line on stdin: %s", type(item).__name__)
            await self.write_stream.send(SessionMessage(protocol_error(item)))

    def __aiter__(self):
        return self

    async def __anext__(self):
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.inner.aclose()


def import_sdk() -> None:
    """Import the SDK's server side now (build_server and the transports import it when called), at
    start-up, while the collector is off, with the rest of what lives as long as the server
    (cli.cmd_serve): it is most of a start's time, and of its objects (the protocol's models)."""
    import mcp.server  # noqa: F401  (with it: mcp.types, the low-level server, the stdio transport)


async def serve_stdio(table: ToolTable) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(table)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(
            _AnsweringMalformed(read_stream, write_stream),
            write_stream,
            server.create_initialization_options(),
        )
