"""Media going out: inline previews of images, and saved copies of every output file.

Applied by the core to every tool result whose structured content is a
`GenerationOutput`, so each pack gets it without doing anything.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from pathlib import Path
from typing import TYPE_CHECKING

from . import memory
from .media import MediaError, download, fetch, open_image
from .outputs import GenerationOutput, OutputFile

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)
PREVIEW_SIDE = 1024
PREVIEW_BYTES = 1_000_000
MAX_SAVE_BYTES = 2 * 1024 * 1024 * 1024
# A saved output may be a long video: far longer than a download for local work (media.FETCH_TIMEOUT).
SAVE_TIMEOUT = 900.0


def _is_image(file: OutputFile) -> bool:
    return (file.content_type or "").startswith("image/") or (
        file.content_type is None and file.width is not None
    )


def make_preview(data: bytes) -> tuple[bytes, str]:
    """The image scaled to at most PREVIEW_SIDE a side and re-encoded to stay under PREVIEW_BYTES.
    Blocking (PIL): run it in a worker thread. Raises MediaError only: the caller makes it a note."""
    # Decoded even when it is passed through untouched: a truncated or corrupt file must get a note, not
    # be shown as a broken preview. A JPEG is decoded only as large as needed (open_image's `draft`):
    # one passed through at 1/8 scale (every byte is still read and checked; the pixels are not shown),
    # one scaled down at the least of 1/2, 1/4, 1/8 still at least the preview's size, which the
    # resampling then brings to the preview's exact size (the size scaling the full image gives).
    full: list[tuple[int, int]] = []

    def draft(image) -> tuple[int, int]:
        full.append(image.size)
        if _passed_through(image.size, data, "image/jpeg"):
            return (1, 1)
        return _thumbnail_size(image.size, PREVIEW_SIDE)

    image = open_image(data, draft=draft)  # raises MediaError only
    mime = f"image/{(image.format or '').lower()}"
    size = full[0] if full else image.size
    if _passed_through(size, data, mime):
        return data, mime
    return _encoded_preview(image, _thumbnail_size(size, PREVIEW_SIDE))


def _passed_through(size: tuple[int, int], data: bytes | None, mime: str | None) -> bool:
    """Whether an image of `size`, encoded as `data` of type `mime`, is its own preview."""
    return (
        max(size) <= PREVIEW_SIDE
        and data is not None
        and len(data) <= PREVIEW_BYTES
        and mime in ("image/jpeg", "image/png")
    )


def preview_of(image, data: bytes | None = None, mime: str | None = None) -> tuple[bytes, str]:
    """The preview of an image in memory (PIL), as make_preview makes it from a file, without decoding
    anything: for an image made here, from the image itself rather than its encoded output. `data` and
    `mime`: the image's encoded file (passed through as the preview when it is a small enough PNG or
    JPEG). `image` is not changed. Blocking (PIL). Raises MediaError only."""
    try:
        if data is not None and _passed_through(image.size, data, mime):
            return data, mime or ""  # already a fine preview: no re-encoding
    except Exception as exc:
        raise MediaError(f"it could not be made into a preview ({type(exc).__name__}: {exc})") from None
    return _encoded_preview(image, _thumbnail_size(image.size, PREVIEW_SIDE))


def _encoded_preview(image, size: tuple[int, int]) -> tuple[bytes, str]:
    """`image` scaled to `size` (at most PREVIEW_SIDE a side) and encoded, smaller again until it is
    under PREVIEW_BYTES. `image` is not changed. Raises MediaError only."""
    import io

    try:
        side = PREVIEW_SIDE
        shrunk = _resized(image, size)
        has_alpha = shrunk.mode in ("RGBA", "LA") or (shrunk.mode == "P" and "transparency" in shrunk.info)
        while True:
            buffer = io.BytesIO()
            if has_alpha:
                shrunk.save(buffer, "PNG", optimize=True)
                mime = "image/png"
            else:
                (shrunk if shrunk.mode == "RGB" else shrunk.convert("RGB")).save(buffer, "JPEG", quality=85)
                mime = "image/jpeg"
            if buffer.tell() <= PREVIEW_BYTES or side <= 64:
                return buffer.getvalue(), mime
            side = int(side * 0.7)
            shrunk = _shrunk(shrunk, side)
    except Exception as exc:  # whatever PIL meets scaling or encoding it: no preview, not a failed call
        raise MediaError(f"it could not be made into a preview ({type(exc).__name__}: {exc})") from None


def _thumbnail_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """The size `Image.thumbnail((side, side))` gives an image of `size` (Pillow's own arithmetic, in
    its preserve_aspect_ratio); `size` itself if it fits already."""
    import math

    width, height = size
    if side >= width and side >= height:
        return size
    aspect = width / height

    def round_aspect(number: float, key) -> int:
        return max(min(math.floor(number), math.ceil(number), key=key), 1)

    x = y = side
    if x / y >= aspect:
        x = round_aspect(y * aspect, key=lambda n: abs(aspect - n / y))
    else:
        y = round_aspect(x / aspect, key=lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


def _shrunk(image, side: int):
    """A new image: `image` scaled as `Image.thumbnail((side, side))` scales it in place (the same size,
    filter and reducing gap: the same pixels), without copying it first; a copy if it fits already."""
    return _resized(image, _thumbnail_size(image.size, side))


def _resized(image, size: tuple[int, int]):
    """A new image: `image` at `size` (bicubic, as Image.thumbnail), or a copy if it has that size."""
    from PIL import Image

    if tuple(size) == image.size:
        return image.copy()
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def _file_name(tool: str, request_id: str, index: int, file: OutputFile) -> str:
    extension = Path(file.url.split("?")[0]).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,5}", extension):
        extension = mimetypes.guess_extension(file.content_type or "") or ".bin"
    safe_id = re.sub(r"[^A-Za-z0-9_-]", "", request_id)[:64] or "request"
    return f"{tool}_{safe_id}_{index}{extension}"


async def save(
    url: str,
    path: Path,
    *,
    trusted_urls,
    http=None,
    max_bytes: int = MAX_SAVE_BYTES,
    timeout: float = SAVE_TIMEOUT,
) -> Path:
    """The file at `path`, downloading `url` to it (media.download: the same checks and redirect policy
    as every download) unless it is there already: an output is written once, however often its result
    is asked for (check_job). The download goes to a temporary file of its own, linked into place only
    when complete, so concurrent saves of one output never overwrite or delete each other's file, and a
    failed one leaves nothing behind."""
    import os
    import secrets

    import anyio

    if path.exists():
        return path
    partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
    try:
        async with await anyio.open_file(partial, "xb") as out:
            try:
                await download(
                    url, out.write, trusted_urls=trusted_urls, max_bytes=max_bytes, timeout=timeout, http=http
                )
            except MediaError as exc:
                raise MediaError(f"{url[:200]}: {exc}") from None
        try:
            os.link(partial, path)  # fails if another save finished first: theirs is kept
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


async def deliver(
    output: GenerationOutput, *, tool: str, settings: Settings, http=None
) -> list[tuple[bytes, str]]:
    """Save files to FAL_MCP_OUTPUT_DIR if set (filling `local_path`), and make image previews.
    Returns the previews; a file that cannot be previewed or saved gets a note instead of failing the call."""
    import anyio

    trusted = list(settings.urls.values())
    previews: list[tuple[bytes, str]] = []
    for index, file in enumerate(output.files):
        if file.local_path and Path(file.local_path).is_file():
            pass  # saved when the job finished (a stored result read again)
        elif settings.output_dir:
            try:
                target = Path(settings.output_dir) / _file_name(tool, output.request_id, index, file)
                file.local_path = str(await save(file.url, target, trusted_urls=trusted, http=http))
                memory.large_work_done(Path(file.local_path).stat().st_size)
            except Exception as exc:  # the generation succeeded: report, do not fail the call
                output.notes.append(f"file {index + 1} was not saved to {settings.output_dir}: {exc}")
        if settings.inline_previews and _is_image(file) and file._preview is not None:
            previews.append(file._preview)  # made here from the image in memory: nothing to fetch
        elif settings.inline_previews and _is_image(file):
            try:
                data = (
                    Path(file.local_path).read_bytes()
                    if file.local_path
                    else (await fetch(file.url, trusted_urls=trusted, http=http)).data
                )
                previews.append(await anyio.to_thread.run_sync(make_preview, data))
                memory.large_work_done(len(data))
            except MediaError as exc:
                output.notes.append(f"no preview of image {index + 1}: {exc}")
    return previews
