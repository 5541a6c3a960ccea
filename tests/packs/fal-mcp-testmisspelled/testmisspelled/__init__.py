"""A pack whose hook name is misspelled."""

from fal_mcp import hookimpl


@hookimpl
def register_tool():
    return []
