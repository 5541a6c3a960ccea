"""get_model_schema and run_model: any fal endpoint, its input checked before anything is spent."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.anyio


async def test_schema_lists_fields_compactly(tool_table):
    result = await tool_table.call("get_model_schema", {"model": "flux_schnell"})
    assert not result.is_error, result.content[0].text
    schema = result.structured_content
    fields = {f["name"]: f for f in schema["inputs"]}
    assert schema["endpoint_id"] == "fal-ai/flux/schnell"
    assert fields["prompt"]["required"] and fields["prompt"]["type"] == "string"
    assert fields["num_images"]["minimum"] == 1 and fields["num_images"]["maximum"] == 4
    assert fields["output_format"]["enum"] == ["jpeg", "png"]
    assert {f["name"] for f in schema["outputs"]} >= {"images", "seed"}
    text = result.content[0].text
    assert "- prompt (string, required)" in text and len(text) < 4000


async def test_schema_errors(tool_table, sandbox):
    from fal_mcp_sandbox import Endpoint

    sandbox.state.endpoints["fal-ai/ccsr"] = Endpoint("fal-ai/ccsr")  # listed, with no schema
    for model, expected in [
        ("fal-ai/ccsr", "publishes no schema"),
        ("fal-ai/not/real", "no endpoint"),
        ("dalle", "unknown model"),
    ]:
        result = await tool_table.call("get_model_schema", {"model": model})
        assert result.is_error and expected in result.content[0].text


async def test_run_model_refuses_bad_input_without_spending(tool_table, sandbox):
    result = await tool_table.call(
        "run_model",
        {
            "model": "fal-ai/flux/schnell",
            "input": {"promt": "x", "num_images": 9, "image_size": "huge", "num_inference_steps": "one"},
        },
    )
    assert result.is_error
    text = result.content[0].text
    for expected in (
        "prompt: required",
        "promt: not an input",
        "num_images: must be <= 4",
        "image_size:",
        "num_inference_steps: expected integer",
        "nothing was sent",
    ):
        assert expected in text, text
    assert sandbox.state.submissions == []


async def test_run_model_runs_and_finds_the_files(tool_table, sandbox):
    result = await tool_table.call(
        "run_model", {"model": "fal-ai/stable-audio", "input": {"prompt": "rain", "seconds_total": 5}}
    )
    assert not result.is_error, result.content[0].text
    out = result.structured_content
    assert sandbox.state.submissions[-1]["input"] == {"prompt": "rain", "seconds_total": 5}
    assert out["files"][0]["content_type"].startswith("audio/") and out["endpoint"] == "fal-ai/stable-audio"
    assert out["output"]["audio_file"]["url"] == out["files"][0]["url"]
    image = await tool_table.call(
        "run_model",
        {"model": "flux_dev", "input": {"prompt": "x", "image_size": {"width": 320, "height": 240}}},
    )
    assert image.structured_content["files"][0]["width"] == 320


async def test_run_model_passes_progress_and_fal_errors(tool_table, sandbox):
    messages = []

    async def report(progress, total, message):
        messages.append(message)
        if message.startswith("In queue"):
            sandbox.state.release()  # seen queued: on it goes

    sandbox.state.add_fault(outcome="ok", queue_ahead=1, hold_queue=True)  # queued until seen queued
    ok = await tool_table.call(
        "run_model", {"model": "fal-ai/flux/schnell", "input": {"prompt": "p"}}, report
    )
    # first the job's id (runner.py: in hand should the call be cut off), then fal's statuses
    assert messages[0].startswith("Recorded as job job_")
    assert not ok.is_error and messages[1].startswith("In queue") and messages[-1] == "Done"
    sandbox.state.add_fault(outcome="model_error", message="out of memory")
    failed = await tool_table.call("run_model", {"model": "fal-ai/flux/schnell", "input": {"prompt": "p"}})
    assert failed.is_error and "out of memory" in failed.content[0].text
