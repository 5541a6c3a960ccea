"""Local image work is bounded and never fails as an internal error: every size the image pack
computes is checked before Pillow allocates it, and damaged images of every common format (truncated,
bytes flipped, chunks corrupted) give either a result or an error naming the field they came in.

Deterministic: hypothesis runs derandomized, and nothing here measures time or memory; allocation is
checked by recording what Pillow is asked to allocate."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fal_mcp.delivery import make_preview
from fal_mcp.media import MAX_PIXELS, MediaError

from .conftest import tool_table_for

# Pillow warns about some damaged files (truncated TIFF tags, corrupt EXIF) and then reads or refuses them.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

MIME = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}
# Per format and tool: 6 formats x 15 = 90 damaged images a tool.
FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunks(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(offset, type, body) of each chunk of a PNG."""
    chunks, offset = [], 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        chunks.append((offset, kind, data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def many_idat(data: bytes, size: int = 16) -> bytes:
    """The same PNG with its pixel data split into many small IDAT chunks: PIL reads those while
    decoding, so a chunk broken between two of them fails late (SyntaxError, not OSError)."""
    chunks = png_chunks(data)
    pixels = b"".join(body for _, kind, body in chunks if kind == b"IDAT")
    out = [data[:8]]
    for _, kind, body in chunks:
        if kind == b"IDAT":
            if pixels:
                out += [png_chunk(b"IDAT", pixels[i : i + size]) for i in range(0, len(pixels), size)]
                pixels = b""
        else:
            out.append(png_chunk(kind, body))
    return b"".join(out)


def picture(size=(40, 28)) -> Image.Image:
    image = Image.new("RGBA", size, (30, 120, 200, 255))
    for x in range(0, size[0], 5):
        image.paste((250, 240, 10, 128), (x, 0, x + 2, size[1]))
    return image


def samples() -> dict[str, bytes]:
    """One small valid image per format, some with more than one frame."""
    image = picture()
    frames = [image.convert("P"), image.rotate(180).convert("P")]
    return {
        "PNG": many_idat(encoded(image, "PNG")),
        "JPEG": encoded(image.convert("RGB"), "JPEG", quality=90),
        "GIF": encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "WEBP": encoded(image, "WEBP", save_all=True, append_images=[image.rotate(180)]),
        "TIFF": encoded(image.convert("RGB"), "TIFF", compression="tiff_deflate"),
        "BMP": encoded(image.convert("RGB"), "BMP"),
    }


SAMPLES = samples()


def structure(fmt: str, data: bytes) -> list[int]:
    """Offsets of the bytes that hold a file's structure together: chunk lengths, types and CRCs
    (PNG), RIFF chunk headers (WebP), marker segment headers (JPEG), else the header."""
    if fmt == "PNG":
        return [
            offset + i
            for offset, _, body in png_chunks(data)
            for i in (*range(8), *range(len(body) + 8, len(body) + 12))
            if offset + i < len(data)
        ]
    if fmt == "WEBP":
        offsets, offset = list(range(min(12, len(data)))), 12
        while offset + 8 <= len(data):
            offsets += range(offset, offset + 8)
            offset += 8 + (struct.unpack("<I", data[offset + 4 : offset + 8])[0] + 1) // 2 * 2
        return offsets
    if fmt == "JPEG":
        offsets, offset = [], 2
        while offset + 4 <= len(data) and data[offset] == 0xFF and data[offset + 1] != 0xDA:
            offsets += range(offset, offset + 4)
            offset += 2 + struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        return offsets or [0]
    return list(range(min(64, len(data))))


@st.composite
def damaged(draw, fmt: str) -> bytes:
    """The sample image of `fmt` truncated, with bytes flipped, overwritten or inserted, or its chunks
    broken. Where and what come from a Random hypothesis seeds: its own integers favour small values,
    which would hit the magic number at offset 0 nearly every time."""
    rng = draw(st.randoms(use_true_random=False))
    data = bytearray(SAMPLES[fmt])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "garbage", "chunk"]))
        at = rng.randrange(len(data))
        if kind == "truncate":
            data = data[: max(at, 1)]
        elif kind == "flip":
            data[at] ^= rng.randrange(1, 256)
        elif kind == "garbage":
            data[at : at + rng.randrange(17)] = rng.randbytes(rng.randrange(1, 17))
        else:
            data[rng.choice(structure(fmt, bytes(data)) or [0])] ^= rng.randrange(1, 256)
    return bytes(data)


# -- through the real tools ------------------------------------------------------------------------


@pytest.fixture
def table(portal, portal_sandbox, fal_registry):
    """A tool table on the module's sandbox, served by `portal` (the hypothesis tests are synchronous)."""
    portal_sandbox.state.reset()
    portal_sandbox.state.set_config(job_seconds=0.01)
    with portal.wrap_async_context_manager(tool_table_for(portal_sandbox, fal_registry)) as table:
        yield table


def call(portal, table, tool: str, arguments: dict):
    return portal.call(table.call, tool, arguments)


def assert_handled(result, field: str):
    """A success, or an error naming `field`; never an internal error."""
    text = result.content[0].text
    assert "Internal error" not in text and "Traceback" not in text, text
    if result.is_error:
        assert f"{field}:" in text, text


VALID = data_uri(encoded(picture((300, 200)), "PNG"))


def assert_still_serving(portal, table):
    result = call(portal, table, "compose_images", {"base_image_url": VALID, "overlay_image_url": VALID})
    assert not result.is_error, result.content[0].text


FORMATS = sorted(SAMPLES)


@pytest.mark.parametrize("fmt", FORMATS)
def test_compose_images_handles_damaged_images(portal, table, fmt):
    @FUZZ
    @given(damaged(fmt), st.sampled_from(["base_image_url", "overlay_image_url"]))
    def check(data, field):
        arguments = {"base_image_url": VALID, "overlay_image_url": VALID, field: data_uri(data, MIME[fmt])}
        assert_handled(call(portal, table, "compose_images", arguments), field)

    check()
    assert_still_serving(portal, table)


@pytest.mark.parametrize("fmt", FORMATS)
def test_resize_image_handles_damaged_images(portal, table, fmt):
    @FUZZ
    @given(damaged(fmt), st.sampled_from([("crop", "center"), ("crop", "content"), ("pad", "center")]))
    def check(data, mode):
        arguments = {
            "image_url": data_uri(data, MIME[fmt]),
            "target_format": "instagram_story",
            "mode": mode[0],
            "crop_focus": mode[1],
        }
        assert_handled(call(portal, table, "resize_image", arguments), "image_url")

    check()
    assert_still_serving(portal, table)


@pytest.mark.parametrize("fmt", FORMATS)
def test_inpaint_image_handles_damaged_masks(portal, table, fmt):
    @FUZZ
    @given(damaged(fmt))
    def check(data):
        arguments = {"image_url": VALID, "mask_url": data_uri(data, MIME[fmt]), "prompt": "a boat"}
        assert_handled(call(portal, table, "inpaint_image", arguments), "mask_url")

    check()
    assert_still_serving(portal, table)


# -- sizes computed from tiny inputs ---------------------------------------------------------------


@pytest.fixture
def allocations(monkeypatch):
    """Every image size Pillow is asked to make (new, resize, crop), in any thread; a request over
    MAX_PIXELS is recorded and refused rather than allocated, so a regression cannot take gigabytes."""
    asked: list[tuple[int, int]] = []

    def recorded(size):
        width, height = (int(side) for side in size)
        asked.append((width, height))
        if width * height > MAX_PIXELS:
            raise MemoryError(f"asked for {width}x{height}")

    real_new, real_resize, real_crop = Image.new, Image.Image.resize, Image.Image.crop

    def new(mode, size, *args, **kwargs):
        recorded(size)
        return real_new(mode, size, *args, **kwargs)

    def resize(self, size, *args, **kwargs):
        recorded(size)
        return real_resize(self, size, *args, **kwargs)

    def crop(self, box=None):
        if box is not None:
            recorded((box[2] - box[0], box[3] - box[1]))
        return real_crop(self, box)

    monkeypatch.setattr(Image, "new", new)
    monkeypatch.setattr(Image.Image, "resize", resize)
    monkeypatch.setattr(Image.Image, "crop", crop)
    return asked


def strip(width: int, height: int) -> str:
    return data_uri(encoded(Image.new("RGB", (width, height), (200, 30, 30)), "PNG"))


@pytest.mark.parametrize(
    "base, overlay, scale, expected",
    [
        # 1x60000 scaled to 8000 wide would be 8000x480000000: some 4 GB per megapixel row...
        ((8000, 1), (1, 60_000), 1.0, "would be 8000x480000000 pixels"),
        ((8000, 1), (1, 60_000), 0.15, "would be 1200x72000000 pixels"),
        # under the pixel limit, but 100000 pixels tall
        ((100, 100), (1, 1000), 1.0, "would be 100x100000 pixels"),
    ],
)
def test_compose_images_refuses_an_overlay_that_would_be_too_big(
    portal, table, allocations, base, overlay, scale, expected
):
    arguments = {"base_image_url": strip(*base), "overlay_image_url": strip(*overlay), "scale": scale}
    allocations.clear()  # making the inputs above does not count
    result = call(portal, table, "compose_images", arguments)
    text = result.content[0].text
    assert result.is_error and "overlay_image_url:" in text and expected in text, text
    assert f"scale {scale:g}" in text  # the other argument it follows from
    assert all(width * height <= MAX_PIXELS for width, height in allocations), max(allocations)
    assert_still_serving(portal, table)


def test_within_the_limits_compose_images_still_works(portal, table, allocations):
    arguments = {"base_image_url": strip(8000, 1), "overlay_image_url": strip(8, 1), "scale": 1.0}
    allocations.clear()
    result = call(portal, table, "compose_images", arguments)
    assert not result.is_error, result.content[0].text
    assert "Overlay 8000x1000 at" in result.content[0].text
    assert max(width * height for width, height in allocations) <= MAX_PIXELS


def test_inpaint_image_refuses_to_resize_a_mask_to_an_overlong_image(
    portal, portal_sandbox, table, allocations
):
    arguments = {"image_url": strip(1, 70_000), "mask_url": strip(4, 4), "prompt": "x"}
    allocations.clear()
    result = call(portal, table, "inpaint_image", arguments)
    text = result.content[0].text
    assert result.is_error and "image_url:" in text and "1x70000 pixels" in text, text
    assert allocations == [] and portal_sandbox.state.submissions == []  # refused before fal was paid


# -- Pillow failing after decoding -----------------------------------------------------------------


def test_an_encoder_refusing_the_result_names_the_inputs(portal, table):
    # Under every limit here, but WebP cannot hold a side over 16383 pixels.
    result = call(
        portal,
        table,
        "compose_images",
        {"base_image_url": strip(20_000, 1), "overlay_image_url": strip(4, 4), "output_format": "webp"},
    )
    text = result.content[0].text
    assert result.is_error and "Internal error" not in text, text
    assert "base_image_url and overlay_image_url: the image could not be processed (ValueError" in text


def test_a_pillow_error_on_an_input_names_that_input(portal, table, monkeypatch):
    from fal_mcp_image import _common

    def broken(image):  # stands in for an odd mode or palette Pillow only chokes on when converting
        if image.size == (5, 5):
            raise SyntaxError("bad palette")
        return image.convert("RGBA")

    monkeypatch.setattr(_common, "normalised", broken)
    result = call(
        portal, table, "compose_images", {"base_image_url": VALID, "overlay_image_url": strip(5, 5)}
    )
    text = result.content[0].text
    assert (
        result.is_error
        and text
        == "Invalid arguments for compose_images: overlay_image_url: the image could not be processed "
        "(SyntaxError: bad palette)"
    ), text


# -- previews of fal's outputs ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_corrupt_output_gets_a_note_instead_of_a_preview(tool_table, sandbox, monkeypatch):
    from fal_mcp_sandbox import media

    real = media.encode_image

    def truncated(img, fmt):
        data, mime, ext = real(img, fmt)
        return data[: len(data) // 2], mime, ext

    monkeypatch.setattr(media, "encode_image", truncated)
    sandbox.state.set_config(job_seconds=0.01)
    result = await tool_table.call("generate_image", {"prompt": "a cat", "image_size": "square"})
    text = result.content[0].text
    assert not result.is_error, text
    assert "Note: no preview of image 1: " in text and "Internal error" not in text
    assert [c for c in result.content if c.type == "image"] == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_make_preview_raises_only_media_error(fmt):
    @settings(FUZZ, max_examples=40)
    @given(damaged(fmt))
    def check(data):
        try:
            preview, mime = make_preview(data)
        except MediaError:
            return
        shown = Image.open(io.BytesIO(preview))  # what is shown decodes: passed through or re-encoded
        shown.load()
        assert mime == f"image/{shown.format.lower()}" and max(shown.size) <= 1024

    check()


@pytest.mark.parametrize("fmt", ["ICO", "PDF", "EPS"])
def test_formats_outside_the_list_are_not_decoded(portal, table, fmt):
    """ICO learns its real size only while decoding; EPS and PDF would go to Ghostscript: refused before."""
    data = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
        if fmt == "EPS"
        else encoded(picture((32, 32)), fmt)
    )
    result = call(
        portal,
        table,
        "compose_images",
        {
            "base_image_url": data_uri(data, "image/x-icon"),
            "overlay_image_url": data_uri(encoded(picture(), "PNG")),
        },
    )
    assert result.is_error and "base_image_url" in result.content[0].text, result.content[0].text
    assert "formats read here" in result.content[0].text
    assert_still_serving(portal, table)
