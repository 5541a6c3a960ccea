"""The hooks a pack implements. Each yields (or returns a list of) core dataclasses.

A pack marks its functions with `fal_mcp.hookimpl` and registers its module
under the entry-point group `fal_mcp`. Every hook is optional. A pack made of
tool modules (each with TOOL, MODELS, PRICES, RECOMMENDATIONS) gets all four
from `fal_mcp.pack_hooks`:

    register_tools, register_models, register_pricing, register_recommendations = pack_hooks(
        __name__, "generate_image", "edit_image")

Each example below runs as it stands (tests/test_hooks_documented.py runs them).
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from .types import Model, PriceHint, Recommendation, Tool

PROJECT = "fal_mcp"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_tools() -> Iterable[Tool]:
    """Yield the MCP tools this pack provides.

    >>> from fal_mcp import Tool, ToolInput, ToolResult, hookimpl
    >>> class EchoInput(ToolInput):
    ...     text: str
    >>> async def echo(args, ctx):
    ...     return ToolResult(args.text)
    >>> @hookimpl
    ... def register_tools():
    ...     yield Tool("echo", "Echo", "Echo the text back.", EchoInput, echo, category="utility")
    >>> [tool.name for tool in register_tools()]
    ['echo']
    """
    return ()  # a specification only: pluggy never calls it


@hookspec
def register_models() -> Iterable[Model]:
    """Yield fal endpoints offered under an alias by a tool (this pack's or another's).

    >>> from fal_mcp import EndpointInput, Model, hookimpl
    >>> def flux_dev_input(args):
    ...     req = EndpointInput(args, "flux_dev")
    ...     req.copy("prompt", "seed")
    ...     return req.call()
    >>> @hookimpl
    ... def register_models():
    ...     yield Model("flux_dev", "fal-ai/flux/dev", "generate_image", "FLUX.1 [dev]: higher quality",
    ...                 flux_dev_input)
    >>> [model.alias for model in register_models()]
    ['flux_dev']
    """
    return ()  # a specification only: pluggy never calls it


@hookspec
def register_pricing() -> Iterable[PriceHint]:
    """Yield offline price hints for endpoints, used when fal's pricing API is unreachable.

    >>> from fal_mcp import PriceHint, hookimpl
    >>> @hookimpl
    ... def register_pricing():
    ...     yield PriceHint("fal-ai/flux/dev", 0.025, "megapixel")
    >>> [hint.unit for hint in register_pricing()]
    ['megapixel']
    """
    return ()  # a specification only: pluggy never calls it


@hookspec
def register_recommendations() -> Iterable[Recommendation]:
    """Yield advice on which model suits which task.

    >>> from fal_mcp import Recommendation, hookimpl
    >>> @hookimpl
    ... def register_recommendations():
    ...     yield Recommendation("flux_dev", ("photo", "detailed"), "Higher quality than schnell", "image")
    >>> [advice.model for advice in register_recommendations()]
    ['flux_dev']
    """
    return ()  # a specification only: pluggy never calls it


# What each hook yields, for validation and for the documentation check.
HOOK_TYPES = {
    "register_tools": Tool,
    "register_models": Model,
    "register_pricing": PriceHint,
    "register_recommendations": Recommendation,
}
