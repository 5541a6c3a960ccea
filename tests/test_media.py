"""Media in (local paths, data: URIs, for every MediaUrl field) and out (previews, saved files)."""

from __future__ import annotations

import base64
import io
import os

import httpx
import pytest
from PIL import Image

from fal_mcp import MediaUrl, Tool, ToolInput, ToolResult
from fal_mcp.gateway import FalGateway
from fal_mcp.media import MediaError, check_url
from fal_mcp.plugins import Contributions, Pack, Registry
from fal_mcp.server import ToolTable

from .conftest import sandbox_settings

pytestmark = pytest.mark.anyio


class MediaArgs(ToolInput):
    image_url: MediaUrl
    mask_url: MediaUrl | None = None
    extra_urls: list[MediaUrl] = []


async def echo_urls(args: MediaArgs, ctx) -> ToolResult:
    return ToolResult(
        "ok", {"image_url": args.image_url, "mask_url": args.mask_url, "extra_urls": args.extra_urls}
    )


@pytest.fixture
async def media_table(sandbox, tmp_path):
    registry = Registry()
    registry.add(
        Pack("t", "fal-mcp-t", "1"),
        Contributions(
            tools=[
                Tool(
                    "echo_urls", "Echo URLs", "Echo resolved URLs.", MediaArgs, echo_urls, category="utility"
                )
            ]
        ),
    )
    (tmp_path / "allowed").mkdir()
    settings = sandbox_settings(sandbox, FAL_MCP_ALLOWED_DIRS=str(tmp_path / "allowed"))
    async with FalGateway(settings) as gateway:
        yield ToolTable(registry, settings, gateway)


def png_bytes(size=(40, 30), color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


async def download(url: str) -> bytes:
    async with httpx.AsyncClient() as http:
        return (await http.get(url)).content


async def test_local_paths_and_data_uris_become_fal_urls(media_table, sandbox, tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "in.png").write_bytes(png_bytes())
    (allowed / "sub").mkdir()
    (allowed / "sub" / "mask.png").write_bytes(png_bytes(color=(255, 255, 255)))
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes(color=(1, 2, 3))).decode()
    result = await media_table.call(
        "echo_urls",
        {
            "image_url": str(allowed / "in.png"),
            "mask_url": "sub/mask.png",
            "extra_urls": [data_uri, "https://example.com/a.png"],
        },
    )
    assert not result.is_error, result.content[0].text
    out = result.structured_content
    assert out["image_url"].startswith(sandbox.base_url + "/cdn/")
    assert await download(out["image_url"]) == png_bytes()
    assert await download(out["mask_url"]) == png_bytes(color=(255, 255, 255))
    assert await download(out["extra_urls"][0]) == png_bytes(color=(1, 2, 3))
    assert out["extra_urls"][1] == "https://example.com/a.png"  # remote URLs pass through
    uploads = len([r for r in sandbox.state.requests if r["route"] == "upload"])
    again = await media_table.call("echo_urls", {"image_url": str(allowed / "in.png")})
    assert again.structured_content["image_url"] == out["image_url"]
    assert len([r for r in sandbox.state.requests if r["route"] == "upload"]) == uploads  # cached by content


@pytest.mark.parametrize(
    "case",
    [
        "outside",
        "dotdot",
        "symlink",
        "hidden_dir",
        "hidden_file",
        "nul",
        "file_url",
        "missing",
        "directory",
        "bad_data",
    ],
)
async def test_refused_local_paths_say_why(media_table, sandbox, tmp_path, case):
    allowed = tmp_path / "allowed"
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (allowed / ".ssh").mkdir()
    (allowed / ".ssh" / "key.png").write_bytes(png_bytes())
    (allowed / ".env").write_bytes(b"KEY=1")
    os.symlink(secret, allowed / "link.png")
    value, expected = {
        "outside": (str(secret), "outside the allowed directories"),
        "dotdot": (str(allowed / ".." / "secret.png"), "outside the allowed directories"),
        "symlink": (str(allowed / "link.png"), "outside the allowed directories"),
        "hidden_dir": (str(allowed / ".ssh" / "key.png"), "hidden"),
        "hidden_file": (".env", "hidden"),
        "nul": ("in\x00.png", "NUL"),
        "file_url": ("file:///etc/passwd", "only http(s) URLs"),
        "missing": ("nothing.png", "not a file"),
        "directory": (str(allowed), "not a file"),
        "bad_data": ("data:image/png;base64,@@@", "malformed"),
    }[case]
    result = await media_table.call(
        "echo_urls", {"image_url": "https://example.com/x.png", "extra_urls": [value]}
    )
    assert result.is_error
    text = result.content[0].text
    assert "extra_urls[0]:" in text and expected in text, text
    if case == "outside":
        assert str(allowed) in text  # says which directories are allowed
    assert not any(r["route"] == "upload" for r in sandbox.state.requests)


async def test_size_limit_on_local_files(sandbox, tmp_path):
    registry = Registry()
    registry.add(
        Pack("t", "fal-mcp-t", "1"),
        Contributions(
            tools=[Tool("echo_urls", "Echo URLs", "Echo.", MediaArgs, echo_urls, category="utility")]
        ),
    )
    (tmp_path / "big.bin").write_bytes(b"x" * 3000)
    settings = sandbox_settings(sandbox, FAL_MCP_ALLOWED_DIRS=str(tmp_path), FAL_MCP_MAX_UPLOAD_MB="0.001")
    async with FalGateway(settings) as gateway:
        result = await ToolTable(registry, settings, gateway).call("echo_urls", {"image_url": "big.bin"})
    assert result.is_error and "more than the limit" in result.content[0].text


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/x.png",
        "http://169.254.169.254/latest",
        "http://[::1]:80/x",
        "http://2130706433/x",
        "http://0x7f000001/x",
        "ftp://example.com/x",
        "gopher://example.com/x",
        "file:///etc/passwd",
        "http://localhost:1/x",
    ],
)
async def test_fetch_refuses_private_addresses_and_other_schemes(url):
    with pytest.raises(MediaError):
        await check_url(url, trusted_urls=["http://127.0.0.1:9999/queue"])


async def test_fetch_trusts_only_the_configured_fal_hosts(sandbox):
    await check_url(sandbox.base_url + "/cdn/files/x", trusted_urls=list(sandbox.env().values())[:5])
    with pytest.raises(MediaError, match="private, loopback"):
        await check_url(sandbox.base_url + "/cdn/files/x", trusted_urls=[])


def test_preview_is_small_and_bounded():
    from fal_mcp.delivery import make_preview

    noisy = Image.effect_noise((3000, 2000), 90).convert("RGB")
    buffer = io.BytesIO()
    noisy.save(buffer, "PNG")
    data, mime = make_preview(buffer.getvalue())
    preview = Image.open(io.BytesIO(data))
    assert max(preview.size) <= 1024 and len(data) <= 1_000_000 and mime == "image/jpeg"
    transparent = io.BytesIO()
    Image.new("RGBA", (2048, 512), (0, 0, 0, 0)).save(transparent, "PNG")
    data, mime = make_preview(transparent.getvalue())
    assert mime == "image/png" and Image.open(io.BytesIO(data)).mode == "RGBA"


async def test_generation_results_carry_an_inline_preview(tool_table):
    result = await tool_table.call("generate_image", {"prompt": "preview me", "image_size": "square"})
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1
    preview = Image.open(io.BytesIO(base64.b64decode(images[0].data)))
    assert preview.size == (1024, 1024) and images[0].mime_type == "image/jpeg"
    links = [c for c in result.content if c.type == "resource_link"]
    assert links[0].uri == result.structured_content["files"][0]["url"] and links[0].mime_type == "image/jpeg"


async def test_previews_can_be_turned_off(sandbox, registry):
    settings = sandbox_settings(sandbox, FAL_MCP_INLINE_PREVIEWS="0")
    async with FalGateway(settings) as gateway:
        result = await ToolTable(registry, settings, gateway).call("generate_image", {"prompt": "x"})
    assert not result.is_error and not [c for c in result.content if c.type == "image"]


async def test_outputs_are_saved_once_without_overwriting(sandbox, registry, tmp_path):
    out = tmp_path / "out"
    settings = sandbox_settings(sandbox, FAL_MCP_OUTPUT_DIR=str(out))
    async with FalGateway(settings) as gateway:
        table = ToolTable(registry, settings, gateway)
        result = await table.call("generate_image", {"prompt": "keep", "num_images": 2, "seed": 5})
        files = result.structured_content["files"]
        request_id = result.structured_content["request_id"]
        saved = sorted(out.iterdir())
        assert [p.name for p in saved] == [
            f"generate_image_{request_id}_0.jpg",
            f"generate_image_{request_id}_1.jpg",
        ]
        for file in files:
            assert file["local_path"] and Image.open(file["local_path"]).size == (1024, 576)
        assert f"Saved: {files[0]['local_path']}" in result.content[0].text
        local_links = [
            c for c in result.content if c.type == "resource_link" and str(c.uri).startswith("file:")
        ]
        assert len(local_links) == 2
        # an output is written once: saving it again keeps the file there, never a second copy
        from fal_mcp.delivery import save

        taken = out / f"generate_image_{request_id}_0.jpg"
        taken.write_bytes(b"kept")
        again = await save(files[0]["url"], taken, trusted_urls=list(settings.urls.values()))
        assert again == taken and taken.read_bytes() == b"kept" and len(list(out.iterdir())) == 2


async def test_client_roots_decide_the_allowed_directories_over_stdio(tmp_path):
    import sys

    from mcp import Client, StdioServerParameters, types

    from .conftest import server_env

    root = tmp_path / "project"
    root.mkdir()
    (root / "photo.png").write_bytes(png_bytes())

    async def list_roots(context):
        return types.ListRootsResult(roots=[types.Root(uri=root.as_uri(), name="project")])

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "fal_mcp.cli", "serve", "--sandbox"],
        env=server_env(),
        cwd=str(tmp_path),
    )
    async with Client(params, mode="legacy", list_roots_callback=list_roots) as client:
        inside = await client.call_tool("upload_file", {"file_path": str(root / "photo.png")})
        assert not inside.is_error, inside.content[0].text
        assert await download(inside.structured_content["url"]) == png_bytes()
        (tmp_path / "elsewhere.png").write_bytes(png_bytes())
        outside = await client.call_tool("upload_file", {"file_path": str(tmp_path / "elsewhere.png")})
        assert outside.is_error and str(root) in outside.content[0].text


def test_preview_of_something_that_is_not_an_image_is_refused_cleanly():
    from fal_mcp.delivery import make_preview
    from fal_mcp.media import MediaError

    with pytest.raises(MediaError):
        make_preview(b"not an image at all")
    small = png_bytes((300, 200))
    assert make_preview(small) == (small, "image/png")  # already fits: passed through untouched


async def test_a_download_whose_kept_alive_connection_was_closed_is_sent_again_once():
    """The server closed an idle kept-alive connection just as the download reused it (no answer at all):
    the GET goes again, once, on a new connection; a second such failure is reported."""
    from fal_mcp.media import download

    sent = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        if len(sent) in (1, 3, 4):
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return httpx.Response(200, content=b"image bytes", headers={"content-type": "image/png"})

    trusted = ["http://127.0.0.1:9/cdn"]
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        chunks: list[bytes] = []

        async def keep(chunk: bytes) -> None:
            chunks.append(chunk)

        assert (
            await download("http://127.0.0.1:9/cdn/files/a.png", keep, trusted_urls=trusted, http=http)
            == "image/png"
        )
        assert b"".join(chunks) == b"image bytes" and len(sent) == 2
        with pytest.raises(MediaError, match="RemoteProtocolError"):
            await download("http://127.0.0.1:9/cdn/files/b.png", keep, trusted_urls=trusted, http=http)
    assert len(sent) == 4


def drawn_jpeg(size: tuple[int, int]) -> bytes:
    """A deterministic picture (gradients and shapes), as a JPEG."""
    from PIL import ImageDraw

    width, height = size
    red = Image.linear_gradient("L").resize(size)
    green = Image.radial_gradient("L").resize(size)
    blue = Image.linear_gradient("L").rotate(90).resize(size)
    image = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(image)
    for k in range(6):
        box = (width * k / 7, height * k / 9, width * (k + 1) / 7 + 40, height * (k + 2) / 9)
        draw.ellipse(box, fill=(40 * k, 255 - 40 * k, 128), outline=(255, 255, 255), width=5)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_jpeg_preview_decodes_the_file_only_as_large_as_the_preview(monkeypatch):
    """A JPEG is decoded in draft mode (scaled by its decoder) to no smaller than the preview: one passed
    through at 1/8 (its pixels are not shown; every byte is still checked), a larger one at the least
    scale that still covers the preview. The preview has the size and, near enough, the look of the full
    image scaled down."""
    import math

    from PIL import ImageChops, ImageStat

    from fal_mcp import delivery

    decoded = []
    real_open = delivery.open_image

    def recording(data, *args, **kwargs):
        image = real_open(data, *args, **kwargs)
        decoded.append(image.size)
        return image

    monkeypatch.setattr(delivery, "open_image", recording)
    for size, draft in (
        ((4096, 2304), (1024, 576)),
        ((3001, 1999), (1501, 1000)),
        ((1500, 1500), (1500, 1500)),
    ):
        data = drawn_jpeg(size)
        decoded.clear()
        preview, mime = delivery.make_preview(data)
        assert decoded == [draft] and mime == "image/jpeg"
        full = Image.open(io.BytesIO(data))
        full.thumbnail((1024, 1024), reducing_gap=None)  # the full image scaled down
        shown = Image.open(io.BytesIO(preview))
        assert shown.size == full.size
        difference = ImageStat.Stat(ImageChops.difference(shown.convert("RGB"), full)).rms
        assert math.sqrt(sum(v * v for v in difference) / 3) < 6
    small = drawn_jpeg((1024, 576))
    decoded.clear()
    assert delivery.make_preview(small) == (small, "image/jpeg")  # passed through untouched
    assert decoded == [(128, 72)]
    with pytest.raises(MediaError, match="truncated"):
        delivery.make_preview(small[: len(small) * 2 // 3])  # checked all the same
