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


# -- receipts --------------------------------------------------------------------------------------------

IMAGE, MASK, VIDEO = "<image>", "<mask>", "<video>"
# One call of every generation tool, with the fal endpoint it reaches (None: local work, nothing spent).
GENERATIONS = {
    "generate_image": (
        {"prompt": "a fox", "model": "flux_dev", "image_size": "landscape_4_3"},
        "fal-ai/flux/dev",
    ),
    "generate_image_sd": (
        {"prompt": "a fox", "model": "stable_diffusion"},
        "fal-ai/stable-diffusion-v35-large",
    ),
    "generate_image_structured": ({"scene": "a fox in the snow"}, "fal-ai/flux/schnell"),
    "generate_image_from_image": (
        {"image_url": IMAGE, "prompt": "in winter"},
        "fal-ai/flux/dev/image-to-image",
    ),
    "edit_image": ({"image_url": IMAGE, "instruction": "make it night"}, "fal-ai/flux-2/edit"),
    "inpaint_image": (
        {"image_url": IMAGE, "mask_url": MASK, "prompt": "a boat"},
        "fal-ai/flux-kontext-lora/inpaint",
    ),
    "remove_background": ({"image_url": IMAGE}, "fal-ai/birefnet/v2"),
    "upscale_image": ({"image_url": IMAGE, "model": "clarity"}, "fal-ai/clarity-upscaler"),
    "upscale_image_aura": ({"image_url": IMAGE, "model": "aura_sr"}, "fal-ai/aura-sr"),
    "resize_image": (
        {"image_url": IMAGE, "target_format": "youtube_thumbnail"},
        "fal-ai/image-apps-v2/outpaint",
    ),
    "resize_image_crop": ({"image_url": IMAGE, "target_format": "instagram_post", "mode": "crop"}, None),
    "compose_images": ({"base_image_url": IMAGE, "overlay_image_url": MASK}, None),
    "generate_video": (
        {"prompt": "waves", "model": "kling.t2v", "duration": 5},
        "fal-ai/kling-video/v2.1/master/text-to-video",
    ),
    "generate_video_wan": ({"prompt": "waves", "model": "wan.t2v"}, "fal-ai/wan-t2v"),
    "generate_video_from_image": (
        {"image_url": IMAGE, "prompt": "waves"},
        "fal-ai/kling-video/v2.1/standard/image-to-video",
    ),
    "generate_video_from_video": (
        {"video_url": VIDEO, "prompt": "as a cartoon"},
        "fal-ai/fast-animatediff/video-to-video",
    ),
    "generate_music": ({"prompt": "calm piano", "duration_seconds": 20}, "CassetteAI/music-generator"),
    "generate_music_lyria": ({"prompt": "calm piano", "model": "lyria2"}, "fal-ai/lyria2"),
}


def measured(unit: str, files: list[dict]) -> float | None:
    """What these output files hold in fal's billing unit, if they tell."""
    unit = unit.lower().rstrip("s")
    if unit == "megapixel" and all(f.get("width") and f.get("height") for f in files):
        return sum(f["width"] * f["height"] for f in files) / 1_000_000
    if unit == "second" and all(f.get("duration") for f in files):
        return sum(f["duration"] for f in files)
    if unit in ("image", "video"):
        return len(files)
    return 1 if unit == "request" else None


@pytest.mark.parametrize("case", sorted(GENERATIONS))
async def test_every_generation_has_a_receipt_at_the_sandboxs_price(sandbox, registry, case):
    import base64
    import io

    from PIL import Image

    from fal_mcp import find_files
    from fal_mcp_sandbox import media as sandbox_media

    arguments, endpoint_id = GENERATIONS[case]
    tool = case if case in registry.tools else case.rsplit("_", 1)[0]

    def data_uri(data: bytes, mime: str) -> str:
        return f"data:{mime};base64," + base64.b64encode(data).decode()

    def png(width: int, height: int, colour: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), colour).save(buffer, "PNG")
        return buffer.getvalue()

    frames = sandbox_media.video_frames(64, 48, 16, "input clip", 1)
    inputs = {
        IMAGE: data_uri(png(320, 240, "teal"), "image/png"),
        MASK: data_uri(png(320, 240, "white"), "image/png"),
        VIDEO: data_uri(sandbox_media.mp4(frames, 64, 48, 8), "video/mp4"),
    }
    sandbox.state.set_config(job_seconds=0.01)
    async with tool_table_for(sandbox, registry) as table:
        result = await table.call(tool, {k: inputs.get(v, v) for k, v in arguments.items()})
        assert not result.is_error, text_of(result)
        output = result.structured_content
        if endpoint_id is None:  # made here: nothing was spent, and the result does not pretend otherwise
            assert output["cost"] is None and "Cost:" not in text_of(result)
            return
        price = sandbox.state.endpoints[endpoint_id]
        assert output["endpoint"] == endpoint_id
        receipt = output["cost"]
        # What fal made (the sandbox's own record of it), else what the tool returned, else the input.
        made = find_files(sandbox.state.jobs[output["request_id"]].result)
        units = measured(price.unit, [f.model_dump() for f in made])
        if units is None:
            units = measured(price.unit, output["files"])
        from_input = units is None
        units = float(arguments.get("duration", 0)) if from_input else units
        assert receipt["unit"] == price.unit and receipt["unit_price"] == price.unit_price
        assert receipt["units"] == pytest.approx(units, rel=1e-6)
        assert receipt["cost"] == pytest.approx(units * price.unit_price, rel=1e-5, abs=1e-6)
        assert receipt["estimate"] > 0 and receipt["estimated"] is from_input
        assert f"Cost: {receipt['cost']:.4f} USD" in text_of(result)
        job = (await table.store.list("stdio", 1))[0]  # the job store keeps the receipt with the job
        assert job.cost == receipt and job.status == "done"
        ledger = await table.store.ledger("stdio", "2000-01-01", "2999-12-31")
        assert [(row.endpoint_id, row.calls) for row in ledger] == [(endpoint_id, 1)]
        assert ledger[0].charged == round(receipt["cost"] * 1_000_000)


@pytest.mark.parametrize("mode", ERAS)
async def test_the_user_is_not_asked_for_what_the_budget_refuses(sandbox, registry, mode):
    asked: list = []
    async with tool_table_for(
        sandbox, registry, FAL_MCP_CONFIRM_ABOVE=0.01, FAL_MCP_BUDGET_DAILY=PRO_COST * 1.5
    ) as table:
        async with sdk_client(table, mode, answering("accept", asked=asked)) as client:
            first = await client.call_tool("generate_image", PRO)
            assert not first.is_error and len(asked) == 1, text_of(first)
            second = await client.call_tool("generate_image", PRO)
            assert second.is_error and "left" in text_of(second) and "resets at" in text_of(second)
    assert len(asked) == 1 and len(sandbox.state.submissions) == 1


@pytest.mark.parametrize("where", ["inside", "outside"])
async def test_a_token_works_through_submit_job(sandbox, registry, where):
    async with tool_table_for(sandbox, registry, FAL_MCP_CONFIRM_ABOVE=0.01) as table:
        job = {"tool": "generate_image", "arguments": PRO}
        token = token_from(await table.call("submit_job", job))
        assert sandbox.state.submissions == []
        if where == "inside":
            job = {"tool": "generate_image", "arguments": {**PRO, "confirm": token}}
        else:
            job = {**job, "confirm": token}
        started = await table.call("submit_job", job)
        assert not started.is_error, text_of(started)
    assert len(sandbox.state.submissions) == 1
