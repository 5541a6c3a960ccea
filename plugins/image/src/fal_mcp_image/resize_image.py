"""resize_image: an image at the exact size of a social-media format, or a custom size.

- extend: fal outpaints borders that give the image the target aspect ratio, then it is
  scaled here to the exact size (nothing of the input is lost);
- crop: cut here to the target aspect ratio (centred, or around the busiest area) and scaled;
- pad: letterboxed here on a solid colour.

Whatever the mode, the output is exactly the target size. The input is a LocalMediaUrl: crop and pad
read a local path or data: URI here and never upload it; extend sends it to fal (`sends_to_fal`), so the
core uploads it first, as for any MediaUrl. The result is stored on fal storage, to return its URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from fal_mcp import (
    ArgumentError,
    EndpointCall,
    EndpointInput,
    GenerationOutput,
    LocalMediaUrl,
    Model,
    PriceHint,
    Recommendation,
    Tool,
    ToolContext,
    ToolError,
    ToolInput,
    ToolResult,
    find_files,
    generation_output,
    input_field,
)

from ._common import (
    PACKAGE,
    HexColour,
    alpha_of,
    checked_size,
    fetch_image,
    in_worker,
    local_output,
    lost_transparency,
    normalised,
    report,
    transform,
    upload_image,
)

SIZES = {
    "instagram_post": (1080, 1080),
    "instagram_story": (1080, 1920),
    "instagram_reel": (1080, 1920),
    "youtube_thumbnail": (1280, 720),
    "youtube_short": (1080, 1920),
    "twitter_post": (1200, 675),
    "linkedin_post": (1200, 627),
    "facebook_post": (1200, 630),
    "pinterest_pin": (1000, 1500),
    "tiktok": (1080, 1920),
}
TargetFormat = Literal[
    "instagram_post",
    "instagram_story",
    "instagram_reel",
    "youtube_thumbnail",
    "youtube_short",
    "twitter_post",
    "linkedin_post",
    "facebook_post",
    "pinterest_pin",
    "tiktok",
    "custom",
]
OUTPAINT = "fal-ai/image-apps-v2/outpaint"
SIDES = ("left", "right", "top", "bottom")


def expand_limit(model: Model) -> int:
    """The most an outpainting model adds on a side: the maximum of its expand_* fields in its schema
    (fal's outpaint: 700); a model without one is held to fal's outpaint's."""
    properties = (model.input_schema() or {}).get("properties", {})
    if not all(f"expand_{side}" in properties for side in SIDES):
        properties = {f"expand_{side}": input_field(PACKAGE, OUTPAINT, f"expand_{side}") for side in SIDES}
    return min(properties[f"expand_{side}"]["maximum"] for side in SIDES)


class ResizeImageInput(ToolInput):
    image_url: LocalMediaUrl = Field()
    target_format: TargetFormat = Field(
        description="Each format's own size (the result says it); custom: width, height"
    )
    width: int | None = Field(
        None,
        ge=16,
        le=4096,
        validate_default=True,
        description="custom: pixels",
    )
    height: int | None = Field(
        None,
        ge=16,
        le=4096,
        validate_default=True,
        description="custom: pixels",
    )
    mode: Literal["extend", "crop", "pad"] = Field(
        "extend",
        description="extend: AI-painted borders; crop; pad: bars",
    )
    background_prompt: str | None = Field(None, max_length=2000, description="extend: what to paint")
    background_color: HexColour | None = Field(None, description="pad: hex, default #000000")
    crop_focus: Literal["center", "content"] = Field("center", description="crop: what to keep")
    model: str | None = Field(None, description="extend only")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="extend only")
    output_format: Literal["png", "jpeg", "webp"] = Field("png")

    def sends_to_fal(self, field: str) -> bool:
        """extend sends the image to fal's outpainting (the core uploads a local one first); crop and pad
        work on it here (read, never uploaded)."""
        return self.mode == "extend"

    @field_validator("width", "height")
    @classmethod
    def _custom_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        target = info.data.get("target_format")
        if target == "custom" and value is None:
            raise ValueError("required when target_format is custom")
        if target not in (None, "custom") and value is not None:
            raise ValueError(
                f"only used when target_format is custom ({target} is {SIZES[target][0]}x{SIZES[target][1]})"
            )
        return value


@dataclass(frozen=True)
class Outpaint:
    """What an outpainting model is asked for: an image and the pixels to add on each side."""

    image_url: str
    left: int
    right: int
    top: int
    bottom: int
    prompt: str | None = None
    seed: int | None = None


def refuse_long_prompt(prompt: str | None, prompt_field: dict, alias: str) -> None:
    """ToolError if `prompt` is longer than the outpainting model's `prompt` field takes."""
    limit = prompt_field.get("maxLength")
    if prompt and limit is not None and len(prompt) > limit:
        raise ArgumentError(
            "background_prompt", f"{alias} takes at most {limit} characters (got {len(prompt)}); shorten it"
        )


def outpaint_input(request: Outpaint) -> EndpointCall:
    refuse_long_prompt(request.prompt, input_field(PACKAGE, OUTPAINT, "prompt"), "outpaint")
    req = EndpointInput(request, "outpaint")
    req.send(
        image_url=request.image_url,
        expand_left=request.left,
        expand_right=request.right,
        expand_top=request.top,
        expand_bottom=request.bottom,
        # Its zoom-out defaults to 20%, which would shrink the image inside the new borders.
        zoom_out_percentage=0,
    )
    req.copy("prompt", "seed")
    return req.call()


MODELS = [
    Model(
        "outpaint",
        OUTPAINT,
        "resize_image",
        "Image Outpaint: extends an image by up to 700 px on each side",
        outpaint_input,
        default=True,
        field_arguments={
            "prompt": "background_prompt",
            "image_url": "image_url",
            **{f"expand_{side}": "target_format" for side in SIDES},
        },
    ),
]

PRICES = [PriceHint(OUTPAINT, 0.035, "megapixel")]

RECOMMENDATIONS = [
    Recommendation(
        "outpaint",
        ("outpaint", "extend image", "expand canvas", "change aspect ratio", "uncrop"),
        "Extends an image with generated borders, e.g. to reach a new aspect ratio",
        "image",
    ),
    Recommendation(
        "resize_image",
        (
            "resize",
            "aspect ratio",
            "ratio",
            "crop",
            "format",
            "fit",
            "square",
            "vertical",
            "horizontal",
            "instagram",
            "story",
            "reel",
            "tiktok",
            "youtube",
            "thumbnail",
            "banner",
            "linkedin",
            "facebook",
            "pinterest",
            "twitter",
        ),
        "Makes an image the exact size of a social-media format: crop, pad, or extend it (outpaint)",
        "image",
    ),
]


# -- geometry (blocking Pillow work, run in a worker thread on RGB or RGBA images) -------------


def outpaint_plan(
    size: tuple[int, int], target: tuple[int, int], max_expand: int
) -> tuple[tuple[int, int], tuple[int, ...]]:
    """(size to give the input, (left, right, top, bottom) to add) so that the input plus the borders has
    the target's aspect ratio. The input is shrunk to the size it will have on the final canvas (never
    enlarged: that is cheaper to do after), and further if a border would exceed `max_expand`."""
    (w, h), (tw, th) = size, target
    scale = min(1.0, tw / w, th / h)
    for _ in range(50):
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        dx = max(0, round(sh * tw / th) - sw)
        dy = max(0, round(sw * th / tw) - sh)
        sides = (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2)
        if max(sides) <= max_expand:
            return (sw, sh), sides
        scale *= max_expand / max(sides) * 0.98
    raise ValueError(f"no outpainting plan for {w}x{h} -> {tw}x{th}")  # unreachable within the size limits


def scale_to(image, size: tuple[int, int]):
    from PIL import Image

    return normalised(image).resize(size, Image.Resampling.LANCZOS)


def content_centering(image, size: tuple[int, int]) -> tuple[float, float]:
    """Where to crop (as ImageOps.fit's centering) to keep the busiest area: the window with the most
    edges along the axis being cut, a cheap stand-in for saliency."""
    from PIL import Image, ImageFilter

    small = image.convert("L")
    small.thumbnail((256, 256))
    edges = small.filter(ImageFilter.FIND_EDGES)
    edges = edges.crop((1, 1, edges.width - 1, edges.height - 1))  # the filter leaves its border unfiltered
    w, h = edges.size
    if w < 2 or h < 2:
        return 0.5, 0.5
    window_w, window_h = min(w, round(h * size[0] / size[1])), min(h, round(w * size[1] / size[0]))
    horizontal = window_w < w
    length, window = (w, window_w) if horizontal else (h, window_h)
    if window >= length:
        return 0.5, 0.5
    # Mean edge strength per column (or row): a box resize to one row (or column) computes it.
    profile = list(edges.resize((w, 1) if horizontal else (1, h), Image.Resampling.BOX).tobytes())
    sums = [sum(profile[:window])]
    for start in range(1, length - window + 1):
        sums.append(sums[-1] - profile[start - 1] + profile[start + window - 1])
    best = max(range(len(sums)), key=lambda start: (sums[start], -abs(start - (length - window) / 2)))
    position = best / (length - window)
    return (position, 0.5) if horizontal else (0.5, position)


def crop(image, size: tuple[int, int], focus: str):
    from PIL import Image, ImageOps

    centering = content_centering(image, size) if focus == "content" else (0.5, 0.5)
    return ImageOps.fit(image, size, Image.Resampling.LANCZOS, centering=centering)


def fill(image, size: tuple[int, int]):
    """Scaled to cover `size` exactly, trimming what overhangs (a pixel or two after outpainting)."""
    return crop(image, size, "center")


def pad(image, size: tuple[int, int], colour: str | None):
    """Letterboxed on `colour` (opaque: so is the whole), or with `colour` None on transparent bars (the
    image keeps its own transparency)."""
    from PIL import Image, ImageOps

    fitted = ImageOps.contain(image, size, Image.Resampling.LANCZOS).convert("RGBA")
    canvas = Image.new("RGBA", size, colour or (0, 0, 0, 0))
    canvas.alpha_composite(fitted, ((size[0] - fitted.width) // 2, (size[1] - fitted.height) // 2))
    return canvas if colour is None else canvas.convert("RGB")


# -- the tool -----------------------------------------------------------------------------


def _unused(args: ResizeImageInput) -> list[str]:
    used = {
        "extend": ("background_prompt", "model", "seed"),
        "crop": ("crop_focus",),
        "pad": ("background_color",),
    }
    notes = []
    for mode, names in used.items():
        for name in names:
            given = getattr(args, name) not in (None, "center")
            if mode != args.mode and given:
                notes.append(f"{name} was not used: it applies to mode {mode}, not {args.mode}")
    return notes


async def _outpaint(args: ResizeImageInput, ctx: ToolContext, image, size: tuple[int, int], notes: list[str]):
    """The image extended on fal to the target's aspect ratio, as (PIL image, model, FalResult); None when
    it has that aspect ratio already."""
    model = ctx.model(args.model)
    max_expand = expand_limit(model)
    scaled_size, (left, right, top, bottom) = outpaint_plan(image.size, size, max_expand)
    if not (left or right or top or bottom):
        notes.append("the image already has the target aspect ratio: it was only scaled, nothing generated")
        return None
    source_url = args.image_url
    if scaled_size != image.size:
        checked_size(scaled_size, "image_url", "the image scaled for outpainting")
        scaled = await in_worker(("image_url",), scale_to, image, scaled_size)
        source_url = (await upload_image(ctx, scaled, "png", "outpaint_input", ("image_url",))).url
        notes.append(
            f"the input was scaled to {scaled_size[0]}x{scaled_size[1]} before outpainting (its "
            f"size on the final canvas; {model.alias} adds at most {max_expand} px a side)"
        )
    request = Outpaint(source_url, left, right, top, bottom, args.background_prompt, args.seed)
    result, call = await ctx.run_model(model, request)
    generated = find_files(result.data)
    if not generated:
        raise ToolError(f"{model.endpoint_id} returned no image")
    extended = await fetch_image(ctx, "output", generated[0].url)
    notes += [
        *call.notes,
        f"added left {left}, right {right}, top {top}, bottom {bottom} px: fal returned "
        f"{extended.width}x{extended.height} ({generated[0].url}), scaled here to "
        f"{size[0]}x{size[1]}",
    ]
    if size[0] > extended.width:
        notes.append("the image was enlarged to reach the target size: upscale_image first gives more detail")
    return extended, model, result


async def resize_image(args: ResizeImageInput, ctx: ToolContext) -> ToolResult:
    custom = args.target_format == "custom"
    size = checked_size(
        SIZES.get(args.target_format) or (args.width, args.height),
        "width" if custom else "target_format",
        "the target",
    )
    if args.mode == "extend":  # refused before anything is fetched or uploaded
        model = ctx.model(args.model)
        prompt_field = (model.input_schema() or {}).get("properties", {}).get("prompt", {})
        refuse_long_prompt(args.background_prompt, prompt_field, model.alias)
    image = await ctx.read_image(args.image_url, field="image_url")  # extend: the URL fal will get
    notes = _unused(args)
    transparent = args.mode != "crop" and await in_worker(("image_url",), alpha_of, image) is not None
    if args.mode == "crop":  # keeps the input's transparency (but in a JPEG: transform's note)
        work = partial(crop, size=size, focus=args.crop_focus)
    elif args.mode == "pad":
        colour = args.background_color
        if transparent and colour is None and args.output_format != "jpeg":
            notes.append(
                "the input has transparency: kept, on transparent bars (background_color: opaque ones)"
            )
        else:
            colour = colour or "#000000"
            if transparent:
                notes.append(f"the input's transparent parts were filled with the bars' colour, {colour}")
        work = partial(pad, size=size, colour=colour)
    else:
        work = partial(fill, size=size)
    extended = await _outpaint(args, ctx, image, size, notes) if args.mode == "extend" else None
    if extended and transparent:  # the outpainted borders are opaque, and so is what the model returns
        notes.append(lost_transparency(extended[1].alias))
    source = {"output": extended[0]} if extended else {"image_url": image}  # what was resized
    file = await transform(
        ctx,
        work,
        source,
        output_format=args.output_format,
        name=f"{args.target_format}_{size[0]}x{size[1]}",
        notes=notes,
    )
    if extended:
        output = generation_output(
            extended[1], extended[2], notes=notes, files=[file], prompt=args.background_prompt
        )
    else:
        output = local_output([file], notes)
    return report("Resized", output, [f"{image.width}x{image.height} -> {size[0]}x{size[1]} ({args.mode})"])


TOOL = Tool(
    name="resize_image",
    title="Resize image for a format",
    description="Resize an image to a social-media format or custom size: extend (AI), crop or pad.",
    input_model=ResizeImageInput,
    handler=resize_image,
    output_model=GenerationOutput,
    model_field="model",
)
