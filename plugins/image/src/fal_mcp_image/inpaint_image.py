"""inpaint_image: repaint the masked part of an image (white = repaint, black = keep).

The mask must match the image pixel for pixel; one of another size is resized here and
uploaded, and the result says so, rather than letting the model guess.
"""

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

from ._common import alpha_of, checked_size, fetch_image, in_worker, report, restore_alpha, upload_image


class InpaintImageInput(ToolInput):
    image_url: MediaUrl = Field()
    mask_url: MediaUrl = Field(description="White = repaint, black = keep")
    prompt: str = Field(min_length=1, max_length=10_000, description="What to paint there")
    model: str | None = Field(None, description="Model to use.")
    negative_prompt: str | None = Field(None, max_length=10_000)
    strength: float | None = Field(
        None, ge=0.01, le=1, description="How much to change the masked area (default: the model's)"
    )
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


def _inpaint_input(alias: str, with_reference: bool):
    def build_input(args: InpaintImageInput) -> EndpointCall:
        req = EndpointInput(args, alias)
        req.copy("image_url", "mask_url", "prompt", "strength", "seed")
        if with_reference:
            # Kontext inpaint requires a reference for what to paint; the image itself keeps its look.
            req.send(reference_image_url=args.image_url)
        req.drop("negative_prompt", "does not take it")
        return req.call()

    return build_input


MODELS = [
    Model(
        "kontext_inpaint",
        "fal-ai/flux-kontext-lora/inpaint",
        "inpaint_image",
        "FLUX Kontext inpaint: repaints the mask in keeping with the rest of the image",
        _inpaint_input("kontext_inpaint", with_reference=True),
        default=True,
        field_arguments={"reference_image_url": "image_url"},
    ),
    Model(
        "flux_inpaint",
        "fal-ai/flux-lora/inpainting",
        "inpaint_image",
        "FLUX.1 [dev] inpainting: repaints the mask from the prompt",
        _inpaint_input("flux_inpaint", with_reference=False),
    ),
]

PRICES = [
    PriceHint("fal-ai/flux-kontext-lora/inpaint", 0.035, "image"),
    PriceHint("fal-ai/flux-lora/inpainting", 0.035, "megapixel"),
]

RECOMMENDATIONS = [
    Recommendation(
        "kontext_inpaint",
        (
            "inpaint",
            "mask",
            "fill area",
            "fill in",
            "selected area",
            "selection",
            "region",
            "repaint",
            "replace part",
        ),
        "Repaints a masked area so it blends with the rest of the image",
        "image",
    ),
]


def fit_mask(mask, size):
    """Blocking: the mask stretched to `size`, kept black and white (a blurred edge would half-repaint)."""
    from PIL import Image

    return mask.convert("L").resize(size, Image.Resampling.BILINEAR).point(lambda v: 255 if v >= 128 else 0)


async def inpaint_image(args: InpaintImageInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    image = await fetch_image(ctx, "image_url", args.image_url)
    mask = await fetch_image(ctx, "mask_url", args.mask_url)
    notes = []
    if mask.size != image.size:
        size = checked_size(image.size, "image_url", "the mask resized to the image's size")
        fitted = await in_worker(("mask_url",), fit_mask, mask, size)
        uploaded = await upload_image(ctx, fitted, "png", "mask", ("mask_url",))
        args = args.model_copy(update={"mask_url": uploaded.url})
        stretched = abs(mask.width / mask.height - image.width / image.height) > 0.01
        how = " (stretched: another aspect ratio)" if stretched else ""
        notes.append(
            f"the mask was {mask.width}x{mask.height}, the image {image.width}x{image.height}: "
            f"the mask was resized to match{how} and uploaded as {uploaded.url}"
        )
    alpha = await in_worker(("image_url",), alpha_of, image)
    result, call = await ctx.run_model(model, args)
    output = generation_output(model, result, call, prompt=args.prompt, notes=notes)
    if alpha is not None:  # what the mask keeps is the input, pixel for pixel: so is its transparency
        await restore_alpha(ctx, output, alpha, model.alias, outside=mask)
    return report("Inpainted", output)


TOOL = Tool(
    name="inpaint_image",
    title="Inpaint image",
    description="Repaint the masked part of an image with what the prompt says.",
    input_model=InpaintImageInput,
    handler=inpaint_image,
    output_model=GenerationOutput,
    model_field="model",
)
