"""What several image tools share: reading input images, doing Pillow
work off the event loop and uploading the result, and the text of a result.

Two guards every tool here goes through: `checked_size` bounds each image size computed before Pillow
allocates it, and `guarded` (which `transform`, `upload_image` and `in_worker` use) turns whatever
Pillow raises while working on an input into a ToolError naming that input.

PIL is imported inside functions only: the server must start without it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

from pydantic import AfterValidator

from fal_mcp import (
    MAX_PIXELS,
    ArgumentError,
    GenerationOutput,
    OutputFile,
    ToolContext,
    ToolError,
    ToolResult,
)

PACKAGE = __name__.split(".")[0]  # where the endpoints' schemas are vendored
# What a result made by this pack's own Pillow code names as its "endpoint": no fal request was made.
LOCAL_ENDPOINT = "local/pillow"
HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
# Nor may any side of an image made here exceed this (a JPEG's largest side): far past any real use,
# while a strip of a few pixels by millions stays under MAX_PIXELS and still breaks encoders.
MAX_SIDE = 65_500


# -- arguments ------------------------------------------------------------------------------


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
        raise ArgumentError(field, str(exc)) from None


async def read_images(ctx: ToolContext, images: dict[str, str]) -> dict[str, Any]:
    """The images of LocalMediaUrl fields (PIL), by field: read here, never uploaded (ctx.read_image);
    a failure names its field and what the user gave. Local paths and data: URIs first, so that a bad
    one is refused before anything is downloaded."""
    local_first = sorted(images, key=lambda field: images[field].startswith(("http://", "https://")))
    read = {field: await ctx.read_image(images[field], field=field) for field in local_first}
    return {field: read[field] for field in images}


# -- bounds and failures of local Pillow work ---------------------------------------------------


def checked_size(size: tuple[int, int], field: str, what: str) -> tuple[int, int]:
    """`size`, for an image about to be made here (a resize, pad, crop or composite target), or a
    ToolError naming `field`, the argument it follows from, if it is over MAX_PIXELS pixels or MAX_SIDE
    a side. Every such size goes through here before Pillow allocates it: inputs are bounded on
    decoding, but sizes computed from them (an overlay scaled to a base's width) are not."""
    width, height = size
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise ArgumentError(
            field,
            f"{what} would be {width}x{height} pixels; an image made here may have at most {MAX_PIXELS} "
            f"pixels and {MAX_SIDE} a side",
        )
    return width, height


def guarded(fields: tuple[str, ...], work: Callable[..., Any], *args: Any) -> Any:
    """Blocking: `work(*args)`, where anything Pillow raises (an odd mode or palette in an input it
    decoded, an encoder's limits, memory) becomes a ToolError naming the inputs `fields`: a bad input,
    not an internal error."""
    try:
        return work(*args)
    except ToolError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split())[:150] or "no details"
        raise ArgumentError(
            " and ".join(fields), f"the image could not be processed ({type(exc).__name__}: {reason})"
        ) from None


async def in_worker(fields: tuple[str, ...], work: Callable[..., Any], *args: Any) -> Any:
    """`guarded(fields, work, *args)` in a worker thread (Pillow blocks)."""
    import anyio

    return await anyio.to_thread.run_sync(guarded, fields, work, *args)


def normalised(image):
    """RGB, or RGBA when the image has transparency (palette and other modes resize badly); always a
    new image, which the caller may change."""
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


# -- transparency -----------------------------------------------------------------------------
# fal's image models work on RGB: an input's alpha channel is dropped (what was transparent comes out
# as whatever colour hid under it, often black). Where the output keeps the input's geometry pixel for
# pixel (upscale_image; inpaint_image outside the mask) the alpha is put back here; elsewhere the result
# says it was lost.


def alpha_of(image):
    """Blocking: the image's alpha channel (mode L) if some pixel is not fully opaque, else None (an
    alpha channel that hides nothing is no transparency)."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return None
    alpha = (image if image.mode in ("RGBA", "LA") else image.convert("RGBA")).getchannel("A")
    return alpha if alpha.getextrema()[0] < 255 else None


def with_alpha(image, alpha):
    """Blocking: `image` (a model's opaque output) with `alpha` scaled to its size as its alpha channel."""
    from PIL import Image

    restored = image.convert("RGBA")
    restored.putalpha(alpha.resize(image.size, Image.Resampling.LANCZOS))
    return restored


def lost_transparency(alias: str) -> str:
    return (
        f"the input image has transparency, which {alias} does not keep: the output is opaque (what was "
        "transparent came out filled, often black); remove_background can cut the subject out again"
    )


async def input_transparency(ctx: ToolContext, field: str, url: str):
    """The alpha channel (alpha_of) of the image at `url`, fetched here; None also when it cannot be read
    here (only a note depends on it: fal reads the input itself)."""
    try:
        image = await ctx.fetch_image(url)
    except ToolError:
        return None
    return await in_worker((field,), alpha_of, image)


async def restore_alpha(
    ctx: ToolContext, output: GenerationOutput, alpha, alias: str, *, outside=None
) -> None:
    """Put the input's alpha channel back on each of `output`'s images (a model that dropped it, on an
    output of the input's geometry): each becomes a PNG stored here in place of fal's, and a note says
    so. `outside`: a mask (L, white = repainted) whose white parts stay opaque. Where an output cannot
    take it (another aspect ratio, unreadable here), a note says its transparency was lost."""
    for index, file in enumerate(output.files):
        try:
            made = await ctx.fetch_image(file.url)
        except ToolError:
            output.notes.append(lost_transparency(alias) + f" (output {index + 1} could not be read here)")
            continue
        if abs(made.width / made.height - alpha.width / alpha.height) > 0.01:
            output.notes.append(lost_transparency(alias) + f" (output {index + 1} has another aspect ratio)")
            continue
        mask = alpha
        if outside is not None:
            mask = await in_worker(("mask_url",), _opaque_where, alpha, outside)
        restored = await in_worker(("output",), with_alpha, made, mask)
        stored = await upload_image(
            ctx, restored, "png", f"{_stem(file.url)}_alpha", ("output",), output=True
        )
        output.files[index] = stored
        output.notes.append(
            f"{alias} drops transparency: the input's alpha channel was scaled to {made.width}x{made.height} "
            f"and put back on its output {index + 1} here"
            + (" (the repainted area opaque)" if outside is not None else "")
            + f", stored as PNG ({stored.url}; fal's own output: {file.url})"
        )


def _opaque_where(alpha, mask):
    """Blocking: `alpha` made opaque where `mask` (another size allowed) is white."""
    from PIL import Image, ImageChops

    white = (
        mask.convert("L")
        .resize(alpha.size, Image.Resampling.BILINEAR)
        .point(lambda v: 255 if v >= 128 else 0)
    )
    return ImageChops.lighter(alpha, white)


def _stem(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:60] or "image"


# -- images out ----------------------------------------------------------------------------


# Encoder settings, per output format. PNG (lossless, the one that keeps transparency): zlib level 1,
# about 4x faster than the default 6 on large images for somewhat larger files (Pillow always filters each
# row adaptively; level 0 would halve the time again but double the file to upload). JPEG and WebP: what
# the user asked for, quality 92 (WebP at its default method: its faster methods fail on large noisy
# images, "partition 0 overflow", or come out larger).
ENCODER_OPTIONS = {"PNG": {"compress_level": 1}, "JPEG": {"quality": 92}, "WEBP": {"quality": 92}}


def prepared(image, output_format: str):
    """Blocking: the image as it is encoded in `output_format`: flattened on white for JPEG (no alpha);
    for PNG, without an alpha channel that hides nothing (every pixel opaque: a quarter less to filter
    and compress, the same pixels); else `image` itself."""
    from PIL import Image

    pil_format, _ = OUTPUT_FORMATS[output_format]
    if pil_format == "JPEG" and image.mode != "RGB":
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if pil_format == "PNG" and image.mode == "RGBA" and image.getchannel("A").getextrema()[0] == 255:
        return image.convert("RGB")
    return image


def encode(image, output_format: str, *, ready: bool = False) -> bytes:
    """Blocking: the image as PNG, JPEG (flattened on white: JPEG has no alpha) or WebP, with
    ENCODER_OPTIONS. `ready`: `image` is `prepared` already."""
    import io

    pil_format, _ = OUTPUT_FORMATS[output_format]
    if not ready:
        image = prepared(image, output_format)
    buffer = io.BytesIO()
    image.save(buffer, pil_format, **ENCODER_OPTIONS.get(pil_format, {}))
    return buffer.getvalue()


async def _encoded(ctx: ToolContext, fields: tuple[str, ...], image, output_format: str, preview: bool):
    """(the encoded file, its inline preview or None), each in a worker thread; for a large image both at
    once (Pillow lets go of the GIL while it scales and encodes). The preview is made from the image in
    memory, as it is encoded (ctx.preview_of): never by decoding or downloading the output again."""
    import anyio

    image = await in_worker(fields, prepared, image, output_format)
    data = made = None

    async def encoding() -> None:
        nonlocal data
        data = await in_worker(fields, partial(encode, ready=True), image, output_format)

    if not preview:
        await encoding()
        return data, None
    from fal_mcp.delivery import PREVIEW_SIDE

    if max(image.size) <= PREVIEW_SIDE:  # small: the file itself may be the preview (preview_of)
        await encoding()
        mime = OUTPUT_FORMATS[output_format][1]
        return data, await anyio.to_thread.run_sync(ctx.preview_of, image, data, mime)

    async def previewing() -> None:  # never raises: no preview is a note, not a failure (ctx.preview_of)
        nonlocal made
        made = await anyio.to_thread.run_sync(ctx.preview_of, image)

    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(previewing)
        try:
            await encoding()
        except Exception as exc:  # raised as it is (naming the inputs), not in an exception group
            failure = exc
    if failure is not None:
        raise failure
    return data, made


async def _store(
    ctx: ToolContext,
    size: tuple[int, int],
    data: bytes,
    output_format: str,
    name: str,
    preview: tuple[bytes, str] | None = None,
) -> OutputFile:
    content_type = OUTPUT_FORMATS[output_format][1]
    extension = "jpg" if output_format == "jpeg" else output_format
    url = await ctx.upload(data, content_type, f"{name}.{extension}")
    file = OutputFile(url=url, content_type=content_type, width=size[0], height=size[1], file_size=len(data))
    return ctx.with_preview(file, preview)


async def upload_image(
    ctx: ToolContext, image, output_format: str, name: str, fields: tuple[str, ...], *, output: bool = False
) -> OutputFile:
    """Encode (in a worker thread; a failure names `fields`, the inputs it was made from) and store on
    fal storage. `output`: the file is one of the call's outputs, so its inline preview is made now, from
    the image in memory."""
    data, preview = await _encoded(ctx, fields, image, output_format, output)
    return await _store(ctx, image.size, data, output_format, name, preview)


async def transform(
    ctx: ToolContext,
    work: Callable[..., Any],
    images: dict[str, Any],
    *,
    output_format: str,
    name: str,
    notes: list[str] | None = None,
) -> OutputFile:
    """Load → transform → encode → upload. In a worker thread: each of `images` (keyed by the argument
    it came from) is `normalised`, `work(*images)` returns the PIL image to store, and that is encoded
    (and its preview made from it, beside: `_encoded`). A failure names the input it happened on (all of
    them once they are combined). A result with transparency asked for as JPEG is flattened on white,
    and `notes` says so."""
    import anyio

    fields = tuple(images)

    def run():
        ready = [guarded((field,), normalised, image) for field, image in images.items()]
        result = guarded(fields, work, *ready)
        flattened = output_format == "jpeg" and alpha_of(result) is not None
        return result, flattened

    result, flattened = await anyio.to_thread.run_sync(run)
    if flattened and notes is not None:
        notes.append(
            "JPEG has no transparency: the transparent parts were flattened on white (png or webp keep them)"
        )
    data, preview = await _encoded(ctx, fields, result, output_format, True)
    return await _store(ctx, result.size, data, output_format, name, preview)


def local_output(files: list[OutputFile], notes: list[str]) -> GenerationOutput:
    """The structured result of work done here, not on fal: no request id to give, so a local one
    (unique, so saved copies get distinct names)."""
    return GenerationOutput(
        files=files,
        endpoint=LOCAL_ENDPOINT,
        model=None,
        request_id=f"local-{uuid.uuid4().hex[:12]}",
        notes=notes,
    )


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
