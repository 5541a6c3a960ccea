"""The hooks a pack implements. Each yields (or returns a list of) core dataclasses.

A pack marks its functions with `fal_mcp.hookimpl` and registers its module
under the entry-point group `fal_mcp`. Every hook is optional.
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
    """Yield the MCP tools this pack provides."""


@hookspec
def register_models() -> Iterable[Model]:
    """Yield fal endpoints offered under an alias by a tool (this pack's or another's)."""


@hookspec
def register_pricing() -> Iterable[PriceHint]:
    """Yield offline price hints for endpoints, used when fal's pricing API is unreachable."""


@hookspec
def register_recommendations() -> Iterable[Recommendation]:
    """Yield advice on which model suits which task."""


# What each hook yields, for validation and for the documentation check.
HOOK_TYPES = {
    "register_tools": Tool,
    "register_models": Model,
    "register_pricing": PriceHint,
    "register_recommendations": Recommendation,
}
