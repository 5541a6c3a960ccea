"""remove_background: the subject of an image on a transparent background.

The result states the format and transparency the output really has, read by decoding it,
not taken from what was asked for.
"""

from __future__ import annotations

from typing import Literal

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
    ToolHints,
    ToolInput,
    ToolResult,
    generation_output,
)

from ._common import fetch_image, report


class RemoveBackgroundInput(ToolInput):
    image_url: MediaUrl = Field()
    model: str | None = Field(None, description="Model to use.")
    output_format: Literal["png", "webp"] = Field("png", description="png or webp, both with transparency")


def birefnet(variant: str):
    """BiRefNet v2 offers several networks under one endpoint, chosen by its own `model` field."""

    def build_input(args: RemoveBackgroundInput) -> EndpointCall:
        req = EndpointInput(args, "birefnet")
        req.send(image_url=args.image_url, model=variant, output_format=args.output_format)
        return req.call()

    return build_input


ENDPOINT = "fal-ai/birefnet/v2"
MODELS = [
    Model(
        "birefnet",
        ENDPOINT,
        "remove_background",
        "BiRefNet v2, general use (light): fast, good for most images",
        birefnet("General Use (Light)"),
        default=True,
    ),
    Model(
        "birefnet_heavy",
        ENDPOINT,
        "remove_background",
        "BiRefNet v2, general use (heavy): slower, finer edges",
        birefnet("General Use (Heavy)"),
    ),
    Model(
        "birefnet_portrait",
        ENDPOINT,
        "remove_background",
        "BiRefNet v2, portrait: tuned for people (hair, shoulders)",
        birefnet("Portrait"),
    ),
]

PRICES = [PriceHint(ENDPOINT, 0.001, "image")]

RECOMMENDATIONS = [
    Recommendation(
        "remove_background",
        (
            "remove background",
            "background removal",
            "no background",
            "without background",
            "transparent",
            "cutout",
            "cut out",
            "isolate",
        ),
        "Removes the background, leaving the subject on transparency",
        "image",
    ),
    Recommendation(
        "birefnet",
        ("product", "object", "fast"),
        "BiRefNet light: fast, good for most images",
        "image",
    ),
    Recommendation(
        "birefnet_heavy",
        ("fine edges", "fine detail", "fur", "intricate"),
        "BiRefNet heavy: slower, finer edges",
        "image",
    ),
    Recommendation(
        "birefnet_portrait",
        ("portrait cutout", "person", "people", "headshot", "profile picture", "hair"),
        "Background removal tuned for people",
        "image",
    ),
]


def has_alpha(image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


async def remove_background(args: RemoveBackgroundInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    result, call = await ctx.run_model(model, args)
    output = generation_output(model, result, call)
    details = []
    for file in output.files:
        # What the file really is: fal's content_type is only a label.
        image = await fetch_image(ctx, "output", file.url)
        kind = (image.format or "unknown").lower()
        file.content_type = f"image/{kind}"
        file.width, file.height = image.size
        alpha = has_alpha(image)
        details.append(
            f"Output: {kind.upper()}, {'with' if alpha else 'WITHOUT'} an alpha channel"
            + (" (transparent background)" if alpha else "")
        )
        if kind != args.output_format:
            output.notes.append(f"asked for {args.output_format}, the model returned {kind}")
        if not alpha:
            output.notes.append("the output has no transparency")
    return report("Removed the background of", output, details)


TOOL = Tool(
    name="remove_background",
    title="Remove background",
    description="Remove an image's background: the subject on transparency.",
    input_model=RemoveBackgroundInput,
    handler=remove_background,
    output_model=GenerationOutput,
    hints=ToolHints(idempotent=True),
    model_field="model",
)
