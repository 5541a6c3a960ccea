"""Each hook, directly: what a pack yields from it reaches the registry, credited to that pack."""

from __future__ import annotations

import pytest

from fal_mcp.config import Settings
from fal_mcp.plugins import load_plugins


@pytest.fixture(scope="module")
def registry(test_packs_dir):
    # tests/packs/fal-mcp-testgood implements all four hooks, one item each.
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(test_packs_dir))
        return load_plugins(Settings.from_env({"FAL_MCP_PLUGINS": "image,testgood"}))


def test_register_tools(registry):
    tool = registry.tools["echo_test"]
    assert registry.tool_packs["echo_test"].name == "testgood"
    assert (tool.category, tool.hints.read_only) == ("utility", True)


def test_register_models(registry):
    model = registry.models[("generate_image", "testgood_model")]
    assert registry.model_packs[("generate_image", "testgood_model")].name == "testgood"
    assert model.endpoint_id == "fal-ai/flux/dev"
    assert "generate_image:testgood_model" in next(p for p in registry.packs if p.name == "testgood").models


def test_register_pricing(registry):
    hints = [hint for hint in registry.prices if hint.endpoint_id == "fal-ai/testgood"]
    assert [(hint.unit_price, hint.unit, hint.currency) for hint in hints] == [(0.5, "image", "USD")]


def test_register_recommendations(registry):
    advice = [item for item in registry.recommendations if item.model == "testgood_model"]
    assert [(item.keywords, item.category) for item in advice] == [(("testing",), "image")]
