"""upscale_image: enlarge an image 2x or 4x, adding detail.

The input's size is read first, so the result can say whether the output is exactly
the input size times the scale (and a non-image is refused before anything is paid for).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fal_mcp import (
    EndpointCall,
    GenerationOutput,
    MediaUrl,
    Model,
    PriceHint,
    Recommendation,
    Tool,
    ToolContext,
    ToolError,
    ToolHints,
    ToolInput,
    ToolResult,
)

from ._common import fal_output, fetch_image, report

# Models that only do one factor; every other model gets 2 unless asked for 4.
FIXED_SCALE = {"fal-ai/aura-sr": 4}


class UpscaleImageInput(ToolInput):
    image_url: MediaUrl = Field(description="The image: an https URL, a data: URI or a local path")
    scale: Literal[2, 4] | None = Field(None, description="2 or 4 (default 2; aura_sr only does 4)")
    model: str | None = Field(None, description="Model to use.")


def upscale_input(args: UpscaleImageInput) -> EndpointCall:
    # Both read the factor from `upscale_factor` (not `scale`, which they would ignore).
    return EndpointCall({"image_url": args.image_url, "upscale_factor": args.scale})


MODELS = [
    Model("clarity", "fal-ai/clarity-upscaler", "upscale_image", "image",
          "Clarity upscaler: 2x or 4x, adds detail (diffusion-based, slower)", upscale_input, default=True),
    Model("aura_sr", "fal-ai/aura-sr", "upscale_image", "image",
          "AuraSR: fast GAN super-resolution, 4x only", upscale_input),
]

PRICES = [
    PriceHint("fal-ai/clarity-upscaler", 0.03, "megapixel"),
    PriceHint("fal-ai/aura-sr", 0.01, "image"),
]

RECOMMENDATIONS = [
    Recommendation("clarity", ("upscale", "enlarge", "higher resolution", "enhance", "sharpen", "print"),
                   "Upscales 2x or 4x and adds convincing detail", "image"),
    Recommendation("aura_sr", ("fast upscale", "4x", "super-resolution"),
                   "Fast 4x upscaling that stays faithful to the input", "image"),
]


async def upscale_image(args: UpscaleImageInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    fixed = FIXED_SCALE.get(model.endpoint_id)
    if args.scale is not None and fixed is not None and args.scale != fixed:
        raise ToolError(f"Invalid arguments for upscale_image: scale: {model.alias} only upscales {fixed}x; "
                        f"ask for scale {fixed}, or use model clarity for {args.scale}x")
    args = args.model_copy(update={"scale": args.scale or fixed or 2})
    source = await fetch_image(ctx, "image_url", args.image_url)
    expected = (source.width * args.scale, source.height * args.scale)
    result, call = await ctx.run_model(model, args)
    output = fal_output(model, result, call.notes)
    details = []
    for file in output.files:
        if file.width is None or file.height is None:
            file.width, file.height = (await fetch_image(ctx, "output", file.url)).size
        got = (file.width, file.height)
        details.append(f"{source.width}x{source.height} x{args.scale} -> {got[0]}x{got[1]}")
        if got != expected:
            output.notes.append(f"the output is {got[0]}x{got[1]}, not the expected "
                                f"{expected[0]}x{expected[1]} (input x{args.scale})")
    return report("Upscaled", output, details)


TOOL = Tool(
    name="upscale_image",
    title="Upscale image",
    description="Upscale an image 2x or 4x with a fal.ai super-resolution model. Returns the image URL and "
                "checks that its size is the input size times the scale.",
    input_model=UpscaleImageInput,
    handler=upscale_image,
    output_model=GenerationOutput,
    hints=ToolHints(read_only=False, destructive=False, idempotent=True, open_world=True),
    category="image",
    model_field="model",
)
