"""upscale_image: enlarge an image 2x or 4x, adding detail.

The input's size is read first, so the result can say whether the output is exactly
the input size times the scale (and a non-image is refused before anything is paid for).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fal_mcp import (
    ArgumentError,
    EndpointCall,
    EndpointInput,
    GenerationOutput,
    MediaUrl,
    Model,
    PriceHint,
    Recommendation,
    Tool,
    ToolContext,
    ToolHints,
    ToolInput,
    ToolResult,
    generation_output,
)

from ._common import PACKAGE, alpha_of, fetch_image, in_worker, report, restore_alpha

DEFAULT_SCALE = 2


class UpscaleImageInput(ToolInput):
    image_url: MediaUrl = Field()
    scale: Literal[2, 4] | None = Field(None, description="Default 2; aura_sr: 4 only")
    model: str | None = Field(None, description="Model to use.")


def scale_for(alias: str, factor_field: dict, asked: int | None) -> int:
    """The factor to send: the one asked for (default 2, or the model's only one when its schema's
    `upscale_factor` allows only one, as AuraSR's: 4); ToolError if the model cannot do it."""
    fixed = factor_field.get("const")
    if asked is not None and fixed is not None and asked != fixed:
        raise ArgumentError(
            "scale",
            f"{alias} only upscales {fixed}x; ask for scale {fixed}, or use model clarity for {asked}x",
        )
    return asked or fixed or DEFAULT_SCALE


def _upscale_input(alias: str, endpoint_id: str):
    def build_input(args: UpscaleImageInput) -> EndpointCall:
        req = EndpointInput(args, alias, endpoint_id, PACKAGE)
        # Both read the factor from `upscale_factor` (not `scale`, which they would ignore).
        req.send(
            image_url=args.image_url, upscale_factor=scale_for(alias, req.field("upscale_factor"), args.scale)
        )
        return req.call()

    return build_input


MODELS = [
    Model(
        "clarity",
        "fal-ai/clarity-upscaler",
        "upscale_image",
        "Clarity upscaler: 2x or 4x, adds detail (diffusion-based, slower)",
        _upscale_input("clarity", "fal-ai/clarity-upscaler"),
        default=True,
        field_arguments={"upscale_factor": "scale"},
    ),
    Model(
        "aura_sr",
        "fal-ai/aura-sr",
        "upscale_image",
        "AuraSR: fast GAN super-resolution, 4x only",
        _upscale_input("aura_sr", "fal-ai/aura-sr"),
        field_arguments={"upscale_factor": "scale"},
    ),
]

PRICES = [
    PriceHint("fal-ai/clarity-upscaler", 0.03, "megapixel"),
    PriceHint("fal-ai/aura-sr", 0.01, "image"),
]

RECOMMENDATIONS = [
    Recommendation(
        "upscale_image",
        (
            "upscale",
            "enlarge",
            "bigger",
            "larger",
            "double size",
            "resolution",
            "higher resolution",
            "low res",
            "hd",
            "4k",
            "2x",
            "4x",
            "super-resolution",
            "pixelated",
        ),
        "Upscales an image 2x or 4x",
        "image",
    ),
    Recommendation(
        "clarity",
        ("enhance", "sharpen", "detail", "blurry", "print"),
        "Upscales 2x or 4x and adds convincing detail",
        "image",
    ),
    Recommendation(
        "aura_sr",
        ("fast upscale", "fast", "4x", "faithful"),
        "Fast 4x upscaling that stays faithful to the input",
        "image",
    ),
]


async def upscale_image(args: UpscaleImageInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    # Checked before the input is fetched, against the model's own schema (a model of another pack too).
    factor_field = (model.input_schema() or {}).get("properties", {}).get("upscale_factor", {})
    args = args.model_copy(update={"scale": scale_for(model.alias, factor_field, args.scale)})
    source = await fetch_image(ctx, "image_url", args.image_url)
    alpha = await in_worker(("image_url",), alpha_of, source)  # the models drop it: put back after
    expected = (source.width * args.scale, source.height * args.scale)
    result, call = await ctx.run_model(model, args)
    output = generation_output(model, result, call)
    details = []
    for file in output.files:
        if file.width is None or file.height is None:
            file.width, file.height = (await fetch_image(ctx, "output", file.url)).size
        got = (file.width, file.height)
        details.append(f"{source.width}x{source.height} x{args.scale} -> {got[0]}x{got[1]}")
        if got != expected:
            output.notes.append(
                f"the output is {got[0]}x{got[1]}, not the expected "
                f"{expected[0]}x{expected[1]} (input x{args.scale})"
            )
    if alpha is not None:  # an upscale keeps the geometry: the alpha channel, scaled, fits it
        await restore_alpha(ctx, output, alpha, model.alias)
    return report("Upscaled", output, details)


TOOL = Tool(
    name="upscale_image",
    title="Upscale image",
    description="Upscale an image 2x or 4x.",
    input_model=UpscaleImageInput,
    handler=upscale_image,
    output_model=GenerationOutput,
    hints=ToolHints(idempotent=True),
    model_field="model",
)
