"""The core's own tools, registered through the same hook as any pack's, as the pack "core"
(plugins._add_core): the background job tools (jobs.py) and get_budget (spending.py)."""

from __future__ import annotations

from .hookspecs import hookimpl
from .types import Tool


@hookimpl
def register_tools() -> list[Tool]:
    from . import jobs, spending

    return [*jobs.TOOLS, *spending.TOOLS]
