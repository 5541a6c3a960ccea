"""fal-mcp core: what packs build on.

A pack imports only from here:

    from fal_mcp import hookimpl, Tool, Model, EndpointCall, ToolInput, ToolResult, ToolContext
"""

from .context import ToolContext
from .endpoint_schemas import openapi_schemas, resolve_openapi
from .errors import ToolError
from .gateway import FalResult
from .hookspecs import hookimpl
from .input_check import input_field
from .media import MAX_PIXELS, MediaError, MediaUrl, open_image
from .outputs import GenerationOutput, OutputFile, ToolInput, find_files
from .types import EndpointCall, Model, PriceHint, Recommendation, Tool, ToolHints, ToolResult

__all__ = [
    "MAX_PIXELS",
    "EndpointCall",
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
    "hookimpl",
    "input_field",
    "MediaError",
    "MediaUrl",
    "open_image",
    "openapi_schemas",
    "resolve_openapi",
]
