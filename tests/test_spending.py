"""Spending only with consent (spending.py): the confirmation asked through MCP elicitation in both
protocol eras (the SDK's client, and raw JSON-RPC), the one-time token for clients that cannot be
asked, receipts against the sandbox's prices, budgets charged atomically in the job store, and
nothing submitted to fal on any refused path."""

from __future__ import annotations

import pytest

from .conftest import tool_table_for

pytestmark = pytest.mark.anyio
ERAS = ["legacy", "2026-07-28"]
# flux_pro: 0.04 USD per megapixel; "square" is 1024x1024 (1.05 MP) for it: about 0.042 USD.
PRO = {"prompt": "a lighthouse at dusk", "model": "flux_pro", "image_size": "square"}
PRO_COST = 0.04 * 1024 * 1024 / 1_000_000
CHEAP = {"prompt": "a lighthouse at dusk", "model": "flux_schnell", "image_size": "square"}


def answering(action: str, confirm: bool = True, asked: list | None = None):
    """An SDK elicitation callback that answers every question with `action`, noting each question."""
    from mcp import types

    async def callback(context, params):
        if asked is not None:
            asked.append(params)
        content = {"confirm": confirm} if action == "accept" else None
        return types.ElicitResult(action=action, content=content)

    return callback


def sdk_client(table, mode: str, callback=None):
    from mcp import Client

    from fal_mcp.server import build_server

    return Client(build_server(table), mode=mode, elicitation_callback=callback)


def text_of(result) -> str:
    return result.content[0].text


@pytest.mark.parametrize("mode", ERAS)
async def test_the_user_is_asked_and_an_accepted_call_runs(sandbox, registry, mode):
    asked: list = []
    async with tool_table_for(sandbox, registry, FAL_MCP_CONFIRM_ABOVE=0.01) as table:
        async with sdk_client(table, mode, answering("accept", asked=asked)) as client:
            result = await client.call_tool("generate_image", PRO)
    assert not result.is_error, text_of(result)
    assert len(asked) == 1
    message = asked[0].message
    assert "fal-ai/flux-pro/v1.1" in message and f"{PRO_COST:.4f}" in message and "lighthouse" in message
    assert asked[0].requested_schema["properties"]["confirm"]["type"] == "boolean"
    assert len(sandbox.state.submissions) == 1


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize(
    ("action", "confirm", "word"),
    [("decline", True, "declined"), ("cancel", True, "cancelled"), ("accept", False, "declined")],
    ids=["decline", "cancel", "accept-unticked"],
)
async def test_a_declined_or_cancelled_call_submits_nothing(sandbox, registry, mode, action, confirm, word):
    async with tool_table_for(sandbox, registry, FAL_MCP_CONFIRM_ABOVE=0.01) as table:
        async with sdk_client(table, mode, answering(action, confirm)) as client:
            result = await client.call_tool("generate_image", PRO)
            assert result.is_error and f"the user {word}" in text_of(result), text_of(result)
            assert "Nothing was submitted" in text_of(result)
            cheap = await client.call_tool("generate_image", CHEAP)  # under the threshold: not asked
            assert not cheap.is_error, text_of(cheap)
    assert [s["endpoint_id"] for s in sandbox.state.submissions] == ["fal-ai/flux/schnell"]


@pytest.mark.parametrize("mode", ERAS)
async def test_submit_job_asks_before_it_submits(sandbox, registry, mode):
    async with tool_table_for(sandbox, registry, FAL_MCP_CONFIRM_ABOVE=0.01) as table:
        async with sdk_client(table, mode, answering("decline")) as client:
            refused = await client.call_tool("submit_job", {"tool": "generate_image", "arguments": PRO})
            assert refused.is_error and "declined" in text_of(refused), text_of(refused)
        assert sandbox.state.submissions == []
        async with sdk_client(table, mode, answering("accept")) as client:
            started = await client.call_tool("submit_job", {"tool": "generate_image", "arguments": PRO})
            assert not started.is_error, text_of(started)
            done = await client.call_tool(
                "check_job", {"job_id": started.structured_content["job_id"], "wait_seconds": 60}
            )
            assert done.structured_content["cost"]["cost"] == pytest.approx(PRO_COST)
    assert len(sandbox.state.submissions) == 1


async def test_a_client_without_elicitation_gets_a_one_time_token(sandbox, registry):
    async with tool_table_for(sandbox, registry, FAL_MCP_CONFIRM_ABOVE=0.01) as table:
        schema = next(t for t in table.listing() if t.name == "generate_image").input_schema
        assert "confirm" in schema["properties"]
        refused = await table.call("generate_image", PRO)
        text = text_of(refused)
        assert refused.is_error and "FAL_MCP_CONFIRM_ABOVE=0.01" in text and f"{PRO_COST:.4f}" in text
        token = text.split('"confirm": "')[1].split('"')[0]
        assert sandbox.state.submissions == []
        ran = await table.call("generate_image", {**PRO, "confirm": token})
        assert not ran.is_error, text_of(ran)
        assert len(sandbox.state.submissions) == 1
        again = await table.call("generate_image", {**PRO, "confirm": token})  # used already
        assert again.is_error and "not valid for this call" in text_of(again)
    assert len(sandbox.state.submissions) == 1


def token_from(result) -> str:
    return text_of(result).split('"confirm": "')[1].split('"')[0]


async def test_a_token_is_bound_to_its_call_owner_and_time(sandbox, registry):
    from fal_mcp.owners import Principal

    alice, mallory = Principal("token:alice"), Principal("token:mallory")
    async with tool_table_for(sandbox, registry, FAL_MCP_CONFIRM_ABOVE=0.01) as table:
        token = token_from(await table.call("generate_image", PRO, owner=alice))
        other_prompt = {**PRO, "prompt": "a castle", "confirm": token}
        assert "not valid" in text_of(await table.call("generate_image", other_prompt, owner=alice))
        other_tool = {**PRO, "confirm": token, "image_url": "https://example.com/a.png"}
        assert (await table.call("generate_image_from_image", other_tool, owner=alice)).is_error
        stolen = await table.call("generate_image", {**PRO, "confirm": token}, owner=mallory)
        assert "not valid" in text_of(stolen)
        assert not (await table.call("generate_image", {**PRO, "confirm": token}, owner=alice)).is_error
    async with tool_table_for(
        sandbox, registry, FAL_MCP_CONFIRM_ABOVE=0.01, FAL_MCP_CONFIRM_TTL=0
    ) as table:  # every token has expired when it is shown
        token = token_from(await table.call("generate_image", PRO, owner=alice))
        expired = await table.call("generate_image", {**PRO, "confirm": token}, owner=alice)
        assert "not valid" in text_of(expired) and "expired" in text_of(expired)
    assert len(sandbox.state.submissions) == 1
