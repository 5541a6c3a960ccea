"""The fal video endpoints the tools offer: one translator each, in the endpoint's own field
names, shared by every tool that offers the endpoint, and the offline price hints. Each
endpoint's limits (lengths, frame counts, frame rates, duration choices) come from its schema,
vendored in schemas/."""

from __future__ import annotations

from typing import Any

from fal_mcp import EndpointCall, EndpointInput, PriceHint

from .translate import PACKAGE, choice_duration, frames_and_fps

STABLE_VIDEO = "fal-ai/stable-video"
ANIMATEDIFF_T2V = "fal-ai/fast-animatediff/text-to-video"
ANIMATEDIFF_V2V = "fal-ai/fast-animatediff/video-to-video"
KLING_I2V = "fal-ai/kling-video/v2.1/standard/image-to-video"
KLING_PRO_I2V = "fal-ai/kling-video/v2.1/pro/image-to-video"
KLING_T2V = "fal-ai/kling-video/v2.1/master/text-to-video"
WAN_I2V = "fal-ai/wan-i2v"
WAN_T2V = "fal-ai/wan-t2v"
# decart/lucy-edit/dev is gone from fal (no longer in fal-js's endpoint list); pro takes the same fields.
LUCY_EDIT = "decart/lucy-edit/pro"

NO_LAST_FRAME = "cannot end on a given last frame; use model kling_pro for that"
FOLLOWS_IMAGE = "keeps the starting image's aspect ratio"
NO_SEED = "takes no seed"
SVD_FRAMES = 25  # Stable Video Diffusion always makes 25 frames (not an input of the endpoint)

# AnimateDiff's video_size presets (its default, "square", is 512x512).
ANIMATEDIFF_SIZE = {"1:1": "square", "16:9": "landscape_16_9", "9:16": "portrait_16_9"}

# How each endpoint's fields follow from the tools' arguments, where the names differ (for messages).
DURATION_FIELDS = {
    "duration": "duration",
    "num_frames": "duration",
    "fps": "duration",
    "frames_per_second": "duration",
    "video_size": "aspect_ratio",
}


def svd(args: Any) -> EndpointCall:
    """Stable Video Diffusion always makes 25 frames: the frame rate sets the length."""
    req = EndpointInput(args, "svd", STABLE_VIDEO, PACKAGE)
    req.refuse("tail_image_url", NO_LAST_FRAME)
    req.copy("image_url", "seed")
    frames_and_fps(req, usual_fps=25, frames_field=None, fixed_frames=SVD_FRAMES)
    req.drop("prompt", "animates the image without a prompt")
    req.drop("negative_prompt", "takes no negative prompt")
    req.drop("aspect_ratio", FOLLOWS_IMAGE)
    return req.call()


def animatediff(args: Any) -> EndpointCall:
    req = EndpointInput(args, "animatediff", ANIMATEDIFF_T2V, PACKAGE)
    req.copy("prompt", "negative_prompt", "seed")
    frames_and_fps(req, usual_fps=8)
    req.send(video_size=ANIMATEDIFF_SIZE.get(req.get("aspect_ratio")))
    return req.call()


def _kling_i2v(req: EndpointInput) -> EndpointCall:
    req.require("prompt", "needs a prompt describing the motion")
    req.copy("prompt", "image_url", "negative_prompt")
    choice_duration(req)
    req.drop("aspect_ratio", FOLLOWS_IMAGE)
    req.drop("seed", NO_SEED)
    return req.call()


def kling_i2v(args: Any) -> EndpointCall:
    """Kling 2.1 Standard: no last frame (its endpoint has no tail_image_url; fal would ignore one)."""
    req = EndpointInput(args, "kling", KLING_I2V, PACKAGE)
    req.refuse("tail_image_url", NO_LAST_FRAME)
    return _kling_i2v(req)


def kling_pro_i2v(args: Any) -> EndpointCall:
    req = EndpointInput(args, "kling_pro", KLING_PRO_I2V, PACKAGE)
    req.copy("tail_image_url")
    return _kling_i2v(req)


def kling_t2v(args: Any) -> EndpointCall:
    req = EndpointInput(args, "kling", KLING_T2V, PACKAGE)
    req.copy("prompt", "aspect_ratio", "negative_prompt")
    choice_duration(req)
    req.drop("seed", NO_SEED)
    return req.call()


def _wan(req: EndpointInput) -> EndpointCall:
    req.copy("prompt", "negative_prompt", "seed")
    frames_and_fps(req, usual_fps=16, fps_field="frames_per_second")
    return req.call()


def wan_i2v(args: Any) -> EndpointCall:
    req = EndpointInput(args, "wan", WAN_I2V, PACKAGE)
    req.require("prompt", "needs a prompt describing the motion")
    req.refuse("tail_image_url", NO_LAST_FRAME)
    req.copy("image_url", "aspect_ratio")
    return _wan(req)


def wan_t2v(args: Any) -> EndpointCall:
    req = EndpointInput(args, "wan", WAN_T2V, PACKAGE)
    shapes = req.choices("aspect_ratio")
    if req.get("aspect_ratio") in shapes:
        req.copy("aspect_ratio")
    else:
        req.drop("aspect_ratio", f"makes only {' and '.join(sorted(shapes))} from text")
    return _wan(req)


# Offline hints only; live prices come from fal's pricing API.
PRICES = [
    PriceHint(STABLE_VIDEO, 0.075, "video"),
    PriceHint(ANIMATEDIFF_T2V, 0.02, "video"),
    PriceHint(ANIMATEDIFF_V2V, 0.02, "video"),
    PriceHint(KLING_I2V, 0.056, "second"),
    PriceHint(KLING_PRO_I2V, 0.098, "second"),
    PriceHint(KLING_T2V, 0.28, "second"),
    PriceHint(WAN_I2V, 0.4, "video"),
    PriceHint(WAN_T2V, 0.4, "video"),
    PriceHint(LUCY_EDIT, 0.04, "second"),  # lucy-edit/dev's price, not checked for pro
]
