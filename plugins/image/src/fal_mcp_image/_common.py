"""What several image tools share: argument translation helpers, reading input images, doing Pillow
work off the event loop and uploading the result, and the text of a result.

PIL is imported inside functions only: the server must start without it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator

from fal_mcp import (
    FalResult,
    GenerationOutput,
    Model,
    OutputFile,
    ToolContext,
    ToolError,
    ToolResult,
    find_files,
)

# What a result made by this pack's own Pillow code names as its "endpoint": no fal request was made.
LOCAL_ENDPOINT = "local/pillow"
HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}


# -- argument translation ----------------------------------------------------------------


def optional(args: Any, **fields: str) -> dict[str, Any]:
    """`{endpoint_field: args.<tool_field>}` for each tool field that was given (is not None)."""
    return {target: getattr(args, source) for target, source in fields.items()
            if getattr(args, source) is not None}


def dropped(args: Any, names: tuple[str, ...], alias: str) -> tuple[str, ...]:
    """Notes for the parameters in `names` that were given but that model `alias` cannot take."""
    return tuple(f"{name} was not sent: {alias} does not take it" for name in names
                 if getattr(args, name) not in (None, ""))


def _hex_colour(value: str) -> str:
    if not HEX_COLOUR.match(value):
        raise ValueError(f"{value!r} is not a hex colour such as #1e90ff or #fff")
    return value.lower()


HexColour = Annotated[str, AfterValidator(_hex_colour)]


# -- images in -----------------------------------------------------------------------------


async def fetch_image(ctx: ToolContext, field: str, url: str):
    """The image at `url` (PIL), through the core's download limits; a failure names the field."""
    try:
        return await ctx.fetch_image(url)
    except ToolError as exc:
        raise ToolError(f"{field}: {exc}") from None


# -- images out ----------------------------------------------------------------------------


def encode(image, output_format: str) -> bytes:
    """Blocking: the image as PNG, JPEG (flattened on white: JPEG has no alpha) or WebP."""
    import io

    from PIL import Image

    pil_format, _ = OUTPUT_FORMATS[output_format]
    if pil_format == "JPEG" and image.mode != "RGB":
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    buffer = io.BytesIO()
    # PNG at zlib level 1: about 4x faster than the default 6 on large images, for somewhat larger files
    options = {"JPEG": {"quality": 92}, "WEBP": {"quality": 92}, "PNG": {"compress_level": 1}}
    image.save(buffer, pil_format, **options.get(pil_format, {}))
    return buffer.getvalue()


async def upload_image(ctx: ToolContext, image, output_format: str, name: str) -> OutputFile:
    """Encode (in a worker thread) and store on fal storage."""
    import anyio

    data = await anyio.to_thread.run_sync(encode, image, output_format)
    content_type = OUTPUT_FORMATS[output_format][1]
    extension = "jpg" if output_format == "jpeg" else output_format
    url = await ctx.upload(data, content_type, f"{name}.{extension}")
    return OutputFile(url=url, content_type=content_type, width=image.width, height=image.height,
                      file_size=len(data))


async def transform(ctx: ToolContext, work: Callable[..., Any], *images, output_format: str,
                    name: str) -> OutputFile:
    """Load → transform → encode → upload: `work(*images)` runs in a worker thread and returns the
    PIL image to store."""
    import anyio

    result = await anyio.to_thread.run_sync(work, *images)
    return await upload_image(ctx, result, output_format, name)


def local_output(files: list[OutputFile], notes: list[str]) -> GenerationOutput:
    """The structured result of work done here, not on fal: no request id to give, so a local one
    (unique, so saved copies get distinct names)."""
    return GenerationOutput(files=files, endpoint=LOCAL_ENDPOINT, model=None,
                            request_id=f"local-{uuid.uuid4().hex[:12]}", notes=notes)


def fal_output(model: Model, result: FalResult, notes: tuple[str, ...] | list[str] = (),
               files: list[OutputFile] | None = None, prompt: str | None = None) -> GenerationOutput:
    """The structured result of a fal call: every file fal returned (or `files`), the seed it used."""
    seed = result.data.get("seed")
    return GenerationOutput(files=find_files(result.data) if files is None else files,
                            endpoint=model.endpoint_id, model=model.alias, request_id=result.request_id,
                            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
                            prompt=prompt, notes=list(notes))


def report(action: str, output: GenerationOutput, details: list[str] | tuple[str, ...] = ()) -> ToolResult:
    """`<action> N images with <alias> (<endpoint>), seed S, request R:`, the files, details, notes."""
    count = len(output.files)
    if output.endpoint == LOCAL_ENDPOINT:
        source = f"locally (no fal request; id {output.request_id})"
    else:
        seed = f", seed {output.seed}" if output.seed is not None else ""
        source = f"with {output.model} ({output.endpoint}){seed}, request {output.request_id}"
    lines = [f"{action} {count} image{'s' if count != 1 else ''} {source}:"]
    for number, file in enumerate(output.files, 1):
        lines.append(f"{number}. {file.url} ({file.width}x{file.height}, {file.content_type})")
    lines += details
    lines += [f"Note: {note}" for note in output.notes]
    return ToolResult("\n".join(lines), output)
