"""generate_image: text to image.

Each alias maps to an endpoint that exists on fal, and each endpoint gets
its own field names. A parameter a model cannot take is dropped with a note
in the result rather than sent and silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fal_mcp import (
    EndpointCall,
    EndpointInput,
    GenerationOutput,
    Model,
    PriceHint,
    Recommendation,
    Tool,
    ToolContext,
    ToolInput,
    ToolResult,
    generation_output,
)

from ._common import report

ImageSize = Literal["square", "landscape_4_3", "landscape_16_9", "portrait_3_4", "portrait_9_16"]

# Tool-facing size names -> fal's image_size values. fal's "portrait_4_3" is a
# 3:4 portrait (768x1024) and its "square" is only 512x512.
FAL_IMAGE_SIZE = {
    "square": "square_hd",  # 1024x1024
    "landscape_4_3": "landscape_4_3",  # 1024x768
    "landscape_16_9": "landscape_16_9",  # 1024x576
    "portrait_3_4": "portrait_4_3",  # 768x1024
    "portrait_9_16": "portrait_16_9",  # 576x1024
}


class GenerateImageInput(ToolInput):
    prompt: str = Field(min_length=1, max_length=10_000, description="What the image should show")
    model: str | None = Field(None, description="Model to use.")
    negative_prompt: str | None = Field(
        None,
        max_length=10_000,
    )
    image_size: ImageSize = Field(
        "landscape_16_9",
    )
    num_images: int = Field(1, ge=1, le=4)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


def _translator(takes_negative_prompt: bool):
    def build_input(args: GenerateImageInput) -> EndpointCall:
        req = EndpointInput(args, "this model")
        req.send(prompt=args.prompt, image_size=FAL_IMAGE_SIZE[args.image_size], num_images=args.num_images)
        req.copy("seed")
        if takes_negative_prompt:
            req.send(negative_prompt=args.negative_prompt or None)
        else:
            req.drop("negative_prompt", "does not take one (sdxl and stable_diffusion do)")
        return req.call()

    return build_input


MODELS = [
    Model(
        "flux_schnell",
        "fal-ai/flux/schnell",
        "generate_image",
        "FLUX.1 [schnell]: fast, good quality, 1-4 steps",
        _translator(False),
        default=True,
    ),
    Model(
        "flux_dev",
        "fal-ai/flux/dev",
        "generate_image",
        "FLUX.1 [dev]: higher quality, slower",
        _translator(False),
    ),
    Model(
        "flux_pro",
        "fal-ai/flux-pro/v1.1",
        "generate_image",
        "FLUX1.1 [pro]: best FLUX quality and prompt following",
        _translator(False),
    ),
    Model(
        "sdxl",
        "fal-ai/fast-sdxl",
        "generate_image",
        "Stable Diffusion XL (fast): takes negative prompts",
        _translator(True),
    ),
    Model(
        "stable_diffusion",
        "fal-ai/stable-diffusion-v35-large",
        "generate_image",
        "Stable Diffusion 3.5 Large: takes negative prompts, strong typography",
        _translator(True),
    ),
]

# Offline hints only; live prices come from fal's pricing API.
PRICES = [
    PriceHint("fal-ai/flux/schnell", 0.003, "megapixel"),
    PriceHint("fal-ai/flux/dev", 0.025, "megapixel"),
    PriceHint("fal-ai/flux-pro/v1.1", 0.04, "megapixel"),
    PriceHint("fal-ai/fast-sdxl", 0.00111, "megapixel"),
    PriceHint("fal-ai/stable-diffusion-v35-large", 0.065, "image"),
]

RECOMMENDATIONS = [
    Recommendation(
        "flux_schnell",
        ("fast", "draft", "quick", "cheap", "image", "illustration"),
        "Fastest and cheapest text-to-image with good quality",
        "image",
    ),
    Recommendation(
        "flux_pro",
        ("photo", "photorealistic", "portrait", "product", "high quality", "image"),
        "Best prompt following and photorealism of the FLUX family",
        "image",
        weight=1.5,
    ),
    Recommendation(
        "stable_diffusion",
        ("text", "typography", "lettering", "slogan", "logo", "poster", "negative prompt"),
        "Renders text in images well and takes a negative prompt",
        "image",
    ),
]


async def generate_image(args: GenerateImageInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    result, call = await ctx.run_model(model, args)
    return report("Generated", generation_output(model, result, call, prompt=args.prompt))


TOOL = Tool(
    name="generate_image",
    title="Generate image",
    description="Generate images from a prompt.",
    input_model=GenerateImageInput,
    handler=generate_image,
    output_model=GenerationOutput,
    model_field="model",
)
