"""Installed, the pack is found by fal-mcp, lists its tools and models, and can be switched off."""

from __future__ import annotations

import json

import pytest

from fal_mcp_sandbox.testing import run_cli


def cli_rows(command: str, **env: str) -> dict[str, dict]:
    """`fal-mcp <command> --json`, as rows by name."""
    done = run_cli(command, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


def test_listed_by_fal_mcp_plugins():
    pack = cli_rows("plugins")["speech"]
    assert pack["status"] == "active", pack["error"]
    assert (pack["distribution"], pack["version"]) == ("fal-mcp-speech", "0.1.0")
    assert (pack["tools"], pack["models"]) == (2, 4)


def test_listed_by_fal_mcp_tools():
    tools = cli_rows("tools")
    assert tools["text_to_speech"]["distribution"] == "fal-mcp-speech"
    assert tools["text_to_speech"]["models"] == ["kokoro"]
    assert tools["transcribe_audio"]["pack"] == "speech"
    assert tools["transcribe_audio"]["models"] == ["wizper", "whisper"]


def test_model_joins_generate_image(fal_registry):
    if "generate_image" not in fal_registry.tools:
        pytest.skip("generate_image comes with fal-mcp-image")
    image = cli_rows("tools")["generate_image"]
    assert image["distribution"] == "fal-mcp-image"  # the tool stays the image pack's
    assert "flux_pro_ultra" in image["models"]


def test_every_model_carries_fal_schema_of_its_endpoint(fal_registry):
    """The installed pack ships schemas/ (package data): the core checks each model's input against it."""
    models = [m for m in fal_registry.models.values() if m.package == "fal_mcp_speech"]
    assert {m.alias for m in models} == {"kokoro", "wizper", "whisper", "flux_pro_ultra"}
    for model in models:
        document = model.schema()
        assert document and document["endpoint_id"] == model.endpoint_id and document["date"]
        assert model.input_schema()["properties"] and model.output_schema()["properties"]


def test_disable_plugins_removes_it():
    env = {"FAL_MCP_DISABLE_PLUGINS": "speech"}
    pack = cli_rows("plugins", **env)["speech"]
    assert pack["status"] == "disabled" and "FAL_MCP_DISABLE_PLUGINS" in pack["error"]
    tools = cli_rows("tools", **env)
    assert "text_to_speech" not in tools and "transcribe_audio" not in tools
    assert "flux_pro_ultra" not in tools.get("generate_image", {}).get("models", [])


def test_registers_prices_and_advice(fal_registry):
    prices = {hint.endpoint_id: hint for hint in fal_registry.prices}
    assert prices["fal-ai/kokoro/american-english"].unit == "1000 characters"
    assert "fal-ai/whisper" not in prices  # gone from fal: the whisper alias runs fal-ai/wizper
    assert prices["fal-ai/wizper"].unit_price == 0.0005
    advice = {item.model for item in fal_registry.recommendations}
    assert {"kokoro", "wizper", "whisper", "flux_pro_ultra"} <= advice
