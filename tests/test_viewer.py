"""The media viewer (viewer.py) in a real browser: Debian's Chromium, driven by Playwright, loads a small
MCP Apps host page (tests/apps/host.html, ext-apps' AppBridge) that embeds the viewer in a sandboxed
iframe under a strict CSP and hands every request the viewer makes to this test, which forwards it to
the server (an SDK client on the real server, the sandbox behind it). Screenshots of each view go to
test-artifacts/viewer/."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import anyio
import pytest

from .conftest import tool_table_for

pytestmark = pytest.mark.anyio
HOST_PAGE = Path(__file__).parent / "apps" / "host.html"
SHOTS = Path(__file__).parent.parent / "test-artifacts" / "viewer"
WAIT_MS = 60_000  # a hang guard for waits on the page's state, never a timing assertion
IMAGE, MASK, VIDEO = "<image>", "<mask>", "<video>"
# One call of every generation tool (a name with a suffix: the same tool, another model).
CALLS = {
    "generate_image": {"prompt": "a red fox in the snow", "num_images": 2, "image_size": "landscape_4_3"},
    "generate_image_structured": {"scene": "a fox in the snow"},
    "generate_image_from_image": {"image_url": IMAGE, "prompt": "in winter"},
    "edit_image": {"image_url": IMAGE, "instruction": "make it night"},
    "inpaint_image": {"image_url": IMAGE, "mask_url": MASK, "prompt": "a boat"},
    "remove_background": {"image_url": IMAGE},
    "upscale_image": {"image_url": IMAGE, "model": "aura_sr"},
    "resize_image": {"image_url": IMAGE, "target_format": "instagram_post", "mode": "pad"},
    "compose_images": {"base_image_url": IMAGE, "overlay_image_url": MASK},
    "generate_video": {"prompt": "waves at sunset", "model": "kling.t2v", "duration": 5},
    "generate_video_from_image": {"image_url": IMAGE, "prompt": "waves"},
    "generate_video_from_video": {"video_url": VIDEO, "prompt": "as a cartoon"},
    "generate_music": {"prompt": "calm piano", "duration_seconds": 8},
}


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
        print(f"SKIPPED: {message}")
        pytest.skip(message)
    return path


def inputs() -> dict[str, str]:
    from PIL import Image

    from fal_mcp_sandbox import media

    def data_uri(data: bytes, mime: str) -> str:
        return f"data:{mime};base64," + base64.b64encode(data).decode()

    def png(colour: str, mode: str = "RGB") -> bytes:
        buffer = io.BytesIO()
        Image.new(mode, (320, 240), colour).save(buffer, "PNG")
        return buffer.getvalue()

    frames = media.video_frames(64, 48, 16, "input clip", 1)
    return {
        IMAGE: data_uri(png("teal"), "image/png"),
        MASK: data_uri(png("white"), "image/png"),
        VIDEO: data_uri(media.mp4(frames, 64, 48, 8), "video/mp4"),
    }


class Host:
    """The browser, the host page, and what the viewer asked of the host."""

    def __init__(self, page, client) -> None:
        self.page, self.client = page, client
        self.calls: list[dict] = []  # tools/call the viewer made
        self.downloads: list[dict] = []
        self.errors: list[str] = []  # console errors and uncaught exceptions, the viewer's included
        self.requests: list[str] = []  # every network request of the page and its frames

    async def start(self) -> None:
        page = self.page
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        # blob: and data: URLs are bytes already in the page (the media read through the host)
        page.on(
            "request",
            lambda request: (
                not request.url.startswith(("blob:", "data:")) and self.requests.append(request.url)
            ),
        )
        await page.expose_function("hostCallTool", self.call_tool)
        await page.expose_function("hostReadResource", self.read_resource)
        await page.expose_function("hostDownloadFile", self.download_file)
        await page.expose_function("hostOpenLink", lambda params: {})
        await page.set_content(HOST_PAGE.read_text())

    async def call_tool(self, params: dict) -> dict:
        self.calls.append(params)
        result = await self.client.call_tool(params["name"], params.get("arguments") or {})
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)

    async def read_resource(self, params: dict) -> dict:
        result = await self.client.read_resource(params["uri"])
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)

    async def download_file(self, params: dict) -> dict:
        self.downloads.append(params)
        return {}

    async def open(self, tool: str, arguments: dict, theme: str = "light"):
        """The viewer for a call of `tool`, as an Apps host shows it: mounted with the call's arguments,
        then given its result. Returns (the viewer's frame, the result)."""
        html = (await self.client.read_resource("ui://fal-mcp/viewer.html")).contents[0].text
        await self.page.evaluate(
            "([html, options]) => window.host.mount(html, options)",
            [html, {"toolName": tool, "toolInput": arguments, "theme": theme}],
        )
        result = await self.client.call_tool(tool, arguments)
        assert not result.is_error, result.content[0].text
        await self.page.evaluate(
            "(result) => window.host.sendResult(result)",
            result.model_dump(mode="json", by_alias=True, exclude_none=True),
        )
        frame = await (await self.page.query_selector("#app")).content_frame()
        return frame, result

    async def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"{name}.png"))


@pytest.fixture
async def host(sandbox, registry, chromium):
    from mcp import Client
    from playwright.async_api import async_playwright

    from fal_mcp.server import build_server

    sandbox.state.set_config(job_seconds=0.01)
    async with (
        tool_table_for(sandbox, registry, FAL_MCP_HANDOFF_AFTER=30) as table,
        Client(build_server(table), mode="legacy") as client,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=["--autoplay-policy=no-user-gesture-required"]
        )
        try:
            page = await browser.new_page(viewport={"width": 920, "height": 920})
            found = Host(page, client)
            found.table = table
            await found.start()
            yield found
        finally:
            await browser.close()
    # The viewer talks to the host only: no request left the page, and nothing went wrong in it.
    assert found.requests == [], found.requests
    assert found.errors == [], found.errors


async def wait(frame, script: str, argument=None):
    return await frame.wait_for_function(script, arg=argument, timeout=WAIT_MS)


async def images_shown(frame, files: list[dict]) -> None:
    """Each image decoded at the size the result gives."""
    await wait(frame, "(n) => document.querySelectorAll('img.thumb').length === n", len(files))
    await wait(
        frame, "() => [...document.querySelectorAll('img.thumb')].every((i) => i.complete && i.naturalWidth)"
    )
    sizes = await frame.evaluate(
        "() => [...document.querySelectorAll('img.thumb')].map((i) => [i.naturalWidth, i.naturalHeight])"
    )
    assert sizes == [[f["width"], f["height"]] for f in files]


async def video_plays(frame, seconds: float | None) -> None:
    """The video element loads (of `seconds`, if given) and plays: time and decoded frames advance."""
    await wait(frame, "() => document.getElementById('video').readyState >= 1")
    duration = await frame.evaluate("() => document.getElementById('video').duration")
    assert duration > 0.5 and (seconds is None or duration == pytest.approx(seconds, abs=0.05))
    await frame.evaluate(
        "() => { const v = document.getElementById('video'); v.muted = true; return v.play(); }"
    )
    await wait(
        frame,
        "() => { const v = document.getElementById('video');"
        " return v.currentTime > 0.3 && v.getVideoPlaybackQuality().totalVideoFrames > 3; }",
    )


async def audio_plays(frame) -> None:
    await wait(frame, "() => document.getElementById('audio').readyState >= 1")
    await frame.evaluate("() => document.getElementById('audio').play()")
    await wait(frame, "() => document.getElementById('audio').currentTime > 0.3")
    drawn = await frame.evaluate(
        "() => { const c = document.getElementById('waveform');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"
    )
    assert drawn > 500  # the waveform's bars


@pytest.mark.parametrize("tool", sorted(CALLS))
async def test_every_generation_result_opens_and_plays_in_the_viewer(host, tool):
    files = inputs()
    arguments = {key: files.get(value, value) for key, value in CALLS[tool].items()}
    frame, result = await host.open(tool, arguments)
    output = result.structured_content
    await wait(frame, "() => !document.getElementById('actions').hidden")
    kinds = {file["content_type"].split("/")[0] for file in output["files"]}
    if "image" in kinds:
        await images_shown(frame, [f for f in output["files"] if f["content_type"].startswith("image/")])
    if "video" in kinds:
        await video_plays(frame, 5 if tool == "generate_video" else None)
    if "audio" in kinds:
        await audio_plays(frame)
    shown = await frame.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#meta dd')].map((d) => [d.dataset.field, d.textContent]))"
    )
    assert shown["endpoint"] == output["endpoint"] and shown["request"] == output["request_id"]
    if output.get("cost"):
        assert f"{output['cost']['cost']:.4f} USD" in shown["cost"]
    await host.shot(tool)


async def test_images_zoom_compare_and_download(host):
    frame, result = await host.open("generate_image", CALLS["generate_image"])
    output = result.structured_content
    await images_shown(frame, output["files"])
    seed = await frame.evaluate("() => document.querySelector('[data-field=seed]').textContent")
    assert seed == str(output["seed"])
    # zoom: the image at its own size, then at twice it
    await frame.click("img.thumb[data-index='1']")
    await wait(
        frame,
        "() => !document.getElementById('zoom').hidden && document.getElementById('zoom-image').complete",
    )
    width = output["files"][1]["width"]
    zoomed = "() => document.getElementById('zoom-image').getBoundingClientRect().width"
    assert await frame.evaluate(zoomed) == width
    await frame.click("#zoom-in")
    assert await frame.evaluate(zoomed) == 2 * width
    await host.shot("zoom")
    await frame.click("#zoom-close")
    # compare: the two images side by side
    await frame.click("#compare-toggle")
    await wait(frame, "() => !document.getElementById('compare').hidden")
    boxes = await frame.evaluate(
        "() => [...document.querySelectorAll('#compare img')].map((i) => i.getBoundingClientRect().toJSON())"
    )
    assert len(boxes) == 2 and boxes[0]["top"] == boxes[1]["top"] and boxes[0]["right"] <= boxes[1]["left"]
    await host.shot("compare")
    # download: a link to the selected image, for the host to fetch
    await frame.click("[data-action=download]")
    with anyio.fail_after(60):  # a hang guard
        while not host.downloads:
            await anyio.sleep(0.02)
    [link] = host.downloads[0]["contents"]
    assert link["type"] == "resource_link" and link["uri"] == output["files"][0]["url"]


@pytest.mark.parametrize("action", ["variations", "upscale", "remove-background", "to-video"])
async def test_each_action_calls_our_tool_and_shows_its_result(host, action):
    arguments = CALLS["generate_image"]
    frame, result = await host.open("generate_image", arguments)
    output = result.structured_content
    await images_shown(frame, output["files"])
    image = output["files"][0]["url"]
    expected = {
        "upscale": ("upscale_image", {"image_url": image}),
        "remove-background": ("remove_background", {"image_url": image}),
        "to-video": ("generate_video_from_image", {"image_url": image, "prompt": output["prompt"]}),
    }
    await frame.click(f"[data-action={action}]")
    with anyio.fail_after(60):  # a hang guard
        while not host.calls:
            await anyio.sleep(0.02)
    [call] = host.calls
    if action == "variations":  # the same call with another seed
        assert call["name"] == "generate_image" and call["arguments"]["seed"] != output["seed"]
        assert {k: v for k, v in call["arguments"].items() if k != "seed"} == arguments
    else:
        assert (call["name"], call["arguments"]) == expected[action]
    # the action's result replaces the first one
    changed = "(id) => document.querySelector('[data-field=request]')?.textContent !== id"
    await wait(frame, changed, output["request_id"])
    if action == "to-video":
        await video_plays(frame, None)
    else:
        await wait(frame, "() => document.querySelectorAll('img.thumb').length > 0")
    assert await frame.evaluate("() => document.getElementById('status').className") != "error"
    await host.shot(f"action-{action}")


async def test_the_theme_follows_the_host(host):
    frame, _ = await host.open("generate_music", CALLS["generate_music"], theme="dark")
    await wait(frame, "() => document.documentElement.dataset.theme === 'dark'")
    dark = await frame.evaluate("() => getComputedStyle(document.body).backgroundColor")
    await host.shot("audio-dark")
    await host.page.evaluate("() => window.host.setTheme('light')")
    await wait(frame, "() => document.documentElement.dataset.theme === 'light'")
    light = await frame.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert dark != light and light == "rgb(255, 255, 255)"


async def test_a_long_job_shows_its_progress_then_its_media(sandbox, registry, chromium):
    """A call handed off before its job finished (FAL_MCP_HANDOFF_AFTER=0): the viewer follows the job
    with check_job, showing where it is, and shows the video once the sandbox lets the job finish."""
    from mcp import Client
    from playwright.async_api import async_playwright

    from fal_mcp.server import build_server

    sandbox.state.add_fault(outcome="hold")
    async with (
        tool_table_for(sandbox, registry, FAL_MCP_HANDOFF_AFTER=0) as table,
        Client(build_server(table), mode="legacy") as client,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(executable_path=chromium)
        try:
            host = Host(await browser.new_page(viewport={"width": 920, "height": 920}), client)
            await host.start()
            frame, result = await host.open("generate_video", CALLS["generate_video"])
            assert result.structured_content["job"]["job_id"].startswith("job_")
            await wait(frame, "() => !document.getElementById('job').hidden")
            await wait(frame, "() => /queued|running/.test(document.getElementById('job-text').textContent)")
            await host.shot("job-running")
            assert [c["name"] for c in host.calls][:1] == ["check_job"]
            sandbox.state.release()
            await video_plays(frame, 5)
            assert await frame.evaluate("() => document.getElementById('job').hidden")
            await host.shot("job-done")
        finally:
            await browser.close()
    assert host.errors == [] and host.requests == []


async def test_generation_tools_point_to_the_self_contained_viewer(tool_table):
    """Listed with the viewer's ui:// resource (generation tools only), served as an MCP Apps view with
    an empty CSP list (the host's own origin only), and loading nothing itself."""
    import re

    from mcp import Client

    from fal_mcp.outputs import GenerationOutput
    from fal_mcp.server import build_server

    async with Client(build_server(tool_table), mode="legacy") as client:
        tools = (await client.list_tools()).tools
        resources = (await client.list_resources()).resources
        read = (await client.read_resource("ui://fal-mcp/viewer.html")).contents[0]
    generation = {
        name for name, tool in tool_table.registry.tools.items() if tool.output_model is GenerationOutput
    }
    pointing = {tool.name for tool in tools if (tool.meta or {}).get("ui", {}).get("resourceUri")}
    assert pointing == generation and len(generation) == 13
    assert {tool.meta["ui"]["resourceUri"] for tool in tools if tool.name in pointing} == {read.uri}
    [listed] = [r for r in resources if str(r.uri) == "ui://fal-mcp/viewer.html"]
    assert listed.mime_type == read.mime_type == "text/html;profile=mcp-app"
    assert read.meta == {"ui": {"csp": {}, "prefersBorder": False}}
    html = read.text
    assert re.findall(r"<(?:script|link|img|iframe)[^>]*\b(?:src|href)=", html) == []
    assert "@import" not in html and "fonts.googleapis" not in html
