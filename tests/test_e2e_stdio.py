"""End to end: `fal-mcp serve` as a subprocess, the mcp SDK client over stdio, generate_image on the sandbox."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from fal_mcp_sandbox import read_settings

from .conftest import server_env, stdio_client

pytestmark = pytest.mark.anyio

MODES = ["legacy", "2026-07-28"]


async def fetch_image(url: str) -> Image.Image:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    response.raise_for_status()
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


async def generate_and_check(client, arguments, expected_size):
    progress = []

    async def on_progress(value, total, message):
        progress.append((value, message))

    result = await client.call_tool("generate_image", arguments, progress_callback=on_progress)
    assert not result.is_error, result.content[0].text
    files = result.structured_content["files"]
    assert len(files) == arguments.get("num_images", 1)
    for file in files:
        image = await fetch_image(file["url"])
        assert image.format in ("PNG", "JPEG")
        assert image.size == expected_size
        assert (file["width"], file["height"]) == expected_size
    text = result.content[0].text
    assert files[0]["url"] in text and result.structured_content["endpoint"] in text
    return result, progress


@pytest.mark.parametrize("mode", MODES)
async def test_generate_image_over_stdio_with_progress(mode):
    async with stdio_client(["serve", "--sandbox"], server_env(), mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        schema = tools["generate_image"].input_schema
        assert schema["required"] == ["prompt"]
        assert schema["properties"]["model"]["enum"][:1] == ["flux_schnell"]
        assert "landscape_16_9" in str(schema["properties"]["image_size"])
        assert tools["generate_image"].output_schema["properties"]["files"]
        result, progress = await generate_and_check(
            client, {"prompt": "a lighthouse at dawn", "image_size": "portrait_3_4", "seed": 7}, (768, 1024)
        )
        assert result.structured_content["seed"] == 7
        assert result.structured_content["endpoint"] == "fal-ai/flux/schnell"
        values = [value for value, _ in progress]
        assert values == sorted(values) and len(set(values)) == len(values)
        messages = [message for _, message in progress]
        assert any(message.startswith("Running") for message in messages), messages
        assert messages[-1] == "Done"


async def test_every_alias_and_a_dropped_parameter():
    async with stdio_client(["serve", "--sandbox"], server_env()) as client:
        for model in ["flux_schnell", "flux_dev", "flux_pro", "sdxl", "stable_diffusion"]:
            result, _ = await generate_and_check(
                client,
                {"prompt": "a red cube", "model": model, "negative_prompt": "blur", "num_images": 2},
                (1024, 576),
            )
            notes = result.structured_content["notes"]
            if model in ("sdxl", "stable_diffusion"):
                assert notes == []
            else:
                assert "negative_prompt was not sent" in notes[0]
                assert "negative_prompt was not sent" in result.content[0].text


async def test_invalid_arguments_name_the_field_and_the_server_keeps_serving():
    async with stdio_client(["serve", "--sandbox"], server_env()) as client:
        cases = {
            "num_images": {"prompt": "x", "num_images": 9},
            "prompt": {},
            "image_size": {"prompt": "x", "image_size": "huge"},
            "model": {"prompt": "x", "model": "dalle"},
            "colour": {"prompt": "x", "colour": "red"},
        }
        for field, arguments in cases.items():
            result = await client.call_tool("generate_image", arguments)
            assert result.is_error, field
            assert f"{field}:" in result.content[0].text, result.content[0].text
        unknown = await client.call_tool("no_such_tool", {})
        assert unknown.is_error and "generate_image" in unknown.content[0].text
        await client.send_ping()
        ok, _ = await generate_and_check(client, {"prompt": "still here"}, (1024, 576))


async def test_server_pointed_at_a_separate_sandbox(thread_sandbox):
    env = server_env(dict(thread_sandbox.env()))
    async with stdio_client(["serve"], env) as client:
        result, _ = await generate_and_check(
            client, {"prompt": "via urls", "image_size": "square"}, (1024, 1024)
        )
    request_id = result.structured_content["request_id"]
    assert any(s["request_id"] == request_id for s in thread_sandbox.state.submissions)


async def test_no_key_says_how_to_set_one(tmp_path):
    env = server_env({"FAL_HOME_DIR": str(tmp_path), "FAL_MCP_QUEUE_URL": "http://127.0.0.1:9/queue"})
    async with stdio_client(["serve"], env) as client:
        result = await client.call_tool("generate_image", {"prompt": "x"})
    assert result.is_error
    assert "FAL_KEY" in result.content[0].text and "--sandbox" in result.content[0].text


def test_sandbox_command_prints_settings_and_serves():
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "fal_mcp.cli", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
    )
    try:
        settings = read_settings(process.stdout)
        assert settings["FAL_MCP_QUEUE_URL"].startswith("http://127.0.0.1:")
        base = settings["FAL_MCP_QUEUE_URL"].removesuffix("/queue")
        assert httpx.get(f"{base}/_sandbox/health", timeout=10).status_code == 200
        submitted = httpx.post(
            f"{settings['FAL_MCP_QUEUE_URL']}/fal-ai/flux/schnell",
            json={"prompt": "x"},
            headers={"Authorization": f"Key {settings['FAL_KEY']}"},
            timeout=10,
        )
        assert submitted.status_code == 200 and submitted.json()["request_id"]
    finally:
        process.terminate()
        process.wait(timeout=10)
