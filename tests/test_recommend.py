"""recommend_model on a labelled set of task phrasings: the right tool (and model, where one is clearly
right) must come first. Run with `pytest -s` to see the accuracy and every miss."""

from __future__ import annotations

import pytest

from fal_mcp_utility.recommend_model import stems

pytestmark = pytest.mark.anyio

# (task, expected tool, expected model alias or None when any of the tool's models will do)
CASES: list[tuple[str, str, str | None]] = [
    # generate_image
    ("a watercolor painting of a fox in the snow", "generate_image", None),
    ("photorealistic product photo of a perfume bottle on marble", "generate_image", "flux_pro"),
    ("quick cheap draft of a fantasy castle illustration", "generate_image", "flux_schnell"),
    ("design a poster with the text 'Summer Sale' in bold letters", "generate_image", "stable_diffusion"),
    ("create a logo for my coffee shop", "generate_image", "stable_diffusion"),
    ("generate a picture of a cat wearing a space helmet", "generate_image", None),
    ("high quality portrait photo of an elderly fisherman", "generate_image", "flux_pro"),
    ("make an image of a cyberpunk city at night", "generate_image", None),
    # generate_image_structured
    (
        "build the image from a structured scene: subjects, pose, lighting, camera lens and colour palette",
        "generate_image_structured",
        None,
    ),
    (
        "I want to set the camera angle, lens, f-number and lighting of the shot separately",
        "generate_image_structured",
        None,
    ),
    (
        "describe the picture field by field: the scene, two subjects with their poses, a hex colour palette",
        "generate_image_structured",
        None,
    ),
    (
        "lay out a scene with a knight in the foreground, a castle in the background, golden hour "
        "lighting and a 35mm lens",
        "generate_image_structured",
        None,
    ),
    # generate_image_from_image
    ("turn this photo into a watercolor painting", "generate_image_from_image", None),
    ("redraw my rough sketch as a finished digital painting", "generate_image_from_image", "flux_dev_i2i"),
    ("make a few variations of this image", "generate_image_from_image", "flux_dev_i2i"),
    ("restyle my selfie as a pixar character", "generate_image_from_image", None),
    (
        "use this picture as the starting point for a new image with the same layout",
        "generate_image_from_image",
        None,
    ),
    # edit_image
    ("add sunglasses to the man in this photo", "edit_image", None),
    ("change the color of her dress to red", "edit_image", None),
    ("make it night time in this picture", "edit_image", None),
    ("remove the person in the background of my photo", "edit_image", None),
    ("replace the background of this photo with a sunny beach", "edit_image", None),
    ("fix the text on the shop sign in this image and keep the font", "edit_image", "kontext"),
    ("keep the same face but give him a different hairstyle", "edit_image", "kontext"),
    # inpaint_image
    ("inpaint the masked area with flowers", "inpaint_image", None),
    ("I have a mask: repaint only the white region with a wooden table", "inpaint_image", None),
    ("fill in the selected area of the image with grass", "inpaint_image", None),
    # remove_background
    ("remove background from product photo", "remove_background", "birefnet"),
    ("remove the background", "remove_background", None),
    ("make the background transparent", "remove_background", None),
    ("cut out the person from this headshot", "remove_background", "birefnet_portrait"),
    ("I need a transparent PNG of my sneaker with no background", "remove_background", None),
    ("background removal for an online shop catalogue", "remove_background", None),
    ("isolate the subject from its background", "remove_background", None),
    # upscale_image
    ("make this photo 4x bigger", "upscale_image", None),
    ("upscale this image for print", "upscale_image", "clarity"),
    ("increase the resolution of this blurry picture", "upscale_image", None),
    ("fast 4x super-resolution of a screenshot", "upscale_image", "aura_sr"),
    ("enhance this low-res photo to HD", "upscale_image", None),
    # resize_image
    ("make a 9:16 version for instagram story", "resize_image", None),
    ("resize my banner for a youtube thumbnail", "resize_image", None),
    ("change the aspect ratio of this photo to 16:9", "resize_image", None),
    ("extend the image so it fits a tiktok video", "resize_image", None),
    ("crop this picture to a square for an instagram post", "resize_image", None),
    ("uncrop the photo and expand the canvas on both sides", "resize_image", "outpaint"),
    # compose_images
    ("put my logo on the corner of this image", "compose_images", None),
    ("add a watermark to my photos", "compose_images", None),
    ("overlay a sticker in the center of the picture", "compose_images", None),
    ("place the brand logo at the bottom right with 50% opacity", "compose_images", None),
    # generate_video
    ("a 10 second cinematic video of waves crashing on a cliff", "generate_video", "kling"),
    ("make a short video of a dancing robot", "generate_video", None),
    ("a quick cheap cartoon gif of a bouncing ball", "generate_video", "animatediff"),
    ("text to video: a drone shot over a misty forest", "generate_video", None),
    ("create a clip of a cat playing the piano", "generate_video", None),
    # generate_video_from_image
    ("animate this picture", "generate_video_from_image", None),
    ("bring this old photo to life with subtle motion", "generate_video_from_image", "svd"),
    ("a video that morphs from a first frame to a last frame", "generate_video_from_image", "kling_pro"),
    ("turn my product shot into a 5 second video", "generate_video_from_image", None),
    ("image to video of my painting, the water should move", "generate_video_from_image", None),
    # generate_video_from_video
    ("turn my clip into anime style", "generate_video_from_video", "animatediff"),
    ("change the clothes of the person in this video", "generate_video_from_video", "lucy_edit"),
    ("restyle my footage as a van gogh painting", "generate_video_from_video", None),
    ("edit this video so the car is red", "generate_video_from_video", "lucy_edit"),
    ("apply a claymation look to my existing video", "generate_video_from_video", None),
    # generate_music
    ("background music for a vlog", "generate_music", None),
    ("a song with lyrics about summer love", "generate_music", "ace_step"),
    ("orchestral cinematic soundtrack for a movie trailer", "generate_music", "lyria2"),
    ("a short sound effect of a door creaking", "generate_music", "musicgen_large"),
    ("lofi hip hop beat to study to", "generate_music", None),
    ("an upbeat jingle for my podcast intro", "generate_music", None),
    ("ambient loop for a game menu", "generate_music", "musicgen_large"),
]

# A check that the ranking generalises rather than fits CASES: phrasings written before the ranking
# was reworked (the first 29) or before the fixes those prompted (the last 25). Where one showed a
# miss or a near-tie, its cause was fixed in general (a stemming gap, filler words in tool
# descriptions, the input of "video from image" read as its output, a missing verb such as "double
# the size"), never the phrase. One task no tool's words fit ("a birthday card design that says
# ...") gets no recommendation: an honest miss, kept.
HELD_OUT: list[tuple[str, str, str | None]] = [
    ("generate a realistic photo of a red sports car on a mountain road", "generate_image", None),
    ("an anime style illustration of a girl with a sword", "generate_image", None),
    ("make me a birthday card design that says Happy Birthday Anna", "generate_image", None),
    (
        "scene description with three subjects, dramatic lighting and a wide-angle camera",
        "generate_image_structured",
        None,
    ),
    ("convert my drawing into a realistic photo", "generate_image_from_image", None),
    ("change the sky in this photo to a sunset", "edit_image", None),
    ("erase the power lines from this picture", "edit_image", None),
    ("add a red scarf to the snowman in my image", "edit_image", None),
    ("repaint the area under the mask with a window", "inpaint_image", None),
    ("delete the background of my product shot", "remove_background", None),
    ("give me a cutout of this dog with a transparent background", "remove_background", None),
    ("upscale my old family photo", "upscale_image", None),
    ("I need this logo in a higher resolution", "upscale_image", None),
    ("double the size of this image without losing quality", "upscale_image", None),
    ("resize this photo for a linkedin post", "resize_image", None),
    ("fit my picture into a pinterest pin format", "resize_image", None),
    ("make this landscape photo vertical for tiktok", "resize_image", None),
    ("stamp our company logo on every product photo", "compose_images", None),
    ("add my signature watermark in the bottom left corner", "compose_images", None),
    ("a video of a rocket launching into space", "generate_video", None),
    ("an animated gif of a spinning coin", "generate_video", None),
    ("make this still image move", "generate_video_from_image", None),
    ("create a video starting from this photo of the beach", "generate_video_from_image", None),
    ("convert my video into a cartoon", "generate_video_from_video", None),
    ("swap the background in my video for a beach", "generate_video_from_video", None),
    ("relaxing piano music for meditation", "generate_music", None),
    ("a rap song about pizza with vocals", "generate_music", "ace_step"),
    ("sound effects for an explosion", "generate_music", "musicgen_large"),
    ("theme music for my youtube channel", "generate_music", None),
    ("can you generate a cozy cabin in the woods at dusk, photorealistic", "generate_image", None),
    ("I need a flat vector icon of a rocket", "generate_image", None),
    ("a movie poster with the title 'Night Run' in big letters", "generate_image", "stable_diffusion"),
    (
        "set up the shot: subject on the left, soft rim lighting, shallow depth of field, 85mm lens",
        "generate_image_structured",
        None,
    ),
    ("take my photo and redo it in the style of a comic book", "generate_image_from_image", None),
    ("remove the car from this street photo", "edit_image", None),
    ("make her smile in this portrait", "edit_image", None),
    ("swap the sky for a starry night in my picture", "edit_image", None),
    ("paint over the masked region with a blue door", "inpaint_image", None),
    ("strip the background off these product images", "remove_background", None),
    ("I want just the cat, with a transparent background", "remove_background", None),
    ("this image is too small, make it high resolution", "upscale_image", None),
    ("sharpen and enlarge my old scanned photo", "upscale_image", None),
    ("turn my landscape photo into a vertical 9:16 story", "resize_image", None),
    ("make my photo fit a youtube thumbnail", "resize_image", None),
    ("add our logo as a watermark in the top left", "compose_images", None),
    ("a short clip of fireworks over a city", "generate_video", None),
    ("generate a 5 second video of a horse running on a beach", "generate_video", None),
    ("animate my illustration with gentle wind", "generate_video_from_image", None),
    ("turn this video into a watercolor style", "generate_video_from_video", None),
    ("make my footage look like a pixar movie", "generate_video_from_video", None),
    ("epic orchestral music for a fantasy game", "generate_music", None),
    ("write a song about the ocean with female vocals", "generate_music", "ace_step"),
    ("calm ambient background music for a yoga class", "generate_music", None),
    ("a whoosh sound effect", "generate_music", "musicgen_large"),
]

# Wordings the ranking once got wrong or that pull two ways: each must be right at the top.
MUST_BE_FIRST = [
    "remove background from product photo",
    "background music for a vlog",
    "remove the background",
    "make this photo 4x bigger",
    "animate this picture",
    "turn my clip into anime style",
    "put my logo on the corner of this image",
    "make a 9:16 version for instagram story",
    "remove the person in the background of my photo",
    "orchestral cinematic soundtrack for a movie trailer",
]

GENERATION_TOOLS = {
    "generate_image",
    "generate_image_structured",
    "generate_image_from_image",
    "edit_image",
    "inpaint_image",
    "remove_background",
    "upscale_image",
    "resize_image",
    "compose_images",
    "generate_video",
    "generate_video_from_image",
    "generate_video_from_video",
    "generate_music",
}


def tool_and_alias(recommended: dict) -> tuple[str | None, str | None]:
    """The tool and model alias of one recommendation ("tool:alias", or a tool with no model to pick)."""
    tool, _, alias = recommended["model"].partition(":")
    if recommended.get("tool"):
        return recommended["tool"], alias or None
    return (tool, alias) if alias else (None, None)


def matches(recommended: dict, tool: str, alias: str | None) -> bool:
    got_tool, got_alias = tool_and_alias(recommended)
    return got_tool == tool and (alias is None or got_alias == alias)


async def ranked(table, task: str) -> list[dict]:
    result = await table.call("recommend_model", {"task": task, "limit": 5})
    assert not result.is_error, result.content[0].text
    return result.structured_content["recommendations"]


def test_the_set_covers_every_generation_tool():
    assert {tool for _, tool, _ in CASES} == GENERATION_TOOLS
    assert len(CASES) >= 40 and len({task for task, _, _ in CASES}) == len(CASES)
    assert not {task for task, _, _ in CASES} & {task for task, _, _ in HELD_OUT}
    assert set(MUST_BE_FIRST) <= {task for task, _, _ in CASES}


async def score(table, cases: list[tuple[str, str, str | None]], label: str) -> tuple[float, float, str]:
    """Top-1 and top-3 accuracy on `cases`, printed (pytest -s) with every miss."""
    first = top3 = 0
    misses = []
    for task, tool, alias in cases:
        found = await ranked(table, task)
        at = next((n for n, item in enumerate(found) if matches(item, tool, alias)), None)
        first += at == 0
        top3 += at is not None and at < 3
        if at != 0:
            got = ", ".join(item["model"] for item in found[:3]) or "nothing"
            misses.append(f"  {task!r}: want {tool}:{alias or '*'}, at {at}; top 3: {got}")
    total = len(cases)
    print(
        f"\nrecommend_model on {total} {label}: top-1 {first}/{total} ({first / total:.0%}), "
        f"top-3 {top3}/{total} ({top3 / total:.0%})"
    )
    print("\n".join(misses))
    return first / total, top3 / total, "\n".join(misses)


async def test_recommend_model_accuracy(tool_table, registry):
    assert GENERATION_TOOLS <= set(registry.tools)
    first, top3, misses = await score(tool_table, CASES, "labelled tasks")
    assert first >= 0.9 and top3 == 1, misses


async def test_recommend_model_generalises(tool_table):
    first, top3, misses = await score(tool_table, HELD_OUT, "held-out tasks")
    assert first >= 0.85 and top3 >= 0.9, misses


def test_every_advice_keyword_can_match(registry):
    """A keyword made only of small words ("make it") would never match anything."""
    dead = [(a.model, k) for a in registry.recommendations for k in a.keywords if not stems(k)]
    assert not dead


async def test_tricky_wordings_come_first(tool_table):
    expected = {task: (tool, alias) for task, tool, alias in CASES}
    for task in MUST_BE_FIRST:
        top = (await ranked(tool_table, task))[0]
        assert matches(top, *expected[task]), (task, top)


async def test_an_unrelated_task_gets_no_confident_answer(tool_table):
    result = await tool_table.call("recommend_model", {"task": "write me a poem"})
    assert not result.is_error
    assert result.structured_content["recommendations"] == []
    assert "No model matched" in result.content[0].text
