"""generate_video: a video from a starting image, or from a prompt alone.

Each alias of the original API (svd, animatediff, kling) names a family with an
image-to-video and/or a text-to-video endpoint. Each endpoint is its own registered
Model: the family's alias for the first, "<alias>.t2v" for a family that has both.
The image decides which one runs, so `model="kling"` works with or without an image.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from fal_mcp import (
    ArgumentError,
    GenerationOutput,
    MediaUrl,
    Model,
    Recommendation,
    Tool,
    ToolContext,
    ToolInput,
    ToolResult,
)

from . import endpoints
from .translate import AspectRatio, video_result


class GenerateVideoInput(ToolInput):
    image_url: MediaUrl | None = Field(
        None,
        description=("The first frame; without it, text-to-video"),
    )
    prompt: str | None = Field(None, min_length=1, max_length=10_000, description="Needed without an image")
    model: str | None = Field(None, description="Model to use.")
    duration: float = Field(4, ge=2, le=10, description="Seconds")
    negative_prompt: str | None = Field(None, max_length=10_000)
    aspect_ratio: AspectRatio | None = Field(None, description="text-to-video only")
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


def _model(alias: str, endpoint_id: str, description: str, translator, default: bool = False) -> Model:
    return Model(
        alias,
        endpoint_id,
        "generate_video",
        description,
        translator,
        default=default,
        field_arguments=endpoints.DURATION_FIELDS,
    )


@dataclass(frozen=True)
class Family:
    name: str
    image_to_video: Model | None
    text_to_video: Model | None

    @property
    def models(self) -> list[Model]:
        return [m for m in (self.image_to_video, self.text_to_video) if m is not None]


FAMILIES = [
    Family(
        "svd",
        _model(
            "svd",
            endpoints.STABLE_VIDEO,
            "Stable Video Diffusion: image only, up to 2.5 s",
            endpoints.svd,
            default=True,
        ),
        None,
    ),
    Family(
        "animatediff",
        None,
        _model(
            "animatediff",
            endpoints.ANIMATEDIFF_T2V,
            "AnimateDiff: short stylised clips, text only",
            endpoints.animatediff,
        ),
    ),
    Family(
        "kling",
        _model(
            "kling",
            endpoints.KLING_I2V,
            "Kling 2.1: image or text (kling.t2v)",
            endpoints.kling_i2v,
        ),
        _model("kling.t2v", endpoints.KLING_T2V, "Kling 2.1 Master: text, 5 or 10 s", endpoints.kling_t2v),
    ),
    Family(
        "wan",
        _model(
            "wan",
            endpoints.WAN_I2V,
            "Wan 2.1: image or text (wan.t2v)",
            endpoints.wan_i2v,
        ),
        _model("wan.t2v", endpoints.WAN_T2V, "Wan 2.1: text", endpoints.wan_t2v),
    ),
]
MODELS = [model for family in FAMILIES for model in family.models]
FAMILY_OF = {model.alias: family for family in FAMILIES for model in family.models}
# What a prompt-only call without a model runs, since the default (svd) needs an image.
TEXT_TO_VIDEO_DEFAULT = "animatediff"

RECOMMENDATIONS = [
    Recommendation(
        "kling",
        ("cinematic", "realistic", "high quality", "video"),
        "Kling 2.1: the most realistic motion of the pack, 5 or 10 s, with or without an image",
        "video",
        weight=1.5,
    ),
    Recommendation(
        "svd",
        ("image to video", "subtle motion", "short", "cheap"),
        "Stable Video Diffusion: a cheap, short (up to 2.5 s) animation of an image",
        "video",
    ),
    Recommendation(
        endpoints.ANIMATEDIFF_T2V,
        ("fast", "cheap", "draft", "anime", "cartoon", "gif", "loop"),
        "AnimateDiff: fast, cheap stylised clips from text",
        "video",
    ),
    Recommendation(
        "wan",
        ("open source", "image to video", "text to video", "longer"),
        "Wan 2.1: open model, 3.4-20 s at 5-24 fps",
        "video",
    ),
]


def _names(kind: str) -> str:
    return ", ".join(f.name for f in FAMILIES if getattr(f, kind) is not None)


def choose(ctx: ToolContext, args: GenerateVideoInput) -> tuple[Model, list[str]]:
    """The endpoint to run: the asked family's image-to-video one with an image, else its text-to-video
    one. A prompt-only call without a model falls back to the default text-to-video model."""
    asked = ctx.model(args.model)
    family = FAMILY_OF.get(asked.alias)
    if family is None:  # a model another pack added to this tool: run it as asked
        return asked, []
    with_image = args.image_url is not None
    chosen = family.image_to_video if with_image else family.text_to_video
    if chosen is None and with_image:
        raise ArgumentError(
            "image_url",
            f"{asked.alias} makes video from text only; leave out image_url, or "
            f"pick a model that animates images: {_names('image_to_video')}",
        )
    if chosen is None and args.model is not None:
        raise ArgumentError(
            "image_url",
            f"{asked.alias} ({asked.endpoint_id}) animates a starting image; give "
            f"image_url, or pick a text-to-video model: {_names('text_to_video')}",
        )
    if chosen is None:  # the default needs an image and none was given
        chosen = ctx.model(TEXT_TO_VIDEO_DEFAULT)
        return chosen, [
            f"no image_url was given and the default model {asked.alias} animates images, so the "
            f"text-to-video model {chosen.alias} ({chosen.endpoint_id}) was used"
        ]
    chosen = ctx.model(chosen.alias)  # the registered model (the registry fills in its category)
    if chosen.alias != asked.alias:
        given, kind = ("an image was", "image-to-video") if with_image else ("no image was", "text-to-video")
        return chosen, [
            f"{given} given, so {family.name}'s {kind} endpoint {chosen.alias} "
            f"({chosen.endpoint_id}) was used"
        ]
    return chosen, []


async def generate_video(args: GenerateVideoInput, ctx: ToolContext) -> ToolResult:
    if args.image_url is None and not args.prompt:
        raise ArgumentError(
            "image_url", "give image_url (to animate an image), prompt (to make a video from text), or both"
        )
    model, notes = choose(ctx, args)
    result, call = await ctx.run_model(model, args)
    action = "Animated the image into" if args.image_url else "Generated"
    return video_result(action, model, result, call, notes)


TOOL = Tool(
    name="generate_video",
    title="Generate video",
    description=("Generate a short video from a prompt, or from a starting image and a prompt."),
    input_model=GenerateVideoInput,
    handler=generate_video,
    output_model=GenerationOutput,
    category="video",
    model_field="model",
)
