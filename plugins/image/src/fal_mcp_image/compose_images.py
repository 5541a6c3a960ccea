"""compose_images: lay one image over another (a logo, a watermark, a sticker), done here with Pillow.

The overlay's transparency is kept and multiplied by `opacity`; the base keeps its own. Both inputs are
read here (LocalMediaUrl: a local path or data: URI is never uploaded); only the result is stored on
fal storage, to return its URL.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from fal_mcp import (
    ArgumentError,
    GenerationOutput,
    LocalMediaUrl,
    Tool,
    ToolContext,
    ToolHints,
    ToolInput,
    ToolResult,
)

from ._common import checked_size, local_output, read_images, report, transform

# fal's style (landscape_16_9): underscores. The hyphenated spelling (bottom-right) is taken too (ToolInput).
Position = Literal["top_left", "top_right", "bottom_left", "bottom_right", "center", "custom"]


class ComposeImagesInput(ToolInput):
    base_image_url: LocalMediaUrl = Field(description="The image underneath")
    overlay_image_url: LocalMediaUrl = Field(description="The image on top")
    position: Position = Field(
        "bottom_right",
        description="custom: the overlay's top-left at x, y",
    )
    x: int | None = Field(
        None, ge=0, le=100_000, validate_default=True, description="custom: px from the left"
    )
    y: int | None = Field(
        None, ge=0, le=100_000, validate_default=True, description="custom: px from the top"
    )
    scale: float = Field(0.15, ge=0.01, le=1.0, description="Overlay width / base width")
    padding: int = Field(20, ge=0, le=10_000, description="px from the edges")
    opacity: float = Field(1.0, ge=0, le=1)
    output_format: Literal["png", "jpeg", "webp"] = Field("png")

    @field_validator("x", "y")
    @classmethod
    def _custom_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        position = info.data.get("position")
        if position == "custom" and value is None:
            raise ValueError("required when position is custom")
        if position not in (None, "custom") and value is not None:
            raise ValueError(f"only used when position is custom, not {position}")
        return value


def place(args: ComposeImagesInput, base: tuple[int, int], overlay: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the overlay on the base."""
    (width, height), (w, h), pad = base, overlay, args.padding
    right, bottom = width - w - pad, height - h - pad
    return {
        "top_left": (pad, pad),
        "top_right": (right, pad),
        "bottom_left": (pad, bottom),
        "bottom_right": (right, bottom),
        "center": ((width - w) // 2, (height - h) // 2),
        "custom": (args.x, args.y),
    }[args.position]


def compose(base, overlay, *, size: tuple[int, int], at: tuple[int, int], opacity: float):
    """Blocking: `overlay` resized to `size`, faded by `opacity`, composited on `base` at `at`. Both
    are RGB or RGBA (see transform); `base` is changed and returned."""
    from PIL import Image

    layer = overlay.resize(size, Image.Resampling.LANCZOS)
    layer = layer if layer.mode == "RGBA" else layer.convert("RGBA")  # after resizing: less to convert
    if opacity < 1:
        layer.putalpha(layer.getchannel("A").point(lambda value: round(value * opacity)))
    result, base_has_alpha = base, base.mode == "RGBA"
    # Composite only the region the overlay covers (clipped to the base): Pillow holds the GIL in
    # alpha_composite, and over a whole 4096x4096 base that stalled the event loop ~170 ms.
    x, y = at
    box = (max(x, 0), max(y, 0), min(x + layer.width, result.width), min(y + layer.height, result.height))
    if box[0] < box[2] and box[1] < box[3]:
        piece = layer.crop((box[0] - x, box[1] - y, box[2] - x, box[3] - y))
        region = Image.alpha_composite(result.crop(box).convert("RGBA"), piece)
        result.paste(region if base_has_alpha else region.convert("RGB"), box[:2])
    return result


async def compose_images(args: ComposeImagesInput, ctx: ToolContext) -> ToolResult:
    images = await read_images(
        ctx, {"base_image_url": args.base_image_url, "overlay_image_url": args.overlay_image_url}
    )
    base, overlay = images["base_image_url"], images["overlay_image_url"]
    if args.position == "custom" and (args.x >= base.width or args.y >= base.height):
        field = "x" if args.x >= base.width else "y"
        raise ArgumentError(
            field, f"({args.x}, {args.y}) is outside the base image ({base.width}x{base.height})"
        )
    checked_size(base.size, "base_image_url", "the composed image")
    width = max(1, round(base.width * args.scale))
    # The overlay keeps its aspect ratio: a tiny but very tall one scaled to a wide base's width
    # would be gigapixels. Refused here, before anything is allocated.
    size = checked_size(
        (width, max(1, round(overlay.height * width / overlay.width))),
        "overlay_image_url",
        f"the {overlay.width}x{overlay.height} overlay scaled to {width} pixels wide "
        f"(scale {args.scale:g} of the {base.width}-pixel-wide base)",
    )
    x, y = place(args, base.size, size)
    notes = []
    if x < 0 or y < 0:
        notes.append(
            f"the overlay ({size[0]}x{size[1]}) and padding {args.padding} do not fit in the base "
            f"({base.width}x{base.height}): moved to stay inside"
        )
        x, y = max(0, x), max(0, y)
    if x + size[0] > base.width or y + size[1] > base.height:
        notes.append("the overlay runs past the base's edge: that part is cut off")
    work = partial(compose, size=size, at=(x, y), opacity=args.opacity)
    file = await transform(
        ctx,
        work,
        {"base_image_url": base, "overlay_image_url": overlay},
        output_format=args.output_format,
        name="composed",
        notes=notes,
    )
    detail = (
        f"Overlay {size[0]}x{size[1]} at x={x}, y={y} ({args.position}) on the "
        f"{base.width}x{base.height} base, opacity {args.opacity:g}"
    )
    return report("Composed", local_output([file], notes), [detail])


TOOL = Tool(
    name="compose_images",
    title="Compose images",
    description="Lay an overlay (logo, watermark) on an image. Done locally.",
    input_model=ComposeImagesInput,
    handler=compose_images,
    output_model=GenerationOutput,
    hints=ToolHints(idempotent=True),
)
