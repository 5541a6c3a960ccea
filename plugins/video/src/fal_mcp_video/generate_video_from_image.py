"""generate_video_from_image: animate an image with a prompt, optionally ending on a last frame."""

from __future__ import annotations

from pydantic import Field

from fal_mcp import (
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


class GenerateVideoFromImageInput(ToolInput):
    image_url: MediaUrl = Field(description="The first frame")
    prompt: str = Field(min_length=1, max_length=10_000, description="The motion to show")
    tail_image_url: MediaUrl | None = Field(
        None,
        description=("The last frame (kling_pro)"),
    )
    model: str | None = Field(None, description="Model to use.")
    duration: float = Field(5, ge=2, le=10, description="Seconds")
    aspect_ratio: AspectRatio | None = Field(None, description="wan only")
    negative_prompt: str | None = Field(None, max_length=10_000)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


def _model(alias: str, endpoint_id: str, description: str, translator, default: bool = False) -> Model:
    return Model(
        alias,
        endpoint_id,
        "generate_video_from_image",
        description,
        translator,
        default=default,
        field_arguments=endpoints.DURATION_FIELDS,
    )


MODELS = [
    _model(
        "kling",
        endpoints.KLING_I2V,
        "Kling 2.1 Standard: 5 or 10 s",
        endpoints.kling_i2v,
        default=True,
    ),
    _model(
        "kling_pro",
        endpoints.KLING_PRO_I2V,
        "Kling 2.1 Pro: 5 or 10 s, takes a last frame (tail_image_url)",
        endpoints.kling_pro_i2v,
    ),
    _model(
        "wan",
        endpoints.WAN_I2V,
        "Wan 2.1 image-to-video: 3.4-20 s, takes aspect_ratio and seed",
        endpoints.wan_i2v,
    ),
    _model("svd", endpoints.STABLE_VIDEO, "Stable Video Diffusion: up to 2.5 s, no prompt", endpoints.svd),
]

RECOMMENDATIONS = [
    Recommendation(
        "generate_video_from_image",
        ("animate", "image to video", "bring to life", "move", "motion", "moving"),
        "Animates an image into a video, guided by a prompt",
        "video",
    ),
    Recommendation(
        "kling_pro",
        ("first frame", "last frame", "keyframes", "transition", "morph"),
        "Kling 2.1 Pro animates from a first to a last frame (tail_image_url)",
        "video",
    ),
]
# What runs when a last frame is given and no model is: the default (Kling Standard) takes none.
LAST_FRAME_MODEL = "kling_pro"


async def generate_video_from_image(args: GenerateVideoFromImageInput, ctx: ToolContext) -> ToolResult:
    model, notes = ctx.model(args.model), []
    takes_last_frame = "tail_image_url" in (model.input_schema() or {}).get("properties", {})
    if args.model is None and args.tail_image_url is not None and not takes_last_frame:
        default, model = model, ctx.model(LAST_FRAME_MODEL)
        notes.append(
            f"a last frame (tail_image_url) was given and the default model {default.alias} takes "
            f"none, so {model.alias} ({model.endpoint_id}) was used"
        )
    result, call = await ctx.run_model(model, args)
    return video_result("Animated the image into", model, result, call, notes)


TOOL = Tool(
    name="generate_video_from_image",
    title="Generate video from image",
    description=("Animate an image into a video, guided by a prompt."),
    input_model=GenerateVideoFromImageInput,
    handler=generate_video_from_image,
    output_model=GenerationOutput,
    category="video",
    model_field="model",
)
