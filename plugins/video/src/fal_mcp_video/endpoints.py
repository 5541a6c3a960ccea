"""The fal video endpoints the tools offer: one translator each, in the endpoint's own field
names, shared by every tool that offers the endpoint, and the offline price hints."""

from __future__ import annotations

from typing import Any

from fal_mcp import PriceHint

from .translate import Request, VideoCall, choice_duration, frames_and_fps

STABLE_VIDEO = "fal-ai/stable-video"
ANIMATEDIFF_T2V = "fal-ai/fast-animatediff/text-to-video"
ANIMATEDIFF_V2V = "fal-ai/fast-animatediff/video-to-video"
KLING_I2V = "fal-ai/kling-video/v2.1/standard/image-to-video"
KLING_T2V = "fal-ai/kling-video/v2.1/master/text-to-video"
WAN_I2V = "fal-ai/wan-i2v"
WAN_T2V = "fal-ai/wan-t2v"
LUCY_EDIT = "decart/lucy-edit/dev"

NO_LAST_FRAME = "cannot end on a given last frame; use model kling for that"
FOLLOWS_IMAGE = "keeps the starting image's aspect ratio"
NO_SEED = "takes no seed"

# AnimateDiff's video_size presets (its default, "square", is 512x512).
ANIMATEDIFF_SIZE = {"1:1": "square", "16:9": "landscape_16_9", "9:16": "portrait_16_9"}


def svd(args: Any) -> VideoCall:
    """Stable Video Diffusion always makes 25 frames: the frame rate sets the length."""
    req = Request("svd", args)
    req.refuse("tail_image_url", NO_LAST_FRAME)
    req.copy("image_url", "seed")
    frames_and_fps(req, frames=(25, 25), fps=(10, 100), usual_fps=25, frames_field=None)
    req.drop("prompt", "animates the image without a prompt")
    req.drop("negative_prompt", "takes no negative prompt")
    req.drop("aspect_ratio", FOLLOWS_IMAGE)
    return req.call()


def animatediff(args: Any) -> VideoCall:
    req = Request("animatediff", args)
    req.copy("prompt", "negative_prompt", "seed")
    frames_and_fps(req, frames=(1, 32), fps=(1, 16), usual_fps=8)
    req.send(video_size=ANIMATEDIFF_SIZE.get(req.get("aspect_ratio")))
    return req.call()


def kling_i2v(args: Any) -> VideoCall:
    req = Request("kling", args)
    req.require("prompt", "needs a prompt describing the motion")
    req.copy("prompt", "image_url", "tail_image_url", "negative_prompt")
    choice_duration(req, (5, 10))
    req.drop("aspect_ratio", FOLLOWS_IMAGE)
    req.drop("seed", NO_SEED)
    return req.call()


def kling_t2v(args: Any) -> VideoCall:
    req = Request("kling", args)
    req.copy("prompt", "aspect_ratio", "negative_prompt")
    choice_duration(req, (5, 10))
    req.drop("seed", NO_SEED)
    return req.call()


def _wan(req: Request) -> VideoCall:
    req.copy("prompt", "negative_prompt", "seed")
    frames_and_fps(req, frames=(81, 100), fps=(5, 24), usual_fps=16, fps_field="frames_per_second")
    return req.call()


def wan_i2v(args: Any) -> VideoCall:
    req = Request("wan", args)
    req.require("prompt", "needs a prompt describing the motion")
    req.refuse("tail_image_url", NO_LAST_FRAME)
    req.copy("image_url", "aspect_ratio")
    return _wan(req)


def wan_t2v(args: Any) -> VideoCall:
    req = Request("wan", args)
    if req.get("aspect_ratio") in ("16:9", "9:16"):
        req.copy("aspect_ratio")
    else:
        req.drop("aspect_ratio", "makes only 16:9 and 9:16 from text")
    return _wan(req)


# Offline hints only; live prices come from fal's pricing API.
PRICES = [
    PriceHint(STABLE_VIDEO, 0.075, "video"),
    PriceHint(ANIMATEDIFF_T2V, 0.02, "video"),
    PriceHint(ANIMATEDIFF_V2V, 0.02, "video"),
    PriceHint(KLING_I2V, 0.056, "second"),
    PriceHint(KLING_T2V, 0.28, "second"),
    PriceHint(WAN_I2V, 0.4, "video"),
    PriceHint(WAN_T2V, 0.4, "video"),
    PriceHint(LUCY_EDIT, 0.04, "second"),
]
