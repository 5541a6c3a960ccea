"""A pack whose hook yields something that is not the hook's dataclass."""

from fal_mcp import hookimpl


@hookimpl
def register_tools():
    yield {"name": "not_a_tool"}
