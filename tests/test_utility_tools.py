"""The utility pack against the sandbox's platform API: catalogue, advice, prices, estimates, usage, budget."""

from __future__ import annotations

import pytest

from fal_mcp.gateway import FalGateway
from fal_mcp.server import ToolTable

from .conftest import sandbox_settings

pytestmark = pytest.mark.anyio


def platform_requests(sandbox, path_part="/models"):
    return [r for r in sandbox.state.requests if r["route"] == "platform" and path_part in r["path"]]


async def call(table, name, args):
    result = await table.call(name, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content, result.content[0].text


async def test_list_models_reads_every_page_once_and_caches(tool_table, sandbox, monkeypatch):
    import fal_mcp_utility.catalog

    monkeypatch.setattr(fal_mcp_utility.catalog, "PAGE_SIZE", 20)  # the sandbox holds the packs' ~30 models
    listing, text = await call(tool_table, "list_models", {"limit": 100})
    total = len(sandbox.state.endpoints)  # every one is active
    assert total > 20
    pages = [r for r in platform_requests(sandbox) if r["path"].endswith("/models")]
    assert len(pages) == -(-total // 20)
    ids = [m["endpoint_id"] for m in listing["models"]]
    assert len(ids) == len(set(ids)) == listing["matched"] == total
    await call(tool_table, "list_models", {"category": "video"})
    assert len([r for r in platform_requests(sandbox) if r["path"].endswith("/models")]) == len(
        pages
    )  # cached


async def test_list_models_filters_and_shows_aliases_highlighted_first(tool_table):
    listing, text = await call(tool_table, "list_models", {"category": "image", "limit": 50})
    models = listing["models"]
    assert all(m["category"] == "image" for m in models)
    flags = [m["highlighted"] for m in models]
    assert flags == sorted(flags, reverse=True)  # highlighted first
    schnell = next(m for m in models if m["endpoint_id"] == "fal-ai/flux/schnell")
    assert schnell["aliases"] == ["generate_image:flux_schnell"] and schnell["source"] == "pack+fal"
    assert schnell["description"]  # read from the nested metadata
    assert "generate_image:flux_schnell" in text
    found, _ = await call(tool_table, "list_models", {"search": "upscale", "limit": 5})
    assert found["models"] and all(
        "upscal" in (m["endpoint_id"] + m["description"] + str(m["aliases"])).lower() for m in found["models"]
    )
    video, _ = await call(
        tool_table, "list_models", {"task": "animate a photo into video", "category": "video"}
    )
    assert video["models"] and all(m["category"] == "video" for m in video["models"])


async def test_list_models_falls_back_to_registered_models_offline(tool_table, sandbox):
    sandbox.state.add_fault(route="platform", status=503, times=-1)
    listing, text = await call(tool_table, "list_models", {})
    assert "could not be reached" in listing["note"] and "could not be reached" in text
    assert {m["source"] for m in listing["models"]} == {"pack"}
    assert any(m["endpoint_id"] == "fal-ai/flux/schnell" for m in listing["models"])


async def test_list_models_refuses_bad_input(tool_table):
    for args, field in [({"limit": 0}, "limit"), ({"category": "3d"}, "category"), ({"colour": 1}, "colour")]:
        result = await tool_table.call("list_models", args)
        assert result.is_error and f"{field}:" in result.content[0].text


async def test_recommend_model_ranks_with_reasons(tool_table):
    advice, text = await call(
        tool_table, "recommend_model", {"task": "photorealistic product photo", "limit": 3}
    )
    top = advice["recommendations"][0]
    assert top["model"] == "generate_image:flux_pro"
    assert any("photo" in reason for reason in top["reasons"])
    scores = [r["score"] for r in advice["recommendations"]]
    assert scores == sorted(scores, reverse=True) and len(scores) <= 3
    assert "score" in text
    audio, _ = await call(tool_table, "recommend_model", {"task": "transcribe speech", "category": "audio"})
    assert all("flux" not in r["endpoint_id"] for r in audio["recommendations"])
    none, text = await call(tool_table, "recommend_model", {"task": "zzqx"})
    assert none["recommendations"] == [] and "No model matched" in text


async def test_get_pricing_live_and_offline(tool_table, sandbox):
    pricing, text = await call(tool_table, "get_pricing", {"models": ["flux_schnell", "fal-ai/fast-sdxl"]})
    by_id = {p["endpoint_id"]: p for p in pricing["prices"]}
    assert by_id["fal-ai/fast-sdxl"]["source"] == "fal" and by_id["fal-ai/fast-sdxl"]["currency"] == "USD"
    assert by_id["fal-ai/fast-sdxl"]["unit_price"] == sandbox.state.endpoints["fal-ai/fast-sdxl"].unit_price
    assert "per" in text
    sandbox.state.add_fault(route="platform", status=500, times=-1)
    tool_table.gateway._cached.clear()
    offline, text = await call(
        tool_table, "get_pricing", {"models": ["flux_schnell", "fal-ai/unknown/model"]}
    )
    hint, unknown = offline["prices"]
    assert hint["source"] == "offline hint" and hint["unit_price"] == 0.003
    assert unknown["source"] == "unknown"
    assert "offline hint" in text and offline["note"]
    bad = await tool_table.call("get_pricing", {"models": ["nonesuch"]})
    assert bad.is_error and "nonesuch" in bad.content[0].text and "flux_schnell" in bad.content[0].text
    assert (await tool_table.call("get_pricing", {"models": []})).is_error


async def test_estimate_cost_by_calls_and_units(tool_table, sandbox):
    by_calls, text = await call(tool_table, "estimate_cost", {"model": "flux_dev", "quantity": 10})
    assert by_calls["endpoint_id"] == "fal-ai/flux/dev" and by_calls["total_cost"] > 0
    by_units, _ = await call(
        tool_table, "estimate_cost", {"model": "fal-ai/flux/dev", "quantity": 4, "basis": "units"}
    )
    body = [r["json"] for r in platform_requests(sandbox, "estimate")]
    assert body[-2]["estimate_type"] == "historical_api_price"
    assert body[-1] == {"estimate_type": "unit_price", "endpoints": {"fal-ai/flux/dev": {"unit_quantity": 4}}}
    assert by_units["total_cost"] > 0
    assert (await tool_table.call("estimate_cost", {"model": "flux_dev", "quantity": -1})).is_error


async def test_get_usage_computes_cost_from_the_summary(tool_table, sandbox):
    await call(tool_table, "generate_image", {"prompt": "x", "num_images": 2})
    await call(tool_table, "generate_image", {"prompt": "y", "model": "sdxl"})
    usage, text = await call(tool_table, "get_usage", {})
    rows = {row["endpoint_id"]: row for row in usage["usage"]}
    schnell = rows["fal-ai/flux/schnell"]  # priced per megapixel: two 1024x576 images
    assert schnell["unit"] == "megapixel" and schnell["quantity"] == pytest.approx(2 * 1024 * 576 / 1e6)
    assert schnell["cost"] == pytest.approx(schnell["quantity"] * schnell["unit_price"], abs=1e-6)
    assert usage["total_cost"] == pytest.approx(sum(row["cost"] for row in usage["usage"]))
    assert usage["total_cost"] > 0 and f"{usage['total_cost']:.4f}" in text
    only, _ = await call(tool_table, "get_usage", {"models": ["sdxl"]})
    assert [row["endpoint_id"] for row in only["usage"]] == ["fal-ai/fast-sdxl"]
    bad = await tool_table.call("get_usage", {"start": "2026-02-10", "end": "2026-02-01"})
    assert bad.is_error and "start" in bad.content[0].text
    assert (await tool_table.call("get_usage", {"start": "last week"})).is_error


async def test_get_usage_shows_the_ledger_and_says_fals_usage_needs_an_admin_key(tool_table, sandbox):
    sandbox.state.set_config(usage_forbidden=True)
    made, _ = await call(tool_table, "generate_image", {"prompt": "x", "num_images": 2})
    usage, text = await call(tool_table, "get_usage", {})
    assert "admin" in usage["note"] and "(403)" in usage["note"] and usage["usage"] == []
    [line] = usage["ledger"]  # this server's own record of the caller's spending, with any key
    assert line["endpoint_id"] == "fal-ai/flux/schnell" and line["calls"] == 1
    assert line["cost"] == pytest.approx(made["cost"]["cost"]) and usage["ledger_cost"] == line["cost"]
    assert f"{line['cost']:.4f} USD" in text
    others, _ = await call(tool_table, "get_usage", {"models": ["sdxl"]})
    assert others["ledger"] == []


async def test_budget_guard_refuses_a_call_that_would_cost_too_much(sandbox, registry):
    settings = sandbox_settings(sandbox, FAL_MCP_MAX_COST_PER_CALL="0.01")
    async with FalGateway(settings) as gateway:
        table = ToolTable(registry, settings, gateway)
        refused = await table.call("generate_image", {"prompt": "x", "model": "flux_pro"})
        assert refused.is_error
        text = refused.content[0].text
        assert "FAL_MCP_MAX_COST_PER_CALL=0.01" in text and "USD" in text and "not run" in text
        assert sandbox.state.submissions == []  # nothing was spent
        allowed = await table.call("generate_image", {"prompt": "x", "model": "flux_schnell"})
        assert not allowed.is_error
        sandbox.state.add_fault(route="platform", status=500, times=-1)
        blind = await table.call("generate_image", {"prompt": "x", "model": "flux_dev"})
        assert blind.is_error and "could not be estimated" in blind.content[0].text
