"""edit_image: change an image by a plain-language instruction, keeping the rest of it."""

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


class EditImageInput(ToolInput):
    image_url: MediaUrl = Field(description="The image to edit")
    instruction: str = Field(
        min_length=1,
        max_length=10_000,
        description="e.g. 'make it night'",
    )
    model: str | None = Field(None, description="Model to use.")
    strength: float | None = Field(
        None,
        ge=0.01,
        le=1,
        description="How strongly to change the image",
    )
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


def flux_2_edit_input(args: EditImageInput) -> EndpointCall:
    # FLUX.2 edit takes a list of reference images; the first is the one edited.
    req = EndpointInput(args, "flux_2_edit")
    req.send(image_urls=[args.image_url], prompt=args.instruction)
    req.copy("seed")
    req.drop("strength", "does not take it")
    return req.call()


def kontext_input(args: EditImageInput) -> EndpointCall:
    req = EndpointInput(args, "kontext")
    req.send(image_url=args.image_url, prompt=args.instruction)
    req.copy("seed")
    req.drop("strength", "does not take it")
    return req.call()


MODELS = [
    Model(
        "flux_2_edit",
        "fal-ai/flux-2/edit",
        "edit_image",
        "FLUX.2 [dev] edit: instruction-based editing, keeps the input's size",
        flux_2_edit_input,
        default=True,
        field_arguments={"prompt": "instruction", "image_urls": "image_url"},
    ),
    Model(
        "kontext",
        "fal-ai/flux-pro/kontext",
        "edit_image",
        "FLUX.1 Kontext [pro]: precise local edits, keeps faces and text intact",
        kontext_input,
        field_arguments={"prompt": "instruction"},
    ),
]

PRICES = [PriceHint("fal-ai/flux-2/edit", 0.025, "image")]  # kontext's is in generate_image_from_image

RECOMMENDATIONS = [
    Recommendation(
        "edit_image",
        (
            "edit",
            "change",
            "modify",
            "replace",
            "remove",
            "remove object",
            "remove person",
            "remove people",
            "remove text",
            "replace background",
            "change background",
            "swap background",
            "new background",
        ),
        "Edits an image from a plain-language instruction",
        "image",
    ),
    Recommendation(
        "edit_image",
        ("add", "put", "fix"),
        "Edits an image from a plain-language instruction ('add a hat', 'put a sign on the door')",
        "image",
        weight=0.5,
    ),
    Recommendation(
        "kontext",
        (
            "face",
            "identity",
            "consistent character",
            "change text",
            "fix text",
            "text",
            "keep",
            "precise edit",
        ),
        "Edits precisely while keeping identity and text intact",
        "image",
    ),
]


async def edit_image(args: EditImageInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    result, call = await ctx.run_model(model, args)
    output = generation_output(model, result, call, prompt=args.instruction)
    # The model makes a new picture: the input's transparency cannot be put back; said so.
    if await input_transparency(ctx, "image_url", args.image_url) is not None:
        output.notes.append(lost_transparency(model.alias))
    return report("Edited", output)


TOOL = Tool(
    name="edit_image",
    title="Edit image",
    description="Edit an image by an instruction, keeping what it does not mention.",
    input_model=EditImageInput,
    handler=edit_image,
    output_model=GenerationOutput,
    model_field="model",
)
