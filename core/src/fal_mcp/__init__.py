"""fal-mcp core: what packs build on.

A pack imports only from here:

    from fal_mcp import Tool, Model, EndpointInput, generation_output, pack_hooks, ToolInput, ToolResult
"""

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
