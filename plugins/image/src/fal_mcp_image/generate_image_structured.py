"""generate_image_structured: text to image from a structured scene instead of free text.

The structure becomes one prompt written for the chosen model, then the call goes through
generate_image's registered models and their translators (so a model another pack adds to
generate_image works here too, and nothing about fal's field names is repeated here).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fal_mcp import (
    ArgumentError,
    GenerationOutput,
    Tool,
    ToolContext,
    ToolInput,
    ToolResult,
    generation_output,
)

from ._common import HexColour, report
from .generate_image import GenerateImageInput, ImageSize

# Endpoints whose text encoder is CLIP alone (77 tokens, keyword-trained): they get a short
# comma-separated prompt, most important first. Every other model (T5-based FLUX and SD3.5,
# and any model unknown here) gets plain sentences.
KEYWORD_PROMPT_ENDPOINTS = {"fal-ai/fast-sdxl"}

# A few named colours, so a model that does not read hex codes still gets the palette.
COLOUR_NAMES = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "silver": (192, 192, 192),
    "red": (220, 20, 30),
    "crimson": (150, 0, 30),
    "orange": (255, 140, 0),
    "gold": (255, 200, 0),
    "yellow": (255, 240, 60),
    "olive": (128, 128, 0),
    "lime green": (130, 230, 60),
    "green": (20, 140, 40),
    "teal": (0, 128, 128),
    "cyan": (0, 220, 230),
    "sky blue": (120, 190, 240),
    "blue": (30, 80, 220),
    "navy": (10, 20, 90),
    "purple": (120, 40, 160),
    "magenta": (230, 30, 200),
    "pink": (250, 170, 200),
    "brown": (120, 70, 30),
    "beige": (230, 215, 180),
    "cream": (255, 250, 225),
}


Effect = Annotated[str, Field(min_length=1, max_length=100)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class Subject(_Part):
    type: str = Field(min_length=1, max_length=100, description="e.g. a red fox")
    description: str | None = Field(None, max_length=500, description="How it looks")
    pose: str | None = Field(None, max_length=200)
    position: Literal["foreground", "midground", "background"] | None = Field(
        None, description="Where in depth"
    )


class Camera(_Part):
    angle: str | None = Field(None, max_length=100, description="e.g. low angle")
    distance: str | None = Field(None, max_length=100, description="e.g. close-up")
    focus: str | None = Field(None, max_length=100, description="e.g. shallow depth of field")
    lens: str | None = Field(None, max_length=100, description="e.g. 85mm")
    f_number: float | None = Field(None, ge=0.7, le=64)
    iso: int | None = Field(None, ge=25, le=409_600)


class StructuredImageInput(ToolInput):
    scene: str = Field(min_length=1, max_length=2000, pattern=r"\S", description="What happens, where")
    subjects: list[Subject] = Field(default_factory=list, max_length=8)
    style: str | None = Field(None, max_length=300, description="e.g. oil painting")
    color_palette: list[HexColour] = Field(default_factory=list, max_length=8, description="Hex colours")
    lighting: str | None = Field(None, max_length=300, description="e.g. golden hour")
    mood: str | None = Field(None, max_length=300, description="e.g. serene")
    background: str | None = Field(None, max_length=500, description="What is behind the subjects")
    composition: str | None = Field(None, max_length=300, description="e.g. rule of thirds")
    camera: Camera | None = Field(None)
    effects: list[Effect] = Field(default_factory=list, max_length=8, description="e.g. film grain, bokeh")
    model: str | None = Field(
        None,
        description="A generate_image model (default flux_schnell)",
    )
    negative_prompt: str | None = Field(
        None,
        max_length=2000,
    )
    image_size: ImageSize = Field(
        "landscape_16_9",
    )
    num_images: int = Field(1, ge=1, le=4)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


def colour_name(hex_value: str) -> str:
    digits = hex_value[1:]
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    rgb = tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))
    return min(
        COLOUR_NAMES, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLOUR_NAMES[name], rgb, strict=True))
    )


def _clause(text: str | None) -> str:
    """One sentence: stripped, capitalised, ending in a full stop."""
    text = " ".join((text or "").split()).rstrip(".")
    return text[:1].upper() + text[1:] + "." if text else ""


def _subject(subject: Subject) -> str:
    return ", ".join(part for part in (subject.type, subject.description, subject.pose) if part)


def _camera(camera: Camera | None) -> list[str]:
    if camera is None:
        return []
    parts = [
        camera.distance,
        camera.angle,
        f"{camera.lens} lens" if camera.lens else None,
        f"f/{camera.f_number:g}" if camera.f_number else None,
        f"ISO {camera.iso}" if camera.iso else None,
        camera.focus,
    ]
    return [part for part in parts if part]


def _palette(args: StructuredImageInput) -> list[str]:
    return [f"{colour_name(value)} ({value})" for value in args.color_palette]


def sentence_prompt(args: StructuredImageInput) -> str:
    """Plain sentences, subject first: what T5-based models (FLUX, SD3.5) follow best."""
    sentences = [_clause(args.scene)]
    for subject in args.subjects:
        where = f"In the {subject.position}" if subject.position else "Subject"
        sentences.append(_clause(f"{where}: {_subject(subject)}"))
    labelled = [
        ("Background", args.background),
        ("Composition", args.composition),
        ("Camera", ", ".join(_camera(args.camera))),
        ("Lighting", args.lighting),
        ("Mood", args.mood),
        ("Colour palette", ", ".join(_palette(args))),
        ("Style", args.style),
        ("Effects", ", ".join(args.effects)),
    ]
    sentences += [_clause(f"{label}: {value}") for label, value in labelled if value]
    return " ".join(sentence for sentence in sentences if sentence)


def keyword_prompt(args: StructuredImageInput) -> str:
    """Comma-separated, most important first, no labels: CLIP reads only about 77 tokens."""
    parts = [args.style, args.scene.rstrip(".")]
    parts += [_subject(s) + (f" in the {s.position}" if s.position else "") for s in args.subjects]
    parts += [
        args.background,
        args.lighting,
        args.mood and f"{args.mood} mood",
        *_palette(args),
        args.composition,
        *_camera(args.camera),
        *args.effects,
    ]
    return ", ".join(" ".join(part.split()) for part in parts if part)


async def generate_image_structured(args: StructuredImageInput, ctx: ToolContext) -> ToolResult:
    try:
        model = ctx.registry.resolve_model("generate_image", args.model)
    except ValueError as exc:
        raise ArgumentError("model", str(exc)) from None
    keywords = model.endpoint_id in KEYWORD_PROMPT_ENDPOINTS
    prompt = keyword_prompt(args) if keywords else sentence_prompt(args)
    try:
        request = GenerateImageInput(
            prompt=prompt,
            model=model.alias,
            negative_prompt=args.negative_prompt,
            image_size=args.image_size,
            num_images=args.num_images,
            seed=args.seed,
        )
    except ValidationError:
        # Named by the first of the descriptions the prompt is made of; the message names them all.
        raise ArgumentError(
            "scene",
            f"scene, subjects and the other descriptions make a prompt of {len(prompt)} "
            "characters, more than the 10000 generate_image takes: shorten them",
        ) from None
    result, call = await ctx.run_model(model, request)
    style = " (keywords: a CLIP-based model reads those best)" if keywords else ""
    return report(
        "Generated", generation_output(model, result, call, prompt=prompt), [f"Prompt sent{style}: {prompt}"]
    )


TOOL = Tool(
    name="generate_image_structured",
    title="Generate image from a scene",
    description="Generate images from a structured scene instead of a prompt.",
    input_model=StructuredImageInput,
    handler=generate_image_structured,
    output_model=GenerationOutput,
)
