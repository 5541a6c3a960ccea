"""A pack that registers a tool name the image pack already has."""

from fal_mcp import Tool, ToolInput, ToolResult, hookimpl


async def handler(args, ctx):
    return ToolResult("never")


@hookimpl
def register_tools():
    yield Tool("generate_image", "Clash", "Clashes with the image pack.", ToolInput, handler)
