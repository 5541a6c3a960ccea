"""generate_image_from_image: a new image from an input image and a prompt (image-to-image)."""

from __future__ import annotations

from pydantic import Field

from fal_mcp import (
    EndpointCall,
    EndpointInput,
    GenerationOutput,
    MediaUrl,
    Model,
    PriceHint,
    Recommendation,
    Tool,
    ToolContext,
    ToolInput,
    ToolResult,
    generation_output,
)

from ._common import input_transparency, lost_transparency, report


class ImageFromImageInput(ToolInput):
    image_url: MediaUrl = Field(description="The input image")
    prompt: str = Field(min_length=1, max_length=10_000, description="What the new image should show")
    model: str | None = Field(None, description="Model to use.")
    strength: float | None = Field(
        None,
        ge=0.01,
        le=1,
        description="Near 0 keeps the input, 1 replaces it",
    )
    num_images: int = Field(1, ge=1, le=4)
    negative_prompt: str | None = Field(None, max_length=10_000)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


def flux_dev_input(args: ImageFromImageInput) -> EndpointCall:
    req = EndpointInput(args, "flux_dev_i2i")
    req.copy("image_url", "prompt", "num_images", "strength", "seed")
    req.drop("negative_prompt", "does not take it")
    return req.call()


def kontext_input(args: ImageFromImageInput) -> EndpointCall:
    req = EndpointInput(args, "kontext")
    req.copy("image_url", "prompt", "num_images", "seed")
    # Kontext keeps what the prompt does not change: there is no strength to set.
    req.drop("strength", "does not take it")
    req.drop("negative_prompt", "does not take it")
    return req.call()


MODELS = [
    Model(
        "flux_dev_i2i",
        "fal-ai/flux/dev/image-to-image",
        "generate_image_from_image",
        "FLUX.1 [dev] image-to-image: redraws the input, strength sets how much",
        flux_dev_input,
        default=True,
    ),
    Model(
        "kontext",
        "fal-ai/flux-pro/kontext",
        "generate_image_from_image",
        "FLUX.1 Kontext [pro]: follows the prompt while keeping the input's content",
        kontext_input,
    ),
]

PRICES = [
    PriceHint("fal-ai/flux/dev/image-to-image", 0.03, "megapixel"),
    PriceHint("fal-ai/flux-pro/kontext", 0.04, "image"),
]

RECOMMENDATIONS = [
    Recommendation(
        "flux_dev_i2i",
        (
            "image-to-image",
            "restyle",
            "variation",
            "redraw",
            "sketch to image",
            "turn into",
            "convert into",
            "reimagine",
            "in the style of",
        ),
        "Redraws an input image in a new way, with a strength to control how much",
        "image",
    ),
]


async def generate_image_from_image(args: ImageFromImageInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    result, call = await ctx.run_model(model, args)
    output = generation_output(model, result, call, prompt=args.prompt)
    # The model makes a new picture: the input's transparency cannot be put back; said so.
    if await input_transparency(ctx, "image_url", args.image_url) is not None:
        output.notes.append(lost_transparency(model.alias))
    return report("Generated", output)


TOOL = Tool(
    name="generate_image_from_image",
    title="Generate image from image",
    description="Image-to-image: the input sets layout and colours, the prompt what to make of it.",
    input_model=ImageFromImageInput,
    handler=generate_image_from_image,
    output_model=GenerationOutput,
    model_field="model",
)
