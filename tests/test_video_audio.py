"""The video and audio packs against the sandbox: the exact input each endpoint gets for every tool and
alias, duration translation and its notes, refusals naming the field, real MP4 and WAV output, queue
progress, and end to end over stdio including a client cancel."""

from __future__ import annotations

import io
import wave
from types import SimpleNamespace

import anyio
import httpx
import pytest
from PIL import Image

from fal_mcp_sandbox import media as sandbox_media
from fal_mcp_video import endpoints

from .conftest import server_env, stdio_client

pytestmark = pytest.mark.anyio

STABLE_VIDEO = "fal-ai/stable-video"
ANIMATEDIFF_T2V = "fal-ai/fast-animatediff/text-to-video"
ANIMATEDIFF_V2V = "fal-ai/fast-animatediff/video-to-video"
KLING_I2V = "fal-ai/kling-video/v2.1/standard/image-to-video"
KLING_PRO_I2V = "fal-ai/kling-video/v2.1/pro/image-to-video"
KLING_T2V = "fal-ai/kling-video/v2.1/master/text-to-video"
WAN_I2V = "fal-ai/wan-i2v"
WAN_T2V = "fal-ai/wan-t2v"
LUCY_EDIT = "decart/lucy-edit/pro"
CASSETTE = "CassetteAI/music-generator"
STABLE_AUDIO = "fal-ai/stable-audio"
ACE_STEP = "fal-ai/ace-step"
LYRIA2 = "fal-ai/lyria2"

# Placeholders in the case tables, replaced by files stored on the test's sandbox.
IMAGE, TAIL, VIDEO = "<image>", "<tail>", "<video>"


def png(width: int, height: int, colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def mp4(seconds: int, fps: int = 8) -> bytes:
    frames = sandbox_media.video_frames(64, 48, seconds * fps, "input clip", 1)
    return sandbox_media.mp4(frames, 64, 48, fps)


def fill(value, files: dict):
    if isinstance(value, str):
        return files.get(value, value)
    if isinstance(value, dict):
        return {key: fill(item, files) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(fill(item, files) for item in value)
    return value


@pytest.fixture
async def files(sandbox, tool_table):
    """A start image, a last-frame image and a 3 s input video on the sandbox's CDN; short jobs."""
    sandbox.state.set_config(job_seconds=0.05)
    upload = tool_table.gateway.upload
    return {
        IMAGE: await upload(png(320, 240, "teal"), "image/png", "start.png"),
        TAIL: await upload(png(320, 240, "orange"), "image/png", "end.png"),
        VIDEO: await upload(mp4(3), "video/mp4", "clip.mp4"),
    }


async def call(table, name: str, arguments: dict, report_progress=None) -> tuple[dict, str]:
    result = await table.call(name, arguments, report_progress)
    assert not result.is_error, result.content[0].text
    return result.structured_content, result.content[0].text


async def download(url: str) -> bytes:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    response.raise_for_status()
    return response.content


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as audio:
        return audio.getnframes() / audio.getframerate()


def assert_mp4(data: bytes, seconds: float | None) -> None:
    assert data[4:8] == b"ftyp", "not an ISO BMFF (MP4) file"
    if seconds is not None:
        assert sandbox_media.mp4_seconds(data) == pytest.approx(seconds, abs=0.01)


def assert_notes(output: dict, text: str, expected: list[str]) -> None:
    if not expected:
        assert output["notes"] == []
    for part in expected:
        assert any(part in note for note in output["notes"]), (part, output["notes"])
        assert part in text


async def check_sent(sandbox, output: dict, text: str, endpoint: str, expected_input: dict) -> None:
    sent = sandbox.state.submissions[-1]
    assert sent["endpoint_id"] == endpoint
    assert sent["input"] == expected_input
    assert output["endpoint"] == endpoint and endpoint in text
    assert output["request_id"] == sent["request_id"] and sent["request_id"] in text


# -- generate_video: every alias, with and without an image ------------------------------------------

VIDEO_CASES = {  # arguments, endpoint, the exact input it gets, seconds made, notes
    "svd": (
        {"image_url": IMAGE, "model": "svd", "duration": 2, "seed": 5},
        STABLE_VIDEO,
        {"image_url": IMAGE, "seed": 5, "fps": 13},
        25 / 13,
        ["duration: svd cannot make 2 s", "made 1.92 s (25 frames at 13 fps) instead"],
    ),
    "svd default, prompt dropped": (
        {"image_url": IMAGE, "prompt": "waves"},
        STABLE_VIDEO,
        {"image_url": IMAGE, "fps": 10},
        2.5,
        ["prompt was not sent: svd animates the image without a prompt", "svd cannot make 4 s"],
    ),
    "animatediff": (
        {
            "prompt": "a fox",
            "model": "animatediff",
            "duration": 5,
            "aspect_ratio": "16:9",
            "negative_prompt": "blur",
            "seed": 9,
        },
        ANIMATEDIFF_T2V,
        {
            "prompt": "a fox",
            "negative_prompt": "blur",
            "seed": 9,
            "num_frames": 30,
            "fps": 6,
            "video_size": "landscape_16_9",
        },
        5,
        [],
    ),
    "default without image": (
        {"prompt": "a cat"},
        ANIMATEDIFF_T2V,
        {"prompt": "a cat", "num_frames": 32, "fps": 8},
        4,
        ["the default model svd animates images, so the text-to-video model animatediff"],
    ),
    "kling with image": (
        {
            "image_url": IMAGE,
            "prompt": "she smiles",
            "model": "kling",
            "duration": 10,
            "aspect_ratio": "1:1",
            "negative_prompt": "blur",
        },
        KLING_I2V,
        {"prompt": "she smiles", "image_url": IMAGE, "negative_prompt": "blur", "duration": "10"},
        10,
        ["aspect_ratio was not sent: kling keeps the starting image's aspect ratio"],
    ),
    "kling without image": (
        {"prompt": "a city", "model": "kling", "duration": 3, "aspect_ratio": "9:16", "seed": 1},
        KLING_T2V,
        {"prompt": "a city", "aspect_ratio": "9:16", "duration": "5"},
        5,
        [
            "no image was given, so kling's text-to-video endpoint kling.t2v",
            "kling cannot make 3 s (it makes 5 s or 10 s); made 5 s instead",
            "seed was not sent: kling takes no seed",
        ],
    ),
    "kling.t2v": (
        {"prompt": "a city", "model": "kling.t2v", "duration": 8, "negative_prompt": "rain"},
        KLING_T2V,
        {"prompt": "a city", "negative_prompt": "rain", "duration": "10"},
        10,
        ["kling cannot make 8 s"],
    ),
    "kling.t2v with image": (
        {"image_url": IMAGE, "prompt": "zoom", "model": "kling.t2v", "duration": 5},
        KLING_I2V,
        {"prompt": "zoom", "image_url": IMAGE, "duration": "5"},
        5,
        ["an image was given, so kling's image-to-video endpoint kling"],
    ),
    "wan with image": (
        {"image_url": IMAGE, "prompt": "leaves fall", "model": "wan", "aspect_ratio": "1:1", "seed": 3},
        WAN_I2V,
        {
            "image_url": IMAGE,
            "prompt": "leaves fall",
            "aspect_ratio": "1:1",
            "seed": 3,
            "num_frames": 84,
            "frames_per_second": 21,
        },
        4,
        [],
    ),
    "wan without image": (
        {"prompt": "leaves fall", "model": "wan", "duration": 10, "aspect_ratio": "9:16"},
        WAN_T2V,
        {"prompt": "leaves fall", "aspect_ratio": "9:16", "num_frames": 100, "frames_per_second": 10},
        10,
        ["no image was given, so wan's text-to-video endpoint wan.t2v"],
    ),
    "wan.t2v": (
        {"prompt": "x", "model": "wan.t2v", "duration": 2, "aspect_ratio": "1:1"},
        WAN_T2V,
        {"prompt": "x", "num_frames": 81, "frames_per_second": 24},
        81 / 24,
        [
            "wan cannot make 2 s (it makes 81-100 frames at 5-24 fps); made 3.38 s (81 frames at 24 fps)",
            "aspect_ratio was not sent: wan makes only 16:9 and 9:16 from text",
        ],
    ),
}


@pytest.mark.parametrize("case", VIDEO_CASES.values(), ids=VIDEO_CASES.keys())
async def test_generate_video_sends_each_endpoint_its_own_fields(tool_table, sandbox, files, case):
    arguments, endpoint, expected, seconds, notes = fill(case, files)
    output, text = await call(tool_table, "generate_video", arguments)
    await check_sent(sandbox, output, text, endpoint, expected)
    assert output["model"] in text and output["prompt"] == expected.get("prompt")
    assert_notes(output, text, notes)
    (video,) = output["files"]
    assert video["content_type"] == "video/mp4" and video["url"] in text
    assert video["duration"] == pytest.approx(seconds) and f"{seconds:.3g} s video" in text
    data = await download(video["url"])
    assert video["file_size"] == len(data)
    assert_mp4(data, seconds)
    if "seed" in expected:
        assert output["seed"] == expected["seed"] and f"seed {expected['seed']}" in text


# -- generate_video_from_image ----------------------------------------------------------------------

FROM_IMAGE_CASES = {
    "kling_pro, first and last frame": (
        {
            "image_url": IMAGE,
            "tail_image_url": TAIL,
            "prompt": "day turns to night",
            "model": "kling_pro",
            "negative_prompt": "blur",
        },
        KLING_PRO_I2V,
        {
            "prompt": "day turns to night",
            "image_url": IMAGE,
            "tail_image_url": TAIL,
            "negative_prompt": "blur",
            "duration": "5",
        },
        5,
        [],
    ),
    "a last frame and no model: kling_pro": (
        {"image_url": IMAGE, "tail_image_url": TAIL, "prompt": "day turns to night"},
        KLING_PRO_I2V,
        {"prompt": "day turns to night", "image_url": IMAGE, "tail_image_url": TAIL, "duration": "5"},
        5,
        [
            "a last frame (tail_image_url) was given and the default model kling takes none, so kling_pro "
            "(fal-ai/kling-video/v2.1/pro/image-to-video) was used"
        ],
    ),
    "kling": (
        {"image_url": IMAGE, "prompt": "day turns to night", "duration": 9},
        KLING_I2V,
        {"prompt": "day turns to night", "image_url": IMAGE, "duration": "10"},
        10,
        ["duration: kling cannot make 9 s (it makes 5 s or 10 s)"],
    ),
    "wan": (
        {
            "image_url": IMAGE,
            "prompt": "wind",
            "model": "wan",
            "duration": 6,
            "aspect_ratio": "9:16",
            "seed": 4,
            "negative_prompt": "static",
        },
        WAN_I2V,
        {
            "image_url": IMAGE,
            "prompt": "wind",
            "negative_prompt": "static",
            "aspect_ratio": "9:16",
            "seed": 4,
            "num_frames": 96,
            "frames_per_second": 16,
        },
        6,
        [],
    ),
    "svd": (
        {"image_url": IMAGE, "prompt": "wind", "model": "svd", "duration": 2.5, "seed": 1},
        STABLE_VIDEO,
        {"image_url": IMAGE, "seed": 1, "fps": 10},
        2.5,
        ["prompt was not sent: svd animates the image without a prompt"],
    ),
}


@pytest.mark.parametrize("case", FROM_IMAGE_CASES.values(), ids=FROM_IMAGE_CASES.keys())
async def test_generate_video_from_image_sends_each_endpoint_its_own_fields(tool_table, sandbox, files, case):
    arguments, endpoint, expected, seconds, notes = fill(case, files)
    output, text = await call(tool_table, "generate_video_from_image", arguments)
    await check_sent(sandbox, output, text, endpoint, expected)
    assert_notes(output, text, notes)
    (video,) = output["files"]
    assert video["duration"] == pytest.approx(seconds)
    assert_mp4(await download(video["url"]), seconds)


async def test_a_local_start_image_and_a_data_uri_last_frame_are_uploaded(
    tool_table, sandbox, files, tmp_path, monkeypatch
):
    import base64

    monkeypatch.chdir(tmp_path)  # the working directory is where local files may be read from
    (tmp_path / "start.png").write_bytes(png(300, 200, "navy"))
    tail = "data:image/png;base64," + base64.b64encode(png(300, 200, "gold")).decode()
    output, _ = await call(
        tool_table,
        "generate_video_from_image",
        {"image_url": "start.png", "tail_image_url": tail, "prompt": "sunrise"},
    )
    sent = sandbox.state.submissions[-1]["input"]
    cdn = sandbox.env()["FAL_MCP_CDN_URL"]
    assert sent["image_url"].startswith(cdn) and sent["tail_image_url"].startswith(cdn)
    assert await download(sent["image_url"]) == (tmp_path / "start.png").read_bytes()
    assert output["files"][0]["content_type"] == "video/mp4"


# -- generate_video_from_video ----------------------------------------------------------------------

FROM_VIDEO_CASES = {  # ... and the length of the video made
    "animatediff with every option": (
        {
            "video_url": VIDEO,
            "prompt": "anime style",
            "strength": 0.5,
            "seed": 2,
            "options": {
                "first_n_seconds": 2,
                "fps": 12,
                "motions": ["zoom-in", "pan-left"],
                "negative_prompt": "blur",
                "guidance_scale": 6,
                "num_inference_steps": 20,
            },
        },
        ANIMATEDIFF_V2V,
        {
            "prompt": "anime style",
            "video_url": VIDEO,
            "strength": 0.5,
            "seed": 2,
            "first_n_seconds": 2,
            "fps": 12,
            "motions": ["zoom-in", "pan-left"],
            "negative_prompt": "blur",
            "guidance_scale": 6.0,
            "num_inference_steps": 20,
        },
        2,
        [],
    ),
    "animatediff, defaults": (
        {"video_url": VIDEO, "prompt": "oil painting"},
        ANIMATEDIFF_V2V,
        {"prompt": "oil painting", "video_url": VIDEO},
        3,
        [],
    ),
    "lucy_edit": (
        {
            "video_url": VIDEO,
            "prompt": "make it night",
            "model": "lucy_edit",
            "strength": 0.3,
            "seed": 1,
            "options": {"enhance_prompt": False},
        },
        LUCY_EDIT,
        {"prompt": "make it night", "video_url": VIDEO, "enhance_prompt": False, "sync_mode": False},
        3,
        ["strength was not sent: lucy_edit takes no strength", "seed was not sent: lucy_edit takes no seed"],
    ),
}


@pytest.mark.parametrize("case", FROM_VIDEO_CASES.values(), ids=FROM_VIDEO_CASES.keys())
async def test_generate_video_from_video_sends_each_endpoint_its_own_fields(tool_table, sandbox, files, case):
    arguments, endpoint, expected, seconds, notes = fill(case, files)
    output, text = await call(tool_table, "generate_video_from_video", arguments)
    await check_sent(sandbox, output, text, endpoint, expected)
    assert_notes(output, text, notes)
    (video,) = output["files"]
    assert video["url"].startswith("http")  # lucy_edit's inline default is turned off
    assert_mp4(await download(video["url"]), seconds)


OPTION_REFUSALS = [
    ("lucy_edit", {"fps": 8}, ["options.fps: lucy_edit does not take this option; it takes: enhance_prompt"]),
    (
        "animatediff",
        {"enhance_prompt": True, "fps": 99},
        [
            "options.enhance_prompt: animatediff does not take this option; it takes: first_n_seconds, fps, "
            "guidance_scale, motions, negative_prompt, num_inference_steps",
            "options.fps: Input should be less than or equal to 16 (got 99)",
        ],
    ),
    ("animatediff", {"motions": ["spin"]}, ["options.motions.0: Input should be"]),
    ("animatediff", {"first_n_seconds": "long"}, ["options.first_n_seconds"]),
]


@pytest.mark.parametrize("model, options, expected", OPTION_REFUSALS)
async def test_options_a_model_does_not_take_are_refused(
    tool_table, sandbox, files, model, options, expected
):
    arguments = {"video_url": files[VIDEO], "prompt": "p", "model": model, "options": options}
    result = await tool_table.call("generate_video_from_video", arguments)
    assert result.is_error
    text = result.content[0].text
    assert text.startswith("Invalid arguments for generate_video_from_video: ")
    for part in expected:
        assert part in text
    assert sandbox.state.submissions == []


async def test_the_options_each_model_takes_are_in_the_schema(tool_table):
    schema = next(t for t in tool_table.listing() if t.name == "generate_video_from_video").input_schema
    described = schema["properties"]["options"]["description"]
    assert "lucy_edit: enhance_prompt" in described and "animatediff: first_n_seconds" in described
    # the aliases, then their endpoint ids: exactly what the field accepts
    assert schema["properties"]["model"]["enum"] == [
        "animatediff",
        "lucy_edit",
        "fal-ai/fast-animatediff/video-to-video",
        "decart/lucy-edit/pro",
    ]


# -- duration translation ----------------------------------------------------------------------------

DURATIONS = [
    # translator, asked seconds, fields it sends, seconds made, noted
    (endpoints.svd, 2, {"fps": 13}, 25 / 13, True),
    (endpoints.svd, 2.5, {"fps": 10}, 2.5, False),
    (endpoints.svd, 10, {"fps": 10}, 2.5, True),
    (endpoints.kling_t2v, 2, {"duration": "5"}, 5, True),
    (endpoints.kling_t2v, 7, {"duration": "5"}, 5, True),
    (endpoints.kling_t2v, 7.5, {"duration": "5"}, 5, True),  # a tie: the shorter, cheaper one
    (endpoints.kling_t2v, 8, {"duration": "10"}, 10, True),
    (endpoints.kling_i2v, 10, {"duration": "10"}, 10, False),
    (endpoints.animatediff, 2, {"num_frames": 16, "fps": 8}, 2, False),  # its usual 16 frames at 8 fps
    (endpoints.animatediff, 4, {"num_frames": 32, "fps": 8}, 4, False),
    (endpoints.animatediff, 10, {"num_frames": 30, "fps": 3}, 10, False),
    (endpoints.wan_t2v, 2, {"num_frames": 81, "frames_per_second": 24}, 81 / 24, True),
    (endpoints.wan_t2v, 5, {"num_frames": 85, "frames_per_second": 17}, 5, False),
    (endpoints.wan_i2v, 10, {"num_frames": 100, "frames_per_second": 10}, 10, False),
]


@pytest.mark.parametrize("translate, asked, fields, made, noted", DURATIONS)
def test_duration_becomes_what_each_model_reads(translate, asked, fields, made, noted):
    args = SimpleNamespace(prompt="p", image_url="https://example.com/i.png", duration=asked)
    call = translate(args)
    assert {name: call.arguments[name] for name in fields} == fields
    assert call.facts["seconds"] == pytest.approx(made)
    duration_notes = [note for note in call.notes if note.startswith("duration:")]
    assert bool(duration_notes) == noted
    if noted:
        assert f"cannot make {asked:g} s" in duration_notes[0] and f"made {made:.3g} s" in duration_notes[0]


@pytest.mark.parametrize("seconds", range(2, 11))
def test_animatediff_and_wan_make_every_whole_length_they_can_exactly(seconds):
    args = SimpleNamespace(prompt="p", duration=seconds)
    animatediff = endpoints.animatediff(args).arguments
    assert animatediff["num_frames"] / animatediff["fps"] == seconds
    assert animatediff["num_frames"] <= 32 and 1 <= animatediff["fps"] <= 16
    if seconds >= 4:  # 81 frames at 24 fps is Wan's shortest, 3.4 s
        wan = endpoints.wan_t2v(args).arguments
        assert wan["num_frames"] / wan["frames_per_second"] == seconds
        assert 81 <= wan["num_frames"] <= 100 and 5 <= wan["frames_per_second"] <= 24


# -- generate_music -----------------------------------------------------------------------------------

MUSIC_CASES = {
    "musicgen": (
        {"prompt": "lofi beat", "duration_seconds": 12},
        CASSETTE,
        {"prompt": "lofi beat", "duration": 12},
        12,
        [],
    ),
    "musicgen, too short, seed and negative prompt": (
        {"prompt": "lofi", "duration_seconds": 5, "seed": 1, "negative_prompt": "drums"},
        CASSETTE,
        {"prompt": "lofi", "duration": 10},
        10,
        [
            "duration_seconds: musicgen makes 10-180 s, so 10 s was made instead of 5 s",
            "seed was not sent: musicgen takes no seed",
            "negative_prompt was not sent: musicgen takes none",
        ],
    ),
    "musicgen_large": (
        {"prompt": "rain on a roof", "model": "musicgen_large", "duration_seconds": 60},
        STABLE_AUDIO,
        {"prompt": "rain on a roof", "seconds_total": 47},
        47,
        ["musicgen_large makes 1-47 s, so 47 s was made instead of 60 s"],
    ),
    "ace_step": (
        {"prompt": "rock, electric guitar", "model": "ace_step", "duration_seconds": 45, "seed": 8},
        ACE_STEP,
        {"tags": "rock, electric guitar", "duration": 45, "seed": 8},
        45,
        [],
    ),
    "lyria2": (
        {
            "prompt": "strings",
            "model": "lyria2",
            "negative_prompt": "vocals",
            "seed": 6,
            "duration_seconds": 20,
        },
        LYRIA2,
        {"prompt": "strings", "negative_prompt": "vocals", "seed": 6},
        30,
        ["duration_seconds: lyria2 always makes 30 s, so 30 s was made instead of 20 s"],
    ),
}


@pytest.mark.parametrize("case", MUSIC_CASES.values(), ids=MUSIC_CASES.keys())
async def test_generate_music_sends_each_endpoint_its_own_fields_and_the_wav_has_that_length(
    tool_table, sandbox, files, case
):
    arguments, endpoint, expected, seconds, notes = case
    output, text = await call(tool_table, "generate_music", arguments)
    await check_sent(sandbox, output, text, endpoint, expected)
    assert f"Generated {seconds} s of music with {output['model']}" in text
    assert_notes(output, text, notes)
    (audio,) = output["files"]
    assert audio["content_type"] == "audio/wav" and audio["duration"] == seconds
    data = await download(audio["url"])
    assert data[:4] == b"RIFF" and wav_seconds(data) == seconds


# -- refusals -------------------------------------------------------------------------------------------

REFUSALS = [
    ("generate_video", {"prompt": "x", "duration": 11}, ["duration: Input should be less than or equal to"]),
    ("generate_video", {"prompt": "x", "duration": 1}, ["duration: Input should be greater than or equal"]),
    ("generate_video", {"prompt": "x", "aspect_ratio": "4:3"}, ["aspect_ratio: Input should be '16:9'"]),
    ("generate_video", {"prompt": "x", "seed": -1}, ["seed: Input should be greater than or equal to 0"]),
    ("generate_video", {"prompt": "x", "fps": 8}, ["fps: Extra inputs are not permitted"]),
    ("generate_video", {"prompt": "x", "model": "sora"}, ["model: unknown model 'sora'", "kling.t2v"]),
    ("generate_video", {}, ["give image_url", "prompt"]),
    (
        "generate_video",
        {"prompt": "x", "model": "svd"},
        ["image_url: svd (fal-ai/stable-video) animates a starting image", "animatediff, kling, wan"],
    ),
    (
        "generate_video",
        {"image_url": IMAGE, "model": "animatediff"},
        ["image_url: animatediff makes video from text only", "svd, kling, wan"],
    ),
    ("generate_video", {"image_url": IMAGE, "model": "kling"}, ["prompt: kling needs a prompt"]),
    ("generate_video", {"image_url": "/etc/passwd"}, ["image_url: ", "outside the allowed directories"]),
    ("generate_video_from_image", {"image_url": IMAGE}, ["prompt: Field required"]),
    ("generate_video_from_image", {"prompt": "p"}, ["image_url: Field required"]),
    ("generate_video_from_image", {"image_url": IMAGE, "prompt": "p", "duration": 12}, ["duration"]),
    (
        "generate_video_from_image",
        {"image_url": IMAGE, "prompt": "p", "tail_image_url": TAIL, "model": "wan"},
        ["tail_image_url: wan cannot end on a given last frame; use model kling"],
    ),
    (
        "generate_video_from_image",
        {"image_url": IMAGE, "prompt": "p", "tail_image_url": TAIL, "model": "svd"},
        ["tail_image_url: svd cannot end on a given last frame"],
    ),
    # Kling 2.1 Standard's endpoint has no tail_image_url: fal would ignore it.
    (
        "generate_video_from_image",
        {"image_url": IMAGE, "prompt": "p", "tail_image_url": TAIL, "model": "kling"},
        ["tail_image_url: kling cannot end on a given last frame; use model kling_pro"],
    ),
    # Limits of one model, from fal's schema of its endpoint.
    (
        "generate_video_from_image",
        {"image_url": IMAGE, "prompt": "p" * 2501},
        ["prompt: kling takes at most 2500 characters (got 2501)"],
    ),
    (
        "generate_video",
        {"prompt": "x", "negative_prompt": "n" * 2600, "model": "kling.t2v"},
        ["negative_prompt: kling takes at most 2500 characters (got 2600)"],
    ),
    (
        "generate_video_from_video",
        {"video_url": VIDEO, "prompt": "p" * 1501, "model": "lucy_edit"},
        ["prompt: lucy_edit takes at most 1500 characters (got 1501)"],
    ),
    (
        "generate_video_from_video",
        {"video_url": VIDEO, "prompt": "p", "options": {"first_n_seconds": 5}},
        ["options.first_n_seconds: Input should be less than or equal to 4"],
    ),
    (
        "generate_music",
        {"prompt": "x" * 2001, "model": "lyria2"},
        ["prompt: lyria2 takes at most 2000 characters (got 2001)"],
    ),
    ("generate_video_from_video", {"prompt": "p"}, ["video_url: Field required"]),
    (
        "generate_video_from_video",
        {"video_url": VIDEO, "prompt": "p", "strength": 0},
        ["strength: Input should be"],
    ),
    ("generate_video_from_video", {"video_url": VIDEO, "prompt": "p", "options": ["fps"]}, ["options: "]),
    ("generate_music", {"prompt": "x", "duration_seconds": 4}, ["duration_seconds: Input should be greater"]),
    ("generate_music", {"prompt": "x", "duration_seconds": 301}, ["duration_seconds: Input should be less"]),
    ("generate_music", {"prompt": ""}, ["prompt: String should have at least 1 character"]),
    ("generate_music", {"prompt": "x", "duration": 30}, ["duration: Extra inputs are not permitted"]),
    (
        "generate_music",
        {"prompt": "x", "model": "musicgen_melody"},
        ["model: unknown model 'musicgen_melody'", "musicgen_large"],
    ),
]


@pytest.mark.parametrize("tool, arguments, expected", REFUSALS)
async def test_bad_inputs_are_refused_naming_the_field(tool_table, sandbox, files, tool, arguments, expected):
    result = await tool_table.call(tool, fill(arguments, files))
    assert result.is_error
    for part in expected:
        assert part in result.content[0].text
    assert sandbox.state.submissions == []


# -- progress ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tool, arguments",
    [
        ("generate_video", {"prompt": "a queue", "model": "kling"}),
        ("generate_music", {"prompt": "a queue", "duration_seconds": 10}),
    ],
)
async def test_a_queued_job_reports_positions_then_logs_then_done(tool_table, sandbox, tool, arguments):
    # The queue positions pass at the sandbox's pace (0.3 s each, the status stream checks every 0.02 s);
    # the running job is held until its "Running" progress arrives, so that phase is never missed.
    sandbox.state.set_config(queue_step=0.3, job_seconds=0.1, log_lines=3)
    sandbox.state.add_fault(outcome="hold", queue_ahead=3)
    seen = []

    async def report(progress, total, message):
        seen.append((progress, message))
        if message and message.startswith("Running"):
            sandbox.state.release()

    with anyio.fail_after(60):  # a hang guard, not a timing assertion
        await call(tool_table, tool, arguments, report)
    values, messages = [value for value, _ in seen], [message for _, message in seen]
    assert values == sorted(values) and len(set(values)) == len(values)
    queued = [m for m in messages if m.startswith("In queue")]
    running = [m for m in messages if m.startswith("Running")]
    positions = [int(m.rsplit(" ", 1)[1]) for m in queued]
    assert positions and positions == sorted(set(positions), reverse=True) and set(positions) <= {0, 1, 2}
    assert running and messages.index(running[0]) > messages.index(queued[-1])
    assert any(": " in m for m in running), messages  # the model's log lines are passed on
    assert messages[-1] == "Done"


# -- end to end over stdio -----------------------------------------------------------------------------------


@pytest.fixture
def stdio_env(thread_sandbox, tmp_path):
    thread_sandbox.state.reset()
    thread_sandbox.state.set_config(job_seconds=0.1)
    yield server_env({**thread_sandbox.env(), "FAL_MCP_ALLOWED_DIRS": str(tmp_path)})
    thread_sandbox.state.reset()


async def test_every_tool_over_stdio(thread_sandbox, stdio_env, tmp_path):
    import base64

    (tmp_path / "clip.mp4").write_bytes(mp4(2))
    image = "data:image/png;base64," + base64.b64encode(png(320, 180, "purple")).decode()
    calls = [
        ("generate_video", {"prompt": "a paper boat", "model": "kling", "duration": 10}, KLING_T2V, 10),
        (
            "generate_video_from_image",
            {"image_url": image, "prompt": "the boat sails", "model": "wan", "duration": 5},
            WAN_I2V,
            5,
        ),
        (
            "generate_video_from_video",
            {
                "video_url": str(tmp_path / "clip.mp4"),
                "prompt": "watercolour",
                "options": {"first_n_seconds": 2},
            },
            ANIMATEDIFF_V2V,
            2,
        ),
        ("generate_music", {"prompt": "sea shanty", "duration_seconds": 15}, CASSETTE, 15),
    ]
    async with stdio_client(["serve"], stdio_env) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        model = tools["generate_video"].input_schema["properties"]["model"]
        assert model["enum"][:6] == ["svd", "animatediff", "kling", "kling.t2v", "wan", "wan.t2v"]
        assert model["default"] == "svd"
        assert tools["generate_music"].input_schema["properties"]["model"]["enum"][:4] == [
            "musicgen",
            "musicgen_large",
            "ace_step",
            "lyria2",
        ]
        progress: list[str] = []

        async def on_progress(value, total, message):
            progress.append(message)

        for name, arguments, endpoint, seconds in calls:
            progress.clear()
            result = await client.call_tool(name, arguments, progress_callback=on_progress)
            assert not result.is_error, result.content[0].text
            output = result.structured_content
            (sent,) = [s for s in thread_sandbox.state.submissions if s["request_id"] == output["request_id"]]
            assert sent["endpoint_id"] == endpoint == output["endpoint"]
            # fal's own statuses depend on how far the job got before it was followed; these two do not
            assert progress[0].startswith("Recorded as job") and progress[-1] == "Done", progress
            (file,) = output["files"]
            links = [c for c in result.content if c.type == "resource_link"]
            assert [(str(link.uri), link.mime_type) for link in links] == [
                (file["url"], file["content_type"])
            ]
            data = await download(file["url"])
            if name == "generate_music":
                assert sent["input"] == {"prompt": "sea shanty", "duration": 15}
                assert wav_seconds(data) == seconds
            else:
                assert_mp4(data, seconds)
        # the data: URI and the local file were uploaded to the sandbox's storage first
        cdn = thread_sandbox.env()["FAL_MCP_CDN_URL"]
        inputs = [s["input"] for s in thread_sandbox.state.submissions]
        assert inputs[1]["image_url"].startswith(cdn) and inputs[2]["video_url"].startswith(cdn)


@pytest.mark.parametrize(
    "tool, arguments",
    [
        ("generate_video", {"prompt": "never ends", "model": "kling.t2v", "duration": 10}),
        ("generate_music", {"prompt": "never ends", "model": "ace_step"}),
    ],
)
async def test_cancelling_over_stdio_cancels_the_fal_request(thread_sandbox, stdio_env, tool, arguments):
    thread_sandbox.state.add_fault(outcome="never_finish")
    async with stdio_client(["serve"], stdio_env) as client:
        running = anyio.Event()

        async def on_progress(value, total, message):
            if message and message.startswith("Running"):
                running.set()

        async with anyio.create_task_group() as group:
            group.start_soon(lambda: client.call_tool(tool, arguments, progress_callback=on_progress))
            with anyio.fail_after(60):  # a hang guard, not a timing assertion
                await running.wait()
            group.cancel_scope.cancel()
        request_id = thread_sandbox.state.submissions[-1]["request_id"]
        with anyio.fail_after(60):  # a hang guard, not a timing assertion
            while request_id not in thread_sandbox.state.cancels:
                await anyio.sleep(0.05)
        # the server is still there for the next call
        result = await client.call_tool("generate_music", {"prompt": "after", "duration_seconds": 10})
        assert not result.is_error, result.content[0].text
    assert thread_sandbox.state.cancels == [request_id]
