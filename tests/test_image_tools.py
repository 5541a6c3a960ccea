"""The image pack's tools: the exact input each alias sends, refusals naming the field, and end to end
over stdio against the sandbox with the geometry checked by decoding the outputs."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import httpx
import pytest
from PIL import Image, ImageChops

from .conftest import server_env, stdio_client

pytestmark = pytest.mark.anyio

BLUE, RED = (0, 0, 255), (255, 0, 0)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png(image)).decode()


def picture(size=(300, 200)) -> Image.Image:
    """Something with detail on the left, so crops and previews have content."""
    image = Image.new("RGB", size, (40, 90, 160))
    for x in range(0, size[0] // 3, 6):
        image.paste((250, 250, 250), (x, 0, x + 3, size[1]))
    return image


def half_transparent_logo() -> Image.Image:
    """100x50: the left half opaque red, the right half fully transparent."""
    logo = Image.new("RGBA", (100, 50), (0, 0, 0, 0))
    logo.paste((*RED, 255), (0, 0, 50, 50))
    return logo


async def decode(url: str) -> Image.Image:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    response.raise_for_status()
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


@pytest.fixture
async def fast(sandbox):
    sandbox.state.set_config(job_seconds=0.01)
    return sandbox


@pytest.fixture
async def uploaded(tool_table, fast):
    """URLs on the sandbox CDN: the image (300x200), a mask of the same size, a half-size mask."""
    upload = tool_table.gateway.upload
    return {
        "image": await upload(png(picture()), "image/png", "in.png"),
        "mask": await upload(png(Image.new("L", (300, 200), 255)), "image/png", "mask.png"),
        "small_mask": await upload(png(Image.new("L", (150, 100), 255)), "image/png", "small.png"),
    }


async def call_ok(tool_table, name, args):
    result = await tool_table.call(name, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content, result.content[0].text


# -- the exact input of every alias --------------------------------------------------------

SCENE = {
    "scene": "a quiet harbour at dawn",
    "subjects": [
        {"type": "fishing boat", "description": "red hull", "pose": "moored", "position": "foreground"},
        {"type": "lighthouse"},
    ],
    "style": "watercolour",
    "color_palette": ["#F80", "#1e90ff"],
    "lighting": "golden hour",
    "mood": "calm",
    "background": "misty hills",
    "composition": "rule of thirds",
    "camera": {
        "angle": "eye level",
        "distance": "wide shot",
        "focus": "sharp throughout",
        "lens": "35mm",
        "f_number": 8,
        "iso": 100,
    },
    "effects": ["film grain"],
    "negative_prompt": "people",
    "image_size": "square",
    "num_images": 2,
    "seed": 9,
}
SENTENCES = (
    "A quiet harbour at dawn. In the foreground: fishing boat, red hull, moored. "
    "Subject: lighthouse. Background: misty hills. Composition: rule of thirds. "
    "Camera: wide shot, eye level, 35mm lens, f/8, ISO 100, sharp throughout. "
    "Lighting: golden hour. Mood: calm. Colour palette: orange (#f80), blue (#1e90ff). "
    "Style: watercolour. Effects: film grain."
)
KEYWORDS = (
    "watercolour, a quiet harbour at dawn, fishing boat, red hull, moored in the foreground, "
    "lighthouse, misty hills, golden hour, calm mood, orange (#f80), blue (#1e90ff), rule of thirds, "
    "wide shot, eye level, 35mm lens, f/8, ISO 100, sharp throughout, film grain"
)


@pytest.mark.parametrize(
    "model, endpoint, prompt, negative",
    [
        ("flux_schnell", "fal-ai/flux/schnell", SENTENCES, False),
        ("flux_dev", "fal-ai/flux/dev", SENTENCES, False),
        ("flux_pro", "fal-ai/flux-pro/v1.1", SENTENCES, False),
        ("sdxl", "fal-ai/fast-sdxl", KEYWORDS, True),
        ("stable_diffusion", "fal-ai/stable-diffusion-v35-large", SENTENCES, True),
    ],
)
async def test_structured_scene_becomes_the_prompt_for_each_model(
    tool_table, fast, model, endpoint, prompt, negative
):
    output, text = await call_ok(tool_table, "generate_image_structured", {**SCENE, "model": model})
    submitted = fast.state.submissions[-1]
    expected = {"prompt": prompt, "image_size": "square_hd", "num_images": 2, "seed": 9}
    if negative:
        expected["negative_prompt"] = "people"
    assert submitted["endpoint_id"] == endpoint and submitted["input"] == expected
    assert output["prompt"] == prompt and "Prompt sent" in text and prompt in text
    assert len(output["files"]) == 2 and output["files"][0]["width"] == 1024
    assert ("negative_prompt was not sent" in text) is not negative


@pytest.mark.parametrize(
    "model, endpoint, expected, notes",
    [
        (
            "flux_dev_i2i",
            "fal-ai/flux/dev/image-to-image",
            {"prompt": "as a pencil sketch", "num_images": 2, "strength": 0.6, "seed": 4},
            ["negative_prompt"],
        ),
        (
            "kontext",
            "fal-ai/flux-pro/kontext",
            {"prompt": "as a pencil sketch", "num_images": 2, "seed": 4},
            ["strength", "negative_prompt"],
        ),
    ],
)
async def test_image_from_image_inputs(tool_table, fast, uploaded, model, endpoint, expected, notes):
    args = {
        "image_url": uploaded["image"],
        "prompt": "as a pencil sketch",
        "model": model,
        "strength": 0.6,
        "num_images": 2,
        "negative_prompt": "colour",
        "seed": 4,
    }
    output, text = await call_ok(tool_table, "generate_image_from_image", args)
    submitted = fast.state.submissions[-1]
    assert submitted["endpoint_id"] == endpoint
    assert submitted["input"] == {"image_url": uploaded["image"], **expected}
    assert [note.split()[0] for note in output["notes"]] == notes
    assert all(f"{name} was not sent" in text for name in notes)


@pytest.mark.parametrize(
    "model, variant",
    [
        ("birefnet", "General Use (Light)"),
        ("birefnet_heavy", "General Use (Heavy)"),
        ("birefnet_portrait", "Portrait"),
    ],
)
async def test_remove_background_inputs(tool_table, fast, uploaded, model, variant):
    output, text = await call_ok(
        tool_table,
        "remove_background",
        {"image_url": uploaded["image"], "model": model, "output_format": "webp"},
    )
    submitted = fast.state.submissions[-1]
    assert submitted["endpoint_id"] == "fal-ai/birefnet/v2"
    assert submitted["input"] == {"image_url": uploaded["image"], "model": variant, "output_format": "webp"}
    assert output["files"][0]["content_type"] == "image/webp" and "WEBP, with an alpha channel" in text


@pytest.mark.parametrize(
    "model, scale, endpoint, factor",
    [
        ("clarity", None, "fal-ai/clarity-upscaler", 2),
        ("clarity", 4, "fal-ai/clarity-upscaler", 4),
        ("aura_sr", None, "fal-ai/aura-sr", 4),
        ("aura_sr", 4, "fal-ai/aura-sr", 4),
    ],
)
async def test_upscale_inputs(tool_table, fast, uploaded, model, scale, endpoint, factor):
    args = {"image_url": uploaded["image"], "model": model, **({"scale": scale} if scale else {})}
    output, text = await call_ok(tool_table, "upscale_image", args)
    submitted = fast.state.submissions[-1]
    assert submitted["endpoint_id"] == endpoint
    assert submitted["input"] == {"image_url": uploaded["image"], "upscale_factor": factor}
    file = output["files"][0]
    assert (file["width"], file["height"]) == (300 * factor, 200 * factor)
    assert f"300x200 x{factor} -> {300 * factor}x{200 * factor}" in text and output["notes"] == []


@pytest.mark.parametrize(
    "model, endpoint, image_field",
    [
        ("flux_2_edit", "fal-ai/flux-2/edit", "image_urls"),
        ("kontext", "fal-ai/flux-pro/kontext", "image_url"),
        ("fal-ai/flux-pro/kontext", "fal-ai/flux-pro/kontext", "image_url"),  # by endpoint id
    ],
)
async def test_edit_inputs(tool_table, fast, uploaded, model, endpoint, image_field):
    args = {
        "image_url": uploaded["image"],
        "instruction": "add snow",
        "model": model,
        "strength": 0.4,
        "seed": 1,
    }
    output, text = await call_ok(tool_table, "edit_image", args)
    submitted = fast.state.submissions[-1]
    image = [uploaded["image"]] if image_field == "image_urls" else uploaded["image"]
    assert submitted["endpoint_id"] == endpoint
    assert submitted["input"] == {image_field: image, "prompt": "add snow", "seed": 1}
    assert output["notes"] == [f"strength was not sent: {output['model']} does not take it"]
    assert output["prompt"] == "add snow"


@pytest.mark.parametrize(
    "model, endpoint, reference",
    [
        ("kontext_inpaint", "fal-ai/flux-kontext-lora/inpaint", True),
        ("flux_inpaint", "fal-ai/flux-lora/inpainting", False),
    ],
)
async def test_inpaint_inputs(tool_table, fast, uploaded, model, endpoint, reference):
    args = {
        "image_url": uploaded["image"],
        "mask_url": uploaded["mask"],
        "prompt": "a cat",
        "model": model,
        "negative_prompt": "dog",
        "strength": 0.7,
        "seed": 2,
    }
    output, _ = await call_ok(tool_table, "inpaint_image", args)
    submitted = fast.state.submissions[-1]
    expected = {
        "image_url": uploaded["image"],
        "mask_url": uploaded["mask"],
        "prompt": "a cat",
        "strength": 0.7,
        "seed": 2,
    }
    if reference:  # kontext inpaint requires one: the image itself
        expected["reference_image_url"] = uploaded["image"]
    assert submitted["endpoint_id"] == endpoint and submitted["input"] == expected
    assert output["notes"] == [f"negative_prompt was not sent: {model} does not take it"]


async def test_outpaint_input_reaches_the_target_aspect(tool_table, fast, uploaded):
    output, text = await call_ok(
        tool_table,
        "resize_image",
        {
            "image_url": uploaded["image"],
            "target_format": "instagram_post",
            "background_prompt": "more sea",
            "seed": 5,
        },
    )
    submitted = fast.state.submissions[-1]
    # 300x200 -> square: 100 rows more, split top and bottom; zoom-out off (fal's default is 20%).
    assert submitted["endpoint_id"] == "fal-ai/image-apps-v2/outpaint"
    assert submitted["input"] == {
        "image_url": uploaded["image"],
        "expand_left": 0,
        "expand_right": 0,
        "expand_top": 50,
        "expand_bottom": 50,
        "zoom_out_percentage": 0,
        "prompt": "more sea",
        "seed": 5,
    }
    assert output["model"] == "outpaint" and output["prompt"] == "more sea"
    assert (output["files"][0]["width"], output["files"][0]["height"]) == (1080, 1080)
    assert "fal returned 300x300" in text


# -- behaviour that needs more than one request ---------------------------------------------


async def test_a_mask_of_another_size_is_resized_and_uploaded(tool_table, fast, uploaded):
    output, text = await call_ok(
        tool_table,
        "inpaint_image",
        {"image_url": uploaded["image"], "mask_url": uploaded["small_mask"], "prompt": "a cat"},
    )
    sent = fast.state.submissions[-1]["input"]["mask_url"]
    assert sent != uploaded["small_mask"] and sent in text
    assert "the mask was 150x100, the image 300x200" in output["notes"][0]
    mask = await decode(sent)
    assert mask.size == (300, 200) and mask.getextrema() == (255, 255)


async def test_a_large_input_is_shrunk_before_outpainting(tool_table, fast):
    big = await tool_table.gateway.upload(png(picture((2400, 1600))), "image/png", "big.png")
    output, text = await call_ok(tool_table, "resize_image", {"image_url": big, "target_format": "tiktok"})
    sent = fast.state.submissions[-1]["input"]
    # On a 1080x1920 canvas the image is 1080x720; 1200 rows are added, 600 a side (fal allows 700).
    assert sent["image_url"] != big and (sent["expand_top"], sent["expand_bottom"]) == (600, 600)
    assert (await decode(sent["image_url"])).size == (1080, 720)
    assert "scaled to 1080x720 before outpainting" in text
    assert (output["files"][0]["width"], output["files"][0]["height"]) == (1080, 1920)


def test_outpaint_plans_keep_every_side_within_fal_limits(registry):
    from fal_mcp_image.resize_image import expand_limit, outpaint_plan

    limit = expand_limit(registry.resolve_model("resize_image", "outpaint"))
    assert limit == 700  # fal's schema of fal-ai/image-apps-v2/outpaint
    for size in [(300, 200), (2400, 1600), (4000, 500), (64, 4000), (1080, 1080)]:
        for target in [(1080, 1920), (1280, 720), (1000, 1500), (16, 4096), (4096, 16)]:
            (w, h), (left, right, top, bottom) = outpaint_plan(size, target, limit)
            assert max(left, right, top, bottom) <= limit
            assert w <= size[0] and h <= size[1]
            width, height = w + left + right, h + top + bottom
            # Rounding to whole pixels: off by at most half a pixel on the extended side.
            assert abs(width * target[1] - height * target[0]) <= 0.5 * max(target), (size, target)


def test_colour_names_and_prompt_shapes():
    from fal_mcp_image.generate_image_structured import StructuredImageInput, colour_name, sentence_prompt

    assert [colour_name(value) for value in ("#000", "#ff0000", "#FFFFFF")] == ["black", "red", "white"]
    minimal = StructuredImageInput(scene="  a cat on a mat. ")
    assert sentence_prompt(minimal) == "A cat on a mat."


def test_loading_the_pack_does_not_import_pillow():
    code = (
        "import sys; from fal_mcp.plugins import load_plugins; from fal_mcp.config import Settings; "
        "r = load_plugins(Settings.from_env({})); assert 'compose_images' in r.tools; "
        "print(sorted(m for m in sys.modules if m == 'PIL' or m.startswith('PIL.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- refusals, each naming the field ------------------------------------------------------------

IMG = {"image_url": "IMG"}
STORY = {"image_url": "IMG", "target_format": "tiktok"}
TWO = {"base_image_url": "IMG", "overlay_image_url": "IMG"}
BAD = [
    ("generate_image_structured", {}, "scene"),
    ("generate_image_structured", {"scene": "  "}, "scene"),
    ("generate_image_structured", {"scene": "x", "color_palette": ["red"]}, "color_palette.0"),
    ("generate_image_structured", {"scene": "x", "color_palette": ["#fff", "#12345"]}, "color_palette.1"),
    (
        "generate_image_structured",
        {"scene": "x", "subjects": [{"type": "cat", "position": "sky"}]},
        "subjects.0.position",
    ),
    (
        "generate_image_structured",
        {"scene": "x", "subjects": [{"description": "no type"}]},
        "subjects.0.type",
    ),
    ("generate_image_structured", {"scene": "x", "camera": {"iso": 1}}, "camera.iso"),
    ("generate_image_structured", {"scene": "x", "camera": {"shutter": "1/100"}}, "camera.shutter"),
    ("generate_image_structured", {"scene": "x", "effects": [""]}, "effects.0"),
    ("generate_image_structured", {"scene": "x", "model": "dalle"}, "model"),
    ("generate_image_structured", {"scene": "x", "num_images": 5}, "num_images"),
    ("generate_image_from_image", {**IMG, "prompt": "x", "strength": 1.5}, "strength"),
    ("generate_image_from_image", IMG, "prompt"),
    ("generate_image_from_image", {**IMG, "prompt": "x", "model": "sdxl"}, "model"),
    ("remove_background", {**IMG, "output_format": "jpeg"}, "output_format"),
    ("remove_background", {}, "image_url"),
    ("upscale_image", {**IMG, "scale": 3}, "scale"),
    ("upscale_image", {**IMG, "scale": 2, "model": "aura_sr"}, "scale"),
    ("edit_image", IMG, "instruction"),
    ("edit_image", {**IMG, "instruction": "x", "model": "flux_dev_i2i"}, "model"),
    ("inpaint_image", {**IMG, "prompt": "x"}, "mask_url"),
    ("inpaint_image", {**IMG, "mask_url": "data:text/plain;base64,aGVsbG8=", "prompt": "x"}, "mask_url"),
    ("resize_image", {**IMG, "target_format": "myspace"}, "target_format"),
    ("resize_image", {**IMG, "target_format": "custom", "height": 100}, "width"),
    ("resize_image", {**STORY, "height": 100}, "height"),
    ("resize_image", {**STORY, "mode": "stretch"}, "mode"),
    ("resize_image", {**STORY, "mode": "pad", "background_color": "blue"}, "background_color"),
    # fal's outpaint takes a prompt of at most 500 characters (its schema), the tool up to 2000
    ("resize_image", {**STORY, "background_prompt": "sea " * 126}, "background_prompt"),
    ("compose_images", {**TWO, "position": "custom", "x": 5}, "y"),
    ("compose_images", {**TWO, "x": 5}, "x"),
    ("compose_images", {**TWO, "position": "custom", "x": 300, "y": 0}, "x"),  # the base is 300 wide
    ("compose_images", {**TWO, "scale": 0}, "scale"),
    ("compose_images", {**TWO, "opacity": 1.2}, "opacity"),
    ("compose_images", {**TWO, "output_format": "gif"}, "output_format"),
    ("compose_images", {**TWO, "base_image_url": "/etc/passwd"}, "base_image_url"),
]


@pytest.mark.parametrize("tool, args, field", BAD, ids=[f"{tool}-{field}" for tool, _, field in BAD])
async def test_bad_input_is_refused_naming_the_field(tool_table, fast, uploaded, tool, args, field):
    args = {key: uploaded["image"] if value == "IMG" else value for key, value in args.items()}
    result = await tool_table.call(tool, args)
    assert result.is_error
    assert f"{field}:" in result.content[0].text, result.content[0].text
    assert fast.state.submissions == []  # refused before anything was paid for


# -- end to end: a `fal-mcp serve` subprocess over stdio, outputs decoded ---------------------


@pytest.fixture
def e2e_sandbox(thread_sandbox):
    before = thread_sandbox.state.config.job_seconds
    thread_sandbox.state.set_config(job_seconds=0.01)
    yield thread_sandbox
    thread_sandbox.state.set_config(job_seconds=before)


async def call_stdio(client, name, args):
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content[0].text
    output = result.structured_content
    return output, [await decode(file["url"]) for file in output["files"]], result.content[0].text


async def test_generation_tools_end_to_end_over_stdio(e2e_sandbox):
    image = data_uri(picture())
    async with stdio_client(["serve"], server_env(dict(e2e_sandbox.env()))) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["upscale_image"].input_schema["properties"]["model"]["enum"][:2] == [
            "clarity",
            "aura_sr",
        ]
        assert tools["edit_image"].input_schema["properties"]["model"]["default"] == "flux_2_edit"

        output, images, _ = await call_stdio(
            client,
            "generate_image_structured",
            {
                "scene": "a lighthouse at dawn",
                "subjects": [{"type": "gull", "position": "foreground"}],
                "color_palette": ["#fff"],
                "image_size": "portrait_3_4",
            },
        )
        assert images[0].size == (768, 1024)
        assert e2e_sandbox.state.submissions[-1]["input"]["prompt"] == output["prompt"]
        assert output["prompt"].startswith("A lighthouse at dawn. In the foreground: gull.")

        output, images, _ = await call_stdio(
            client, "generate_image_from_image", {"image_url": image, "prompt": "a sketch", "strength": 0.5}
        )
        assert images[0].size == (300, 200) and output["endpoint"] == "fal-ai/flux/dev/image-to-image"

        for model, scale in [("clarity", 2), ("clarity", 4), ("aura_sr", 4)]:
            output, images, text = await call_stdio(
                client, "upscale_image", {"image_url": image, "model": model, "scale": scale}
            )
            assert images[0].size == (300 * scale, 200 * scale) and output["notes"] == []
            assert e2e_sandbox.state.submissions[-1]["input"]["upscale_factor"] == scale

        for output_format in ("png", "webp"):
            output, images, text = await call_stdio(
                client, "remove_background", {"image_url": image, "output_format": output_format}
            )
            cutout = images[0]
            assert cutout.format == output_format.upper() and cutout.mode == "RGBA"
            alpha = cutout.getchannel("A")
            assert alpha.getextrema() == (0, 255)  # really transparent somewhere, opaque elsewhere
            assert f"{output_format.upper()}, with an alpha channel" in text

        output, images, _ = await call_stdio(
            client, "edit_image", {"image_url": image, "instruction": "add snow"}
        )
        assert images[0].size == (300, 200) and output["model"] == "flux_2_edit"

        small_mask = data_uri(Image.new("L", (150, 100), 255))
        output, images, _ = await call_stdio(
            client, "inpaint_image", {"image_url": image, "mask_url": small_mask, "prompt": "a boat"}
        )
        assert images[0].size == (300, 200) and "resized to match" in output["notes"][0]
        sent = e2e_sandbox.state.submissions[-1]["input"]
        assert sent["reference_image_url"] == sent["image_url"]
        assert (await decode(sent["mask_url"])).size == (300, 200)


async def test_local_tools_end_to_end_over_stdio(e2e_sandbox):
    from fal_mcp_image.resize_image import SIZES

    image = data_uri(picture())
    base = Image.new("RGB", (400, 300), BLUE)
    async with stdio_client(["serve"], server_env(dict(e2e_sandbox.env()))) as client:
        cases = [
            ("instagram_story", None, "extend"),
            ("youtube_thumbnail", None, "extend"),
            ("pinterest_pin", None, "crop"),
            ("linkedin_post", None, "pad"),
            ("custom", (333, 777), "crop"),
            ("custom", (640, 200), "pad"),
            ("custom", (450, 300), "extend"),
        ]
        for target, custom, mode in cases:
            args = {"image_url": image, "target_format": target, "mode": mode, "crop_focus": "content"}
            if custom:
                args.update(width=custom[0], height=custom[1])
            output, images, text = await call_stdio(client, "resize_image", args)
            expected = custom or SIZES[target]
            assert images[0].size == expected, (target, mode)
            assert (output["files"][0]["width"], output["files"][0]["height"]) == expected
            generated = mode == "extend" and custom != (450, 300)  # that one has the input's aspect ratio
            assert (output["endpoint"] == "fal-ai/image-apps-v2/outpaint") == generated
        assert "nothing generated" in text

        # pad: the bars are the colour asked for, the picture sits in the middle
        output, images, _ = await call_stdio(
            client,
            "resize_image",
            {
                "image_url": image,
                "target_format": "custom",
                "width": 300,
                "height": 400,
                "mode": "pad",
                "background_color": "#ff0000",
            },
        )
        padded = images[0].convert("RGB")
        assert padded.getpixel((150, 10)) == RED and padded.getpixel((150, 390)) == RED
        assert padded.getpixel((290, 200)) == (40, 90, 160)

        placements = {
            # position args -> the red half's box; the logo is 100x50 at scale 0.25 of 400
            "bottom-right": ({}, (280, 230, 330, 280)),
            "top-left": ({"position": "top-left", "padding": 10}, (10, 10, 60, 60)),
            "top-right": ({"position": "top-right"}, (280, 20, 330, 70)),
            "bottom-left": ({"position": "bottom-left", "padding": 0}, (0, 250, 50, 300)),
            "center": ({"position": "center"}, (150, 125, 200, 175)),
            "custom": ({"position": "custom", "x": 7, "y": 33}, (7, 33, 57, 83)),
        }
        for name, (extra, box) in placements.items():
            args = {
                "base_image_url": data_uri(base),
                "overlay_image_url": data_uri(half_transparent_logo()),
                "scale": 0.25,
                **extra,
            }
            output, images, _ = await call_stdio(client, "compose_images", args)
            composed = images[0]
            assert composed.size == (400, 300) and composed.format == "PNG", name
            # Only the opaque half differs from the base: the transparent half kept the base's pixels.
            assert ImageChops.difference(composed.convert("RGB"), base).getbbox() == box, name
            assert composed.getpixel((box[0] + 25, box[1] + 25))[:3] == RED
            assert output["endpoint"] == "local/pillow" and output["request_id"].startswith("local-")

        output, images, _ = await call_stdio(
            client,
            "compose_images",
            {
                "base_image_url": data_uri(base),
                "overlay_image_url": data_uri(half_transparent_logo()),
                "scale": 0.25,
                "opacity": 0.5,
                "output_format": "jpeg",
            },
        )
        red, _, blue = images[0].convert("RGB").getpixel((305, 255))
        assert images[0].format == "JPEG" and abs(red - 128) <= 6 and abs(blue - 127) <= 6
