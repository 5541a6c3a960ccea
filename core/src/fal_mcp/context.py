"""What a tool handler gets besides its arguments: the way to fal, progress, models."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings
    from .gateway import FalGateway, FalResult
    from .plugins import Registry
    from .types import EndpointCall, Model, Tool

ReportProgress = Callable[[float, float | None, str | None], Awaitable[None]]


class ToolContext:
    """Per call. Packs use this, never the MCP server or fal_client directly."""

    def __init__(self, *, tool: Tool, gateway: FalGateway, registry: Registry, settings: Settings,
                 report_progress: ReportProgress | None = None) -> None:
        self.tool = tool
        self.gateway = gateway
        self.registry = registry
        self.settings = settings
        self._report = report_progress
        self._steps = 0

    async def progress(self, message: str) -> None:
        """Tell the client what is happening. Progress values only grow, as MCP requires."""
        self._steps += 1
        if self._report is not None:
            await self._report(self._steps, None, message)

    def model(self, name: str | None = None) -> Model:
        """The registered model of this tool called `name` (alias or endpoint id), or its default."""
        return self.registry.resolve_model(self.tool.name, name)

    async def run(self, endpoint_id: str, arguments: dict[str, Any]) -> FalResult:
        """Run a fal endpoint through the queue, with progress, this tool's timeout and cancel-on-abandon."""
        result = await self.gateway.run(endpoint_id, arguments, progress=self.progress,
                                        timeout=self.settings.timeout_for(self.tool.category))
        await self.progress("Done")
        return result

    async def run_model(self, model: Model, arguments: Any) -> tuple[FalResult, EndpointCall]:
        """Translate the tool's arguments for `model` and run it."""
        call = model.build_input(arguments)
        return await self.run(model.endpoint_id, call.arguments), call

    async def upload(self, data: bytes, content_type: str, file_name: str | None = None) -> str:
        return await self.gateway.upload(data, content_type, file_name)
