"""fal-mcp core: what packs build on.

A pack imports only from here:

    from fal_mcp import Tool, Model, EndpointInput, generation_output, pack_hooks, ToolInput, ToolResult
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .building import EndpointInput, generation_output, pack_hooks
    from .context import ToolContext
    from .endpoint_schemas import openapi_schemas, resolve_openapi
    from .errors import ArgumentError, ToolError
    from .gateway import FalResult
    from .hookspecs import hookimpl
    from .input_check import input_field
    from .media import MAX_PIXELS, LocalMediaUrl, MediaError, MediaUrl, open_image
    from .outputs import GenerationOutput, OutputFile, ToolInput, find_files
    from .types import EndpointCall, Model, PriceHint, Recommendation, Tool, ToolHints, ToolResult

# Each name is imported from its module when first asked for (PEP 562): `import fal_mcp.cli`, all that
# `fal-mcp` needs before its command runs, then costs no pydantic and no core module it does not use
# (`fal-mcp serve` imports the rest with the collector off: cli.cmd_serve).
_MODULES = {
    ".building": ("EndpointInput", "generation_output", "pack_hooks"),
    ".context": ("ToolContext",),
    ".endpoint_schemas": ("openapi_schemas", "resolve_openapi"),
    ".errors": ("ArgumentError", "ToolError"),
    ".gateway": ("FalResult",),
    ".hookspecs": ("hookimpl",),
    ".input_check": ("input_field",),
    ".media": ("MAX_PIXELS", "LocalMediaUrl", "MediaError", "MediaUrl", "open_image"),
    ".outputs": ("GenerationOutput", "OutputFile", "ToolInput", "find_files"),
    ".types": ("EndpointCall", "Model", "PriceHint", "Recommendation", "Tool", "ToolHints", "ToolResult"),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "ArgumentError",
    "MAX_PIXELS",
    "EndpointCall",
    "EndpointInput",
    "FalResult",
    "GenerationOutput",
    "Model",
    "OutputFile",
    "PriceHint",
    "Recommendation",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolHints",
    "ToolInput",
    "ToolResult",
    "find_files",
    "generation_output",
    "hookimpl",
    "input_field",
    "LocalMediaUrl",
    "MediaError",
    "MediaUrl",
    "open_image",
    "pack_hooks",
    "openapi_schemas",
    "resolve_openapi",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # asked for once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
