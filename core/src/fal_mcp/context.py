"""What a tool handler gets besides its arguments: the way to fal, progress, models."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .errors import ToolError
from .owners import STDIO, Principal

if TYPE_CHECKING:
    from PIL.Image import Image
    from pydantic import BaseModel

    from .config import Settings
    from .fal_keys import FalKey
    from .gateway import FalGateway, FalResult
    from .media import Fetched
    from .outputs import OutputFile
    from .plugins import Registry
    from .runner import Call, Replay
    from .server import ToolTable
    from .spending import Spend
    from .types import EndpointCall, Model, Tool

ReportProgress = Callable[[float, float | None, str | None], Awaitable[None]]


class ToolContext:
    """Per call. Packs use this, never the MCP server or fal_client directly."""

    def __init__(
        self,
        *,
        tool: Tool,
        gateway: FalGateway,
        registry: Registry,
        settings: Settings,
        report_progress: ReportProgress | None = None,
        client_roots: Callable[[], Awaitable[list[str] | None]] | None = None,
        table: ToolTable | None = None,
        job: Replay | None = None,
        owner: Principal | None = None,
        fal_key: FalKey | None = None,
    ) -> None:
        self.tool = tool
        self.gateway = gateway
        self.registry = registry
        self.settings = settings
        self.report_progress = report_progress  # the request's progress callback (the runner forwards to it)
        self.client_roots = client_roots  # async () -> the client's MCP roots
        self._allowed_dirs: list[str] | None = None
        self._steps = 0
        self.table = table  # the ToolTable serving this call (used by the core's job tools)
        self.job = job  # the fal output a finished job already has (a job finished again), else None
        self.call: Call | None = None  # the runner's Call this context belongs to, once started
        self.arguments: BaseModel | None = None  # the validated arguments, media inputs resolved
        self.owner = owner or STDIO  # who the call belongs to: its jobs and outputs are theirs alone
        # Whose fal key pays for the call's fal requests (fal_keys.py; None: the server's). Held in memory
        # only, for as long as the call (or the job it became) runs here.
        self.fal_key = fal_key
        # The arguments as the client sent them (a confirmation token is bound to them) and its token.
        self.client_arguments: dict[str, Any] = {}
        self.confirm_token: str | None = None
        # Each fal request of this call that fal answered: what was approved, sent and returned, for the
        # receipt made when the call ends (spending.settle_call).
        self.spent: list[tuple[Spend, dict[str, Any], Any]] = []

    async def progress(self, message: str) -> None:
        """Tell the client what is happening (and the job store). Progress values only grow, as MCP requires."""
        if self.call is not None:
            await self.call.progress(message)
            return
        self._steps += 1
        if self.report_progress is not None:
            await self.report_progress(self._steps, None, message)

    def model(self, name: str | None = None) -> Model:
        """The registered model of this tool called `name` (alias or endpoint id), or its default."""
        return self.registry.resolve_model(self.tool.name, name)

    async def run(self, endpoint_id: str, arguments: dict[str, Any]) -> FalResult:
        """Run a fal endpoint through the queue, with progress and this tool's timeout. The job is
        recorded in the job store once fal accepts it; it is cancelled only if the client cancels."""
        from .spending import Spend

        if self.job is not None:  # finishing a job whose fal output is in hand already
            replayed = self.job.take(endpoint_id)
            if replayed is not None:
                spend = self.job.spend or Spend(endpoint_id, self.owner.key, None)
                self.spent.append((spend, arguments, replayed.data))
                return replayed
        call = self.call
        # Admission before payment: a place among the calls in flight, so that what fal accepts can be
        # followed to its end (admission.py); refused with "busy, retry" before anything is sent. A call
        # holds its place until it ends (runner.py), through all its fal requests.
        admission = getattr(getattr(self.table, "runner", None), "admission", None)
        held_here = False
        if admission is not None and not (call is not None and call.admitted):
            admission.admit()
            if call is not None:
                call.admitted = True
            else:
                held_here = True
        try:
            return await self._run_admitted(endpoint_id, arguments, call)
        finally:
            if held_here and admission is not None:
                admission.release()

    async def _run_admitted(
        self, endpoint_id: str, arguments: dict[str, Any], call: Call | None
    ) -> FalResult:
        import anyio

        from .fal_keys import KeyRefused
        from .gateway import NotSubmitted
        from .spending import approve, refund

        spend = await approve(self, endpoint_id, arguments)  # limits, consent, budget: before submitting
        submitted = False

        async def on_submit(request_id: str) -> None:
            nonlocal submitted
            submitted = True
            if call is not None:
                await call.on_submit(endpoint_id, request_id, spend)

        try:
            result = await self.gateway.run(
                endpoint_id,
                arguments,
                progress=self.progress,
                timeout=self.settings.timeout_for(self.tool.category),
                on_submit=on_submit,
                cancel_when_cancelled=(lambda: call.cancel_fal) if call is not None else None,
                key=self.fal_key,
            )
        except (
            NotSubmitted,
            KeyRefused,
        ):  # fal never took it; any other failure may have left a paid job running
            if not submitted and spend.charged and self.table is not None:
                with anyio.CancelScope(shield=True):
                    await refund(self.table.store, spend)
            raise
        self.spent.append((spend, arguments, result.data))
        return result

    async def run_model(self, model: Model, arguments: Any) -> tuple[FalResult, EndpointCall]:
        """Translate the tool's arguments for `model`, check the result against fal's schema of the
        endpoint (ToolError naming the argument and the model's limit: nothing fal would refuse or
        ignore is sent), and run it."""
        from .input_check import check_input

        call = model.build_input(arguments)
        check_input(model, call.arguments, arguments, self.tool.name)
        return await self.run(model.endpoint_id, call.arguments), call

    async def allowed_dirs(self) -> list[str]:
        """Where local files may be read: what the operator allows (FAL_MCP_ALLOWED_DIRS, else a working
        directory that is not too broad), narrowed to the client's MCP roots if it declares any. Asked
        of the client once per call, and only when a local path is used."""
        from .media import narrow, operator_dirs

        if self._allowed_dirs is None:
            roots = await self.client_roots() if self.client_roots else None
            self._allowed_dirs = narrow(roots, operator_dirs(self.settings))
        return self._allowed_dirs

    async def media_url(self, value: str) -> str:
        """An https URL as is; a data: URI or an allowed local file uploaded to fal storage (once per
        content). MediaError says why a value is refused."""
        from .media import check_url_syntax, is_remote, to_fal_url

        if is_remote(value):
            check_url_syntax(value)  # passed on to fal as is: it must at least be well formed
            return value
        dirs = [] if value.startswith("data:") else await self.allowed_dirs()
        return await to_fal_url(value, gateway=self.gateway, allowed_dirs=dirs, key=self.fal_key)

    async def read_media(self, value: str, *, field: str | None = None) -> Fetched:
        """The file of a `LocalMediaUrl` field, for work done here: read, never uploaded. A local path is
        read exactly as for an upload (the allowed directories narrowed to the client's roots, opened
        without following links, FAL_MCP_MAX_UPLOAD_MB), a data: URI decoded, an https URL downloaded
        as `fetch` does. A refusal is a ToolError naming what the user gave (their path, the data: URI,
        the URL), an ArgumentError naming `field` too when it is given."""
        from .errors import ArgumentError
        from .media import MediaError, is_remote, read_input

        try:
            if is_remote(value):
                return await self.fetch(value)
            dirs = [] if value.startswith("data:") else await self.allowed_dirs()
            return await read_input(value, settings=self.settings, allowed_dirs=dirs)
        except MediaError as exc:
            message = str(exc)
        except ToolError as exc:  # fetch's, naming the URL
            if field is None:
                raise
            message = str(exc)
        raise ArgumentError(field, message) if field else ToolError(message, kind="refused")

    async def read_image(
        self, value: str, *, field: str | None = None, max_pixels: int | None = None
    ) -> Image:
        """The image of a `LocalMediaUrl` field (`read_media`), decoded (PIL) off the event loop, refusing
        decompression bombs and formats outside media.IMAGE_FORMATS. Errors as `read_media`'s."""
        import anyio

        from . import memory
        from .errors import ArgumentError, shown
        from .media import MAX_PIXELS, MediaError, is_remote, open_image

        if is_remote(value):
            where = f"at {value[:200]}"
        else:
            where = "in the data: URI" if value.startswith("data:") else shown(value, 200)
        fetched = await self.read_media(value, field=field)
        try:
            image = await anyio.to_thread.run_sync(open_image, fetched.data, max_pixels or MAX_PIXELS)
        except MediaError as exc:
            message = f"could not read the image {where}: {exc}"
        else:
            memory.large_work_done(image.width * image.height * len(image.getbands()))
            return image
        raise ArgumentError(field, message) if field else ToolError(message, kind="refused")

    async def ledger(self, first_day: str, last_day: str) -> list[dict[str, Any]]:
        """This server's own record of the caller's spending, per day and endpoint (USD), between the
        two days (YYYY-MM-DD, UTC), inclusive."""
        from .spending import MICRO

        if self.table is None or not self.owner.listable:
            return []
        rows = await self.table.store.ledger(self.owner.key, first_day, last_day)
        return [
            {
                "day": row.day,
                "endpoint_id": row.endpoint_id,
                "calls": row.calls,
                "estimated": row.estimated / MICRO,
                "cost": row.charged / MICRO,
            }
            for row in rows
        ]

    async def platform(self, method: str, path: str, **kwargs: Any) -> Any:
        """fal's platform API (models, pricing, usage), through the gateway, with the call's fal key."""
        return await self.gateway.platform(method, path, key=self.fal_key, **kwargs)

    async def upload(self, data: bytes, content_type: str, file_name: str | None = None) -> str:
        """Store bytes on fal storage (with the call's fal key); returns the URL."""
        return await self.gateway.upload(data, content_type, file_name, key=self.fal_key)

    def preview_of(
        self, image: Image, data: bytes | None = None, mime: str | None = None
    ) -> tuple[bytes, str] | None:
        """Blocking (call it in the worker thread that made `image`): the inline preview of an image made
        here, from the image in memory, never decoding its encoded file (`data`, of type `mime`: passed
        through when small enough, as for any output) or downloading it again; None when inline previews
        are off or it cannot be made. Give it to the output file with `with_preview`."""
        from .delivery import preview_of
        from .media import MediaError

        if not self.settings.inline_previews:
            return None
        try:
            return preview_of(image, data, mime)
        except MediaError:
            return None  # delivered as any output then: fetched, and a note if that fails too

    @staticmethod
    def with_preview(file: OutputFile, preview: tuple[bytes, str] | None) -> OutputFile:
        """`file` (an output made here), carrying its preview (`preview_of`): the core shows that one
        instead of downloading and decoding the file again."""
        file._preview = preview
        return file

    async def fetch(self, url: str, max_bytes: int | None = None) -> Fetched:
        """Download a file for local work, with the core's limits and address checks.
        ToolError on failure, naming the URL."""
        from .media import MAX_DOWNLOAD_BYTES, MediaError, fetch

        try:
            return await fetch(
                url,
                trusted_urls=list(self.settings.urls.values()),
                max_bytes=max_bytes or MAX_DOWNLOAD_BYTES,
                http=self.gateway.downloads(),
            )
        except MediaError as exc:
            raise ToolError(f"could not fetch {url[:200]}: {exc}") from None

    async def fetch_image(self, url: str, max_pixels: int | None = None) -> Image:
        """Download and decode an image (PIL), off the event loop, refusing decompression bombs."""
        import anyio

        from .media import MAX_PIXELS, MediaError, open_image

        fetched = await self.fetch(url)
        try:
            return await anyio.to_thread.run_sync(open_image, fetched.data, max_pixels or MAX_PIXELS)
        except MediaError as exc:
            raise ToolError(f"could not read the image at {url[:200]}: {exc}") from None
