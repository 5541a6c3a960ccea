"""Failures carry what happened as data (ToolError.kind, .status), never to be parsed back from text;
the core's job tools come in through the same hooks as any pack."""

from __future__ import annotations

import anyio
import pytest

from fal_mcp.config import Settings
from fal_mcp.errors import ArgumentError, ToolError
from fal_mcp.plugins import load_plugins

from .conftest import tool_table_for

pytestmark = pytest.mark.anyio

FLUX = "fal-ai/flux/schnell"
PROMPT = {"prompt": "a cat", "image_size": "square"}


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_an_http_failure_keeps_fals_status(sandbox, gateway, status):
    sandbox.state.add_fault(route="submit", status=status)
    with pytest.raises(ToolError) as caught:
        await gateway.run(FLUX, PROMPT, timeout=30)
    assert (caught.value.kind, caught.value.status) == ("failed", status)


async def test_a_model_failure_is_failed_without_a_status(sandbox, gateway):
    sandbox.state.add_fault(outcome="model_error", message="CUDA out of memory")
    with pytest.raises(ToolError) as caught:
        await gateway.run(FLUX, PROMPT, timeout=30)
    assert (caught.value.kind, caught.value.status) == ("failed", None)


async def test_a_timeout_is_a_timeout(sandbox, gateway):
    sandbox.state.add_fault(outcome="never_finish")
    with anyio.fail_after(60), pytest.raises(ToolError) as caught:  # a hang guard, not a timing assertion
        await gateway.run(FLUX, PROMPT, timeout=1)
    assert caught.value.kind == "timeout"


async def test_a_call_over_budget_is_refused(sandbox, registry):
    async with tool_table_for(sandbox, registry, FAL_MCP_MAX_COST_PER_CALL=0.0000001) as table:
        call = await table.start("generate_image", {"prompt": "a cat"})
        await call.finished.wait()
    assert isinstance(call.error, ToolError) and "was not run" in str(call.error)
    assert call.error.kind == "refused" and sandbox.state.submissions == []


async def test_bad_arguments_are_argument_errors_naming_the_field_and_tool(tool_table):
    tool = tool_table.registry.tools["generate_image"]
    with pytest.raises(ArgumentError) as caught:
        await tool_table.validate(tool, {"prompt": "a cat", "model": "no_such_model"})
    assert (caught.value.kind, caught.value.field, caught.value.tool) == (
        "refused",
        "model",
        "generate_image",
    )
    result = tool_table.failure("submit_job", caught.value)  # named for its own tool, whoever ran it
    assert result.content[0].text.startswith("Invalid arguments for generate_image: model: unknown model")


def test_the_job_tools_are_the_core_pack_registered_through_the_hooks():
    registry = load_plugins(Settings.from_env({}))
    core = next(pack for pack in registry.packs if pack.name == "core")
    assert core.status == "active" and sorted(core.tools) == [
        "cancel_job",
        "check_job",
        "get_budget",
        "list_jobs",
        "submit_job",
    ]
    assert all(registry.tool_packs[name] is core for name in core.tools)
    hidden = load_plugins(Settings.from_env({"FAL_MCP_DISABLE_PLUGINS": "core"}))
    assert not set(core.tools) & set(hidden.tools)
    assert next(pack for pack in hidden.packs if pack.name == "core").status == "disabled"
