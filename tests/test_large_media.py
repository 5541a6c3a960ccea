"""Large media (issue 20): uploads streamed from disk, memory reclaimed after large work, images made here
previewed from memory and encoded per output. The RSS figures themselves come from
benchmarks/large_media.py; here, the mechanisms, deterministically."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections import Counter

import pytest
from PIL import Image

from .conftest import count_routes, tool_table_for

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def stored_file(sandbox, url: str) -> bytes:
    key = url.split("/cdn/files/", 1)[1].split("/", 1)[0]
    return sandbox.state.storage.get(key).data


def big_file(path, size: int) -> str:
    """A sparse file of `size` bytes with distinct data scattered through it (so a part put in the wrong
    place, or a short read, changes its hash); its hex SHA-256."""
    with open(path, "wb") as out:
        out.truncate(size)
        for offset in range(0, size, 7 * MiB + 12345):
            out.seek(offset)
            out.write(hashlib.sha256(str(offset).encode()).digest() * 64)
    with open(path, "rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


@pytest.fixture
def reads(monkeypatch):
    """Every read the upload code makes of a file (its length), and a guard that nothing reads a file to
    upload whole: read_local_file (the whole-file reader) must not be used for uploads."""
    from fal_mcp import media, uploads

    seen: list[int] = []
    real_pread = os.pread

    def pread(descriptor, length, offset):
        seen.append(length)
        return real_pread(descriptor, length, offset)

    monkeypatch.setattr(uploads.os, "pread", pread)

    def whole(*args, **kwargs):
        raise AssertionError("an upload read the whole file into memory")

    monkeypatch.setattr(media, "read_local_file", whole)
    return seen


async def test_a_large_file_is_uploaded_in_parts_read_one_at_a_time(sandbox, registry, tmp_path, reads):
    """Over fal_client's multipart threshold (100 MiB): fal's multipart protocol on the token's base_url,
    each part read from disk only when it is sent (no read larger than a part), arriving intact."""
    from fal_client.client import MULTIPART_CHUNK_SIZE, MULTIPART_THRESHOLD

    size = MULTIPART_THRESHOLD + 23 * MiB + 7  # 12 parts, the last one short
    digest = big_file(tmp_path / "big.bin", size)
    settings = {"FAL_MCP_ALLOWED_DIRS": str(tmp_path), "FAL_MCP_MAX_UPLOAD_MB": "200"}
    async with tool_table_for(sandbox, registry, **settings) as table:
        result = await table.call("upload_file", {"file_path": str(tmp_path / "big.bin")})
    assert not result.is_error, result.content[0].text
    url = result.structured_content["url"]
    assert hashlib.sha256(stored_file(sandbox, url)).hexdigest() == digest
    parts = -(-size // MULTIPART_CHUNK_SIZE)
    assert count_routes(sandbox, "multipart") == parts + 2  # create, each part, complete
    assert count_routes(sandbox, "upload") == 0
    assert max(reads) <= MULTIPART_CHUNK_SIZE  # the hash and the parts: never the whole file
    assert sum(length for length in reads if length == MULTIPART_CHUNK_SIZE) >= size - MULTIPART_CHUNK_SIZE


async def test_a_file_under_the_threshold_is_one_post_streamed_in_chunks(sandbox, registry, tmp_path, reads):
    from fal_mcp.uploads import CHUNK

    size = 9 * MiB + 3
    digest = big_file(tmp_path / "clip.mp4", size)
    settings = {"FAL_MCP_ALLOWED_DIRS": str(tmp_path)}
    async with tool_table_for(sandbox, registry, **settings) as table:
        result = await table.call("upload_file", {"file_path": "clip.mp4"})
        again = await table.call("upload_file", {"file_path": "clip.mp4"})  # the same content: stored once
    assert not result.is_error, result.content[0].text
    url = result.structured_content["url"]
    assert again.structured_content["url"] == url
    assert hashlib.sha256(stored_file(sandbox, url)).hexdigest() == digest
    (upload,) = [r for r in sandbox.state.requests if r["route"] == "upload"]
    assert upload["path"].endswith("/files/upload")
    stored = sandbox.state.storage.get(url.split("/cdn/files/", 1)[1].split("/", 1)[0])
    assert (stored.content_type, stored.file_name) == ("video/mp4", "clip.mp4")
    assert max(reads) <= CHUNK


async def test_a_failed_cdn_upload_falls_back_to_the_storage_upload_streamed(sandbox, registry, tmp_path):
    """As fal_client's own upload: the v3 CDN refusing, the signed storage upload (initiate, PUT)."""
    digest = big_file(tmp_path / "a.bin", 3 * MiB)
    sandbox.state.add_fault(route="upload", status=500, times=1)  # the first request on the upload route
    async with tool_table_for(sandbox, registry, FAL_MCP_ALLOWED_DIRS=str(tmp_path)) as table:
        result = await table.call("upload_file", {"file_path": "a.bin"})
    assert not result.is_error, result.content[0].text
    url = result.structured_content["url"]
    assert hashlib.sha256(stored_file(sandbox, url)).hexdigest() == digest
    paths = [r["path"] for r in sandbox.state.requests if r["route"] == "upload"]
    assert any("/storage/upload/initiate" in p for p in paths) and any("/storage-upload/" in p for p in paths)


async def test_a_file_that_shrinks_while_uploaded_is_refused(gateway, tmp_path):
    from fal_mcp.media import MediaError, open_local_file

    (tmp_path / "f.bin").write_bytes(b"x" * (2 * MiB))
    opened = open_local_file(str(tmp_path / "f.bin"), [str(tmp_path)], False, 10 * MiB)
    try:
        os.truncate(tmp_path / "f.bin", MiB)
        with pytest.raises(MediaError, match="shrank"):
            await gateway.upload_file(opened, "application/octet-stream")
    finally:
        opened.close()


# -- memory comes back --------------------------------------------------------------------------


async def test_a_reclaim_runs_once_quiet_and_never_while_calls_run(monkeypatch):
    import asyncio

    from fal_mcp import memory

    ran: list[int] = []
    monkeypatch.setattr(memory, "reclaim", lambda **_: ran.append(1) or (0, False))
    monkeypatch.setattr(memory, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(memory, "_busy", False)
    monkeypatch.setattr(memory, "_timer", None)
    monkeypatch.setattr(memory, "_first", None)

    async def turns() -> None:  # a zero-delay timer runs within a few turns of the loop
        for _ in range(20):
            await asyncio.sleep(0)

    memory.large_work_done(memory.LARGE_BYTES - 1)  # small: nothing
    assert not memory.reclaim_pending()
    memory.went_busy()
    memory.large_work_done(memory.LARGE_BYTES)  # while calls run: put off
    assert not memory.reclaim_pending()
    await turns()
    assert ran == []
    memory.went_idle()
    assert memory.reclaim_pending()
    memory.went_busy()  # a call came before it ran: put off again
    assert not memory.reclaim_pending()
    await turns()
    assert ran == []
    memory.went_idle()
    for _ in range(3):  # a run of large work while idle: one reclaim, after it
        memory.large_work_done(memory.LARGE_BYTES)
    await turns()
    assert ran == [1]
    assert not memory.reclaim_pending()


PINNED_PROBE = r"""
import re, sys
from fal_mcp import memory

if sys.argv[1] == "pin":
    assert memory.pin_mmap_threshold()

def rss_mib():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1)) // 1024

large = bytearray(16 << 20)
del large  # a large block freed: unpinned, glibc raises its mmap threshold to 16 MiB
buffers = [bytearray(1 << 20) for _ in range(50)]
above = bytearray(100 << 10)  # heap memory above the buffers: the heap's top stays in use
held = rss_mib()
del buffers
print(held - rss_mib())
"""


@pytest.mark.parametrize("mode, returned_mib", [("pin", (40, 60)), ("unpinned", (0, 10))])
def test_a_pinned_mmap_threshold_hands_freed_buffers_back(mode, returned_mib):
    import subprocess
    import sys

    from fal_mcp import memory

    if memory._glibc() is None:
        pytest.skip("malloc is not glibc's: it has no mmap threshold to pin")
    done = subprocess.run(
        [sys.executable, "-c", PINNED_PROBE, mode], capture_output=True, text=True, timeout=60, check=True
    )
    low, high = returned_mib
    assert low <= int(done.stdout) <= high, done.stdout  # MiB given back when 50 MiB of buffers are freed


def test_reclaim_collects_cycles_and_trims_the_heap():
    import gc

    from fal_mcp import memory

    class Node:
        pass

    before = gc.get_threshold()
    gc.set_threshold(10**9, 50, 100)  # as a served process: the collector practically never runs alone
    try:
        first, second = Node(), Node()
        first.other, second.other, first.payload = second, first, bytearray(20 * MiB)
        del first, second
        collected, _ = memory.reclaim()
        assert collected >= 2
    finally:
        gc.set_threshold(*before)


# -- images made here: encoded per output, previewed from memory -------------------------------


def noisy(size, mode="RGB") -> Image.Image:
    image = Image.effect_noise(size, 60).convert(mode)
    if mode == "RGBA":
        image.putalpha(255)
    return image


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def work(tmp_path):
    (tmp_path / "base.png").write_bytes(encoded(noisy((1500, 1100))))
    (tmp_path / "opaque.png").write_bytes(encoded(noisy((1500, 1100), "RGBA")))
    (tmp_path / "small.png").write_bytes(encoded(noisy((300, 200))))
    (tmp_path / "logo.png").write_bytes(encoded(Image.new("RGBA", (200, 100), (200, 30, 30, 180))))
    return tmp_path


def expected_compose(base_path, logo_path, scale=0.2, padding=20):
    """compose_images' result computed here with Pillow alone, as the pack did before the encoder change."""
    base = Image.open(base_path)
    base = base.convert("RGBA" if "A" in base.getbands() else "RGB")
    logo = Image.open(logo_path).convert("RGBA")
    width = round(base.width * scale)
    layer = logo.resize((width, round(logo.height * width / logo.width)), Image.Resampling.LANCZOS)
    at = (base.width - layer.width - padding, base.height - layer.height - padding)
    region = Image.alpha_composite(
        base.convert("RGBA").crop((*at, at[0] + layer.width, at[1] + layer.height)), layer
    )
    base.paste(region if base.mode == "RGBA" else region.convert("RGB"), at)
    return base


@pytest.mark.parametrize("base", ["base.png", "opaque.png"])
async def test_compose_output_has_the_same_pixels_and_its_preview_is_made_from_memory(
    sandbox, registry, work, monkeypatch, base
):
    from fal_mcp import delivery, media

    decoded = Counter()
    real_open = media.open_image

    def counting_open(data, *args, **kwargs):
        image = real_open(data, *args, **kwargs)
        decoded[image.size] += 1
        return image

    real_make_preview = delivery.make_preview
    monkeypatch.setattr(media, "open_image", counting_open)
    monkeypatch.setattr(delivery, "open_image", counting_open)
    monkeypatch.setattr(
        delivery, "make_preview", lambda data: (_ for _ in ()).throw(AssertionError("decoded our output"))
    )
    async with tool_table_for(sandbox, registry, FAL_MCP_ALLOWED_DIRS=str(work)) as table:
        result = await table.call(
            "compose_images", {"base_image_url": base, "overlay_image_url": "logo.png", "scale": 0.2}
        )
    assert not result.is_error, result.content[0].text
    url = result.structured_content["files"][0]["url"]
    output = Image.open(io.BytesIO(stored_file(sandbox, url)))
    want = expected_compose(work / base, work / "logo.png")
    assert output.size == want.size and output.format == "PNG"
    assert output.convert("RGBA").tobytes() == want.convert("RGBA").tobytes()  # pixel for pixel
    # an all-opaque alpha channel is not encoded: a quarter less to filter and compress, the same pixels
    assert output.mode == "RGB"
    # the result was never downloaded nor decoded here; the preview came from the image in memory
    assert not [r for r in sandbox.state.requests if r["route"] not in ("token", "upload")]
    assert decoded == Counter({(1500, 1100): 1, (200, 100): 1})  # the two inputs only
    (image,) = [c for c in result.content if c.type == "image"]
    preview = Image.open(io.BytesIO(base64.b64decode(image.data)))
    thumbnail = want.convert("RGB")
    thumbnail.thumbnail((1024, 1024))
    assert (preview.format, preview.size) == ("JPEG", thumbnail.size)
    # the same preview as the core made by decoding the PNG: the same scaling of the same pixels
    assert base64.b64decode(image.data) == real_make_preview(stored_file(sandbox, url))[0]


async def test_a_small_result_is_its_own_preview_with_no_download(sandbox, registry, work):
    async with tool_table_for(sandbox, registry, FAL_MCP_ALLOWED_DIRS=str(work)) as table:
        result = await table.call(
            "compose_images", {"base_image_url": "small.png", "overlay_image_url": "logo.png"}
        )
    assert not result.is_error, result.content[0].text
    url = result.structured_content["files"][0]["url"]
    (image,) = [c for c in result.content if c.type == "image"]
    assert image.mime_type == "image/png"
    assert base64.b64decode(image.data) == stored_file(sandbox, url)  # the file itself, as before
    assert not [r for r in sandbox.state.requests if r["route"] not in ("token", "upload")]


def test_preview_from_memory_equals_the_preview_from_the_decoded_file():
    from fal_mcp.delivery import make_preview, preview_of

    for image in (
        noisy((1500, 1100)),
        noisy((700, 2600), "RGBA"),
        Image.new("RGBA", (3000, 1000), (1, 2, 3, 4)),
    ):
        data = encoded(image)
        mime = "image/png"
        assert preview_of(image, data, mime) == make_preview(data)
    small = noisy((640, 480))
    data = encoded(small, "JPEG")
    assert preview_of(small, data, "image/jpeg") == (data, "image/jpeg")  # passed through, as before


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_encoder_settings_per_output(output_format):
    from fal_mcp_image._common import encode

    transparent = Image.new("RGBA", (64, 48), (10, 200, 30, 100))
    opaque = noisy((64, 48), "RGBA")
    for image in (transparent, opaque):
        decoded = Image.open(io.BytesIO(encode(image, output_format)))
        assert decoded.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[output_format]
        if output_format == "png":  # lossless: the same pixels; transparency kept where there is some
            assert decoded.convert("RGBA").tobytes() == image.tobytes()
            assert decoded.mode == ("RGBA" if image is transparent else "RGB")
        if output_format == "jpeg":
            assert decoded.mode == "RGB"
